"""seam-mux/1 (`tunnel outbound --mux`, docs/MUX.md): many client
connections as streams of one mTLS session between the two sidecars.

What must hold, as for the 1:1 tunnel: every byte in order per connection,
half-close both ways (64 MiB, 200 concurrent connections, half-close: the
[mux] cases of test_integrity.py), backpressure per connection (a stalled
app stalls its own stream, not its neighbours), failures reach the client;
and what mux
adds: one handshake for many connections, a session per 128 streams, a peer
without seam-mux served 1:1 (with a log line saying so), a bad frame ending
only that session.
"""
import hashlib
import os
import select
import signal
import socket
import struct
import threading
import time

from seamtest import free_port, wait_for
from tunnelkit import (LOOP, SERVER_ID, Echo, addr, client_ctx, closed_by_peer,
                       echo_roundtrip, events, finish_push, push_until_stalled, recv_exact,
                       run_threads, start_s_server, start_tunnel, tls_connect)

import pytest

MUX = ["--mux"]


@pytest.fixture
def chain(pki, procs):
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki)
    out_t = start_tunnel(procs, "outbound", addr(LOOP, in_t.port), pki, peer_id=SERVER_ID,
                         extra=MUX, workers=1)
    return echo, in_t, out_t


def _app(handler, backlog=64, timeout=60):
    """A loopback listener whose accept loop (a daemon thread) hands the i-th
    connection to handler(c, i) in a thread of its own; close it to end."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((LOOP, 0))
    ls.listen(backlog)
    ls.settimeout(timeout)

    def accept_loop():
        i = 0
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            threading.Thread(target=handler, args=(c, i), daemon=True).start()
            i += 1

    threading.Thread(target=accept_loop, daemon=True).start()
    return ls


def _drain(c, st):
    """Reads c to EOF, counting and hashing into st ("n", "hash")."""
    while True:
        d = c.recv(1 << 18)
        if not d:
            return
        st["n"] += len(d)
        st["hash"].update(d)


def _draining_app():
    """An _app that reads each connection to EOF, counting and hashing all of
    it into one st ("n", "hash"): (the listener, st)."""
    st = {"n": 0, "hash": hashlib.sha256()}

    def sink(c, _):
        with c:
            _drain(c, st)

    return _app(sink), st


def _sessions(t, kind="mux.session_open"):
    return events(t.proc, kind)


def test_many_connections_one_handshake(chain):
    """50 sequential connections (each a round trip) and 100 at once: all
    carried by one session, one handshake, each logged as a stream."""
    echo, in_t, out_t = chain
    for i in range(50):
        s = out_t.connect()
        data = b"%d:" % i + os.urandom(1000)
        assert echo_roundtrip(s, data) == data
        s.close()
    socks = [out_t.connect() for _ in range(100)]
    try:
        ok = run_threads([lambda s=s, i=i: echo_roundtrip(s, b"x%d" % i * 50) == b"x%d" % i * 50
                          for i, s in enumerate(socks)], timeout=60)
        assert all(ok)
        wait_for(lambda: echo.stats()["active"] == 100, 10, what="100 streams at the app at once")
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: echo.stats()["active"] == 0, 15, what="all closed at the app")
    assert echo.stats()["accepted"] == 150
    assert len(_sessions(out_t)) == 1, out_t.log()
    assert len(_sessions(in_t)) == 1, in_t.log()
    hs = [e for e in events(in_t.proc, "tls.handshake_failed")]
    assert not hs
    ev = wait_for(lambda: len(events(out_t.proc, "conn.close")) == 150 and
                  events(out_t.proc, "conn.close"), 15, what="150 conn.close on the outbound")
    assert all(e["tls"] == "mux" for e in ev), ev[0]["line"]
    assert len({e["stream"] for e in ev}) == 150
    ev_in = wait_for(lambda: len(events(in_t.proc, "conn.close")) == 150 and
                     events(in_t.proc, "conn.close"), 15, what="150 conn.close on the inbound")
    assert all(e["peer_id"].endswith("/sa/client") for e in ev_in), ev_in[0]["line"]


def test_upstream_down_closes_only_that_stream(pki, procs):
    """The inbound's app refuses: the client is closed without a byte, the
    session stays up for the next connection (no new handshake)."""
    port = free_port()
    in_t = start_tunnel(procs, "inbound", addr(LOOP, port), pki)
    out_t = start_tunnel(procs, "outbound", addr(LOOP, in_t.port), pki, extra=MUX, workers=1)
    s = out_t.connect()
    s.sendall(b"anyone there?")
    closed, got = closed_by_peer(s, 5)
    s.close()
    assert closed and got == b""
    ev = wait_for(lambda: events(in_t.proc, "conn.upstream_failed"), 5, what="upstream_failed")
    assert "stream" in ev[0], ev[0]["line"]
    # Now the app is up: the same session carries the next connection.
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((LOOP, port))
    lsock.listen(4)
    try:
        s = out_t.connect()
        s.sendall(b"ping")
        lsock.settimeout(5)
        c, _ = lsock.accept()
        c.settimeout(5)
        assert c.recv(4) == b"ping"
        c.sendall(b"pong")
        assert s.recv(4) == b"pong"
        c.close()
        s.close()
    finally:
        lsock.close()
    assert len(_sessions(out_t)) == 1


def test_inbound_down_closes_waiting_clients(pki, procs):
    """No inbound at all: the session cannot connect, every waiting client is
    closed; a later client triggers a new attempt."""
    port = free_port()
    out_t = start_tunnel(procs, "outbound", addr(LOOP, port), pki, extra=MUX)
    socks = [out_t.connect() for _ in range(3)]
    for s in socks:
        closed, got = closed_by_peer(s, 5)
        s.close()
        assert closed and got == b""
    ev = wait_for(lambda: events(out_t.proc, "conn.upstream_failed"), 5, what="upstream_failed")
    assert ev


def test_stalled_stream_does_not_block_others(pki, procs):
    """One app connection stops reading while its client keeps sending: that
    client is stopped after a bounded amount (its stream's window, kernel
    buffers); a second connection on the same session keeps flowing; when
    the app reads again, every byte of the first arrives in order."""
    go = threading.Event()
    state = {"n": 0, "hash": hashlib.sha256()}

    def sink(c):
        go.wait(60)
        c.settimeout(30)
        _drain(c, state)
        c.close()

    def echo(c):
        c.settimeout(30)
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)
        c.close()

    # First connection: the stalled sink. Later ones: echo.
    lsock = _app(lambda c, i: sink(c) if i == 0 else echo(c), backlog=8, timeout=30)
    port = lsock.getsockname()[1]
    try:
        in_t = start_tunnel(procs, "inbound", addr(LOOP, port), pki)
        out_t = start_tunnel(procs, "outbound", addr(LOOP, in_t.port), pki, extra=MUX,
                             workers=1)
        s = out_t.connect()
        block = os.urandom(1 << 20)
        sent, sent_hash, pending = push_until_stalled(s, 256 << 20, lambda: block)
        assert sent < 64 << 20, f"{sent >> 20} MiB accepted while the app read nothing"
        # The neighbour on the same session is not blocked.
        s2 = out_t.connect()
        for i in range(20):
            data = os.urandom(32 * 1024)
            assert echo_roundtrip(s2, data, 10) == data
        s2.close()
        assert len(_sessions(out_t)) == 1
        go.set()
        sent = finish_push(s, sent, sent_hash, pending)
        wait_for(lambda: state["n"] == sent, 30, what="every stalled byte delivered")
        assert state["hash"].hexdigest() == sent_hash.hexdigest()
        s.close()
    finally:
        go.set()
        lsock.close()


def test_backed_up_session_streams_take_turns(pki, procs):
    """The inbound sidecar is stopped (SIGSTOP), so the session's socket
    backs up. One client (two if the first one's credit fits in the kernel)
    fills it; the others then send on the same session: each of them is read
    once and then waits (counted in seam_mux_stream_waits_total) instead of
    being read up to its stream's window (256 KiB each) into the session's
    queue, where it would sit in front of every other stream's bytes. After
    SIGCONT every byte of all 16 arrives, in order."""
    from test_admin import _http, _metric
    sinks = {}

    def sink(c, _):
        c.settimeout(60)
        tag = recv_exact(c, 2, 30)  # the client's number, sent first
        st = sinks[tag] = {"n": 0, "hash": hashlib.sha256(), "done": False}
        _drain(c, st)
        st["done"] = True
        c.close()

    lsock = _app(sink)
    a_out = free_port()
    in_t = start_tunnel(procs, "inbound", addr(LOOP, lsock.getsockname()[1]), pki)
    out_t = start_tunnel(procs, "outbound", addr(LOOP, in_t.port), pki, workers=1,
                         extra=MUX + ["--admin", f"{LOOP}:{a_out}"])

    def metric(name):
        st, text = _http(a_out, "GET", "/metrics")
        assert st == 200
        return _metric(text, name, direction="outbound")

    socks = [out_t.connect() for _ in range(16)]
    for i, s in enumerate(socks):
        s.sendall(b"%02d" % i)
    wait_for(lambda: len(sinks) == 16, 10, what="16 streams at the app")
    assert len(_sessions(out_t)) == 1
    block = os.urandom(1 << 20)
    pushes = [None] * 16
    in_t.proc.p.send_signal(signal.SIGSTOP)
    try:
        # Back the session up: one stream's credit (256 KiB) may fit in the
        # kernel's buffers of the session socket, two do not.
        for fill in (1, 2):
            pushes[fill - 1] = push_until_stalled(socks[fill - 1], 64 << 20, lambda: block,
                                                  stall=1.0)
            waits = metric("seam_mux_stream_waits_total")
            if waits >= 1:
                break
        assert waits >= 1, "no stream waited for the stopped session"
        read0 = metric("seam_received_bytes_total")
        for i in range(fill, 16):
            pushes[i] = push_until_stalled(socks[i], 64 << 20, lambda: block, stall=1.0)
        n = 16 - fill
        assert metric("seam_mux_stream_waits_total") >= waits + n
        more = metric("seam_received_bytes_total") - read0
        # One read each (a small buffer): at most n x 32 KiB; without turns it
        # would be n x 256 KiB of credit.
        assert more <= n * 32 * 1024, f"{more:.0f} bytes read into a backed-up session"
    finally:
        in_t.proc.p.send_signal(signal.SIGCONT)
    sent = [0] * 16
    for i, s in enumerate(socks):
        n, h, pending = pushes[i]
        sent[i] = finish_push(s, n, h, pending)
    for i in range(16):
        tag = b"%02d" % i
        wait_for(lambda: sinks[tag]["done"], 60, what=f"stream {i} delivered and closed")
        assert sinks[tag]["n"] == sent[i], (i, sinks[tag]["n"], sent[i])
        assert sinks[tag]["hash"].hexdigest() == pushes[i][1].hexdigest(), i
    for s in socks:
        s.close()
    lsock.close()
    assert len(_sessions(out_t)) == 1


class BulkApp:
    """A loopback app: a connection that sends b"D" gets an endless download
    (until stop(), at most 60 s), one that sends b"E" + 4 bytes gets them back.
    download()/small() are its clients through a tunnel's outbound."""

    def __init__(self):
        self.halt = threading.Event()
        self.got = []
        self.lsock = _app(self._serve)
        self.port = self.lsock.getsockname()[1]

    def _serve(self, c, _):
        c.settimeout(30)
        try:
            if recv_exact(c, 1, 10) == b"D":
                block = os.urandom(1 << 16)
                deadline = time.monotonic() + 60
                while not self.halt.is_set() and time.monotonic() < deadline:
                    c.sendall(block)
            else:
                c.sendall(recv_exact(c, 4, 10))
        except OSError:
            pass
        c.close()

    def download(self, out_t):
        """Starts a download and returns once 8 MiB came (a bulk stream)."""
        s = out_t.connect()
        s.sendall(b"D")
        st = {"n": 0, "hash": hashlib.sha256(), "s": s}
        self.got.append(st)

        def reader():
            s.settimeout(30)
            try:
                _drain(s, st)
            except OSError:
                pass  # closed by stop()
        threading.Thread(target=reader, daemon=True).start()
        wait_for(lambda: st["n"] >= 8 << 20, 20, what="a download under way")

    @staticmethod
    def small(out_t, tag, keep=False):
        s = out_t.connect()
        s.sendall(b"E" + tag)
        assert recv_exact(s, 4, 10) == tag
        if not keep:
            s.close()
        return s

    def stop(self):
        self.halt.set()
        for st in self.got:
            st["s"].close()
        self.lsock.close()


def _detours(port):
    from test_admin import _http, _metric
    st, text = _http(port, "GET", "/metrics")
    assert st == 200
    return _metric(text, "seam_mux_stream_detours_total")


@pytest.mark.parametrize("sessions", [2, 1])
def test_new_streams_avoid_a_session_carrying_bulk(pki, procs, sessions):
    """A client downloads without pause (a bulk stream: far more than one
    window, 256 KiB, per 100 ms). Connections opened meanwhile go on a second
    session (seam_mux_stream_detours_total), so their bytes do not queue behind
    the download's in one TCP connection; a second download goes there too,
    and with both sessions carrying bulk a new connection takes the one with
    fewer streams: never more sessions than --mux-sessions. With
    --mux-sessions 1 everything shares the first session, as before."""
    app = BulkApp()
    a_out = free_port()
    in_t = start_tunnel(procs, "inbound", addr(LOOP, app.port), pki)
    out_t = start_tunnel(procs, "outbound", addr(LOOP, in_t.port), pki, workers=1,
                         extra=MUX + ["--mux-sessions", str(sessions), "--admin",
                                      f"{LOOP}:{a_out}"])
    try:
        app.download(out_t)  # session A
        held = app.small(out_t, b"one!", keep=True)  # kept off A: a new session B
        app.small(out_t, b"two!")  # B, the newest, carries no bulk: no detour
        assert len(_sessions(out_t)) == sessions, out_t.log()
        assert _detours(a_out) == (1 if sessions == 2 else 0)
        app.download(out_t)  # B again: it carries no bulk yet
        # Both carry bulk now; B has 2 streams (the held one, the download),
        # A has 1: the next one goes on A (a detour), no third session.
        app.small(out_t, b"3rd!")
        assert app.got[0]["n"] > 0 and app.got[1]["n"] >= 8 << 20
        assert len(_sessions(out_t)) == sessions, out_t.log()
        assert _detours(a_out) == (2 if sessions == 2 else 0)
        held.close()
    finally:
        app.stop()
    assert not events(out_t.proc, "mux.protocol_error")


def _relay_first_only(port):
    """A loopback relay to |port| for its first connection; every later one
    is closed at once (a peer that fails each new session's handshake)."""
    seen = {"n": 0}

    def pipe(a, b):
        try:
            while True:
                d = a.recv(1 << 18)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def relay(c, i):
        seen["n"] = max(seen["n"], i + 1)  # handler threads may run out of order
        if i > 0:
            c.close()
            return
        c.settimeout(None)
        u = socket.create_connection((LOOP, port), timeout=10)
        u.settimeout(None)
        threading.Thread(target=pipe, args=(u, c), daemon=True).start()
        pipe(c, u)

    return _app(relay, backlog=16), seen


def test_failed_second_session_hands_its_clients_to_the_first(pki, procs):
    """The session opened beside a bulk one fails its handshake (the path to
    the inbound takes one connection only): the client waiting on it is
    carried on the first session instead of failing (mux.spread_failed), and
    for 10 s no other session is tried beside the busy one."""
    from test_admin import _http, _metric
    app = BulkApp()
    a_out = free_port()
    in_t = start_tunnel(procs, "inbound", addr(LOOP, app.port), pki)
    relay, seen = _relay_first_only(in_t.port)
    out_t = start_tunnel(procs, "outbound", addr(LOOP, relay.getsockname()[1]), pki, workers=1,
                         extra=MUX + ["--admin", f"{LOOP}:{a_out}"])
    try:
        app.download(out_t)
        assert seen["n"] == 1
        app.small(out_t, b"one!")  # a second session is tried, fails, A carries it
        ev = events(out_t.proc, "mux.spread_failed")
        assert len(ev) == 1 and ev[0]["reason"] in ("handshake_failed", "eof"), out_t.log()
        assert seen["n"] == 2
        app.small(out_t, b"two!")  # within the back-off: straight onto A
        assert seen["n"] == 2 and len(events(out_t.proc, "mux.spread_failed")) == 1
        assert len(_sessions(out_t)) == 1
        st, text = _http(a_out, "GET", "/metrics")
        assert _metric(text, "seam_connections_failed_total", direction="outbound",
                       mode="mtls") == 0
    finally:
        app.stop()
        relay.close()


@pytest.mark.parametrize("alpn", [None, "seam"], ids=["no-alpn", "alpn-seam"])
def test_peer_without_mux_gets_1to1(pki, procs, alpn):
    """The outbound's peer is an mTLS server without seam-mux/1 (openssl
    s_server: one that ignores ALPN, and one that knows only seam's 1:1
    protocol, as an older seam): the outbound says so once
    (mux.not_supported) and carries the client that waited on the refused
    session 1:1, bytes both ways; the next client goes 1:1 straight away,
    without offering seam-mux/1 again."""
    srv = start_s_server(procs, pki, "server", extra=("-alpn", alpn) if alpn else ())
    out_t = start_tunnel(procs, "outbound", srv.target, pki, peer_id=SERVER_ID, extra=MUX)
    for i, up in enumerate([b"first-client-over-1to1\n", b"second-client-over-1to1\n"]):
        s = out_t.connect()
        s.sendall(up)
        srv.wait_log(up.decode().strip())
        down = b"answer-%d\n" % i
        srv.send(down)
        assert recv_exact(s, len(down)) == down
        s.close()
        # s_server serves one connection at a time: the next client's
        # connection is taken once this one has ended.
        wait_for(lambda: len(events(out_t.proc, "conn.close")) == i + 1, 10,
                 what=f"conn.close of client {i}")
    if alpn:
        # The refused session offered seam-mux/1 first, then 1:1's protocol.
        assert "ALPN protocols advertised by the client: seam-mux/2, seam-mux/1, seam" in srv.log()
    ev = events(out_t.proc, "mux.not_supported")
    assert len(ev) == 1, ev
    assert ev[0]["fallback"] == "1:1" and "seam-mux/1" in ev[0]["detail"], ev
    assert not events(out_t.proc, "mux.session_open")
    closes = events(out_t.proc, "conn.close")
    assert all(e.get("tls") != "mux" and e["bytes_in"] != "0" for e in closes), closes


def test_bad_frame_ends_only_that_session(pki, procs):
    """A client that negotiates seam-mux/1 and sends an unknown frame type:
    the inbound logs a protocol error and closes that session only."""
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki)
    ctx = client_ctx(pki, "client")
    ctx.set_alpn_protocols(["seam-mux/1"])
    bad = tls_connect(ctx, LOOP, in_t.port)
    assert bad.selected_alpn_protocol() == "seam-mux/1"
    # OPEN stream 1, then a frame of type 9.
    bad.sendall(bytes([1, 0, 0, 0, 0, 0, 0, 1]) + bytes([9, 0, 0, 0, 0, 0, 0, 1]))
    closed, _ = closed_by_peer(bad, 5)
    bad.close()
    assert closed
    ev = wait_for(lambda: events(in_t.proc, "mux.protocol_error"), 5, what="protocol_error")
    assert "unknown frame type" in ev[0]["detail"]
    # A well-behaved outbound still works.
    out_t = start_tunnel(procs, "outbound", addr(LOOP, in_t.port), pki, extra=MUX)
    s = out_t.connect()
    assert echo_roundtrip(s, b"still fine") == b"still fine"
    s.close()


def test_flags(pki, procs):
    """--mux is outbound-only and listed in --help; --mux-sessions takes 1..16."""
    import subprocess
    import seamtest
    from tunnelkit import tunnel_args
    base = tunnel_args("inbound", "127.0.0.1:0", "127.0.0.1:1", pki, "server",
                       allow=["spiffe://cluster.local/ns/default/*"])
    r = subprocess.run(base + ["--mux"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "--mux is for outbound" in r.stderr, r.stderr
    r = subprocess.run([seamtest.binary("seam-sidecar"), "tunnel", "--help"], capture_output=True,
                       text=True, timeout=10)
    assert "--mux" in r.stdout and "--mux-sessions" in r.stdout
    out = tunnel_args("outbound", "127.0.0.1:0", "127.0.0.1:1", pki, "client", SERVER_ID)
    for bad in ("0", "17", "two"):
        r = subprocess.run(out + ["--mux", "--mux-sessions", bad], capture_output=True,
                           text=True, timeout=10)
        assert r.returncode == 2 and "--mux-sessions" in r.stderr and "[1, 16]" in r.stderr, \
            r.stderr
    r = subprocess.run(out + ["--mux-sessions", "2"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "--mux-sessions needs --mux" in r.stderr, r.stderr


def test_metrics_and_retire_on_drain(pki, procs):
    """/metrics counts sessions and streams on both sides; streams count as
    connections (active back to 0 when they end, the session stays); on
    SIGTERM the inbound sends GOAWAY and both ends close the session."""
    from test_admin import _http, _metric
    echo = Echo(procs)
    a_in, a_out = free_port(), free_port()
    in_t = start_tunnel(procs, "inbound", echo.target, pki, extra=["--admin", f"{LOOP}:{a_in}"])
    out_t = start_tunnel(procs, "outbound", addr(LOOP, in_t.port), pki, workers=1,
                         extra=MUX + ["--admin", f"{LOOP}:{a_out}"])
    socks = [out_t.connect() for _ in range(5)]
    for i, s in enumerate(socks):
        assert echo_roundtrip(s, b"m%d" % i) == b"m%d" % i

    def scrape(port):
        st, text = _http(port, "GET", "/metrics")
        assert st == 200
        return text

    for port, d in ((a_out, "outbound"), (a_in, "inbound")):
        t = wait_for(lambda: (lambda t: t if _metric(t, "seam_connections_active", direction=d,
                                                     mode="mtls") == 5 else None)(scrape(port)),
                     5, what=f"5 active streams on the {d}")
        assert _metric(t, "seam_mux_sessions_opened_total", direction=d) == 1
        assert _metric(t, "seam_mux_sessions_active", direction=d) == 1
    for s in socks:
        s.close()
    for port, d in ((a_out, "outbound"), (a_in, "inbound")):
        t = wait_for(lambda: (lambda t: t if _metric(t, "seam_connections_active", direction=d,
                                                     mode="mtls") == 0 else None)(scrape(port)),
                     5, what=f"streams closed on the {d}")
        assert _metric(t, "seam_mux_sessions_active", direction=d) == 1  # kept for the next
        assert _metric(t, "seam_connections_opened_total", direction=d, mode="mtls") == (
            5 if d == "outbound" else 6)  # the inbound also counted the session's connection
    in_t.proc.send_signal(15)
    wait_for(lambda: events(out_t.proc, "mux.session_close"), 10, what="outbound session closed")
    assert in_t.proc.p.wait(10) == 0


def test_rotation_moves_new_streams_to_a_new_session(pki, procs, tmp_path):
    """The inbound's certificate is replaced (as a secret volume update): it
    sends GOAWAY on its session; the stream open on it keeps moving bytes,
    the next connection goes on a new session that sees the new certificate,
    and the old session closes once its last stream ends."""
    import shutil
    from test_reload import _swap_identity
    d = str(tmp_path)
    shutil.copyfile(os.path.join(pki, "server.pem"), os.path.join(d, "id.pem"))
    shutil.copyfile(os.path.join(pki, "server.key"), os.path.join(d, "id.key"))
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki, cert=os.path.join(d, "id"))
    out_t = start_tunnel(procs, "outbound", addr(LOOP, in_t.port), pki, extra=MUX, workers=1)
    old = out_t.connect()
    assert echo_roundtrip(old, b"before") == b"before"
    # New connections all through the rotation: none may be refused (an OPEN
    # that crosses the inbound's GOAWAY is still taken).
    stop = threading.Event()
    results = []

    def churn():
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline and len(results) < 5000:
            try:
                s = out_t.connect()
                results.append(echo_roundtrip(s, b"c%d" % len(results)) ==
                               b"c%d" % len(results))
                s.close()
            except OSError as e:
                results.append(e)

    ct = threading.Thread(target=churn, daemon=True)
    ct.start()
    _swap_identity(pki, "server2", d, "id")
    wait_for(lambda: events(in_t.proc, "tls.reloaded"), 15, what="the inbound to load server2")
    n0 = len(results)
    wait_for(lambda: len(results) > n0 + 50, 15, what="50 connections after the reload")
    stop.set()
    ct.join(10)
    bad = [r for r in results if r is not True]
    assert not bad, f"{len(bad)} of {len(results)} connections failed across the rotation: {bad[:3]}"
    wait_for(lambda: _next_on_new_session(out_t), 15, what="a new connection on a new session")
    assert echo_roundtrip(old, b"after") == b"after"
    assert len(_sessions(in_t)) == 2
    assert not events(in_t.proc, "mux.stream_refused")
    new_id = events(out_t.proc, "mux.session_open")[1]
    assert new_id["peer_id"].endswith("/sa/server"), new_id["line"]
    old.close()
    ev = wait_for(lambda: [e for e in events(out_t.proc, "mux.session_close")], 10,
                  what="the retired session closed after its last stream")
    assert ev[0]["reason"] in ("retired", "eof"), ev[0]["line"]


def _next_on_new_session(out_t):
    s = out_t.connect()
    try:
        ok = echo_roundtrip(s, b"probe") == b"probe"
    finally:
        s.close()
    return ok and len(_sessions(out_t)) == 2


def _next_frame(buf):
    """The first whole frame in buf and what follows it: ((type, flags, sid,
    payload), rest), or (None, buf) while it is incomplete."""
    if len(buf) < 8:
        return None, buf
    t, f, n, sid = struct.unpack(">BBHI", buf[:8])
    if len(buf) < 8 + n:
        return None, buf
    return (t, f, sid, buf[8:8 + n]), buf[8 + n:]


class RawMux:
    """A seam-mux client speaking frames directly (Python's TLS, ALPN |alpn|,
    client certificate "client") to host:port, to misbehave on purpose."""

    def __init__(self, pki, port, cert="client", alpn="seam-mux/1", host=LOOP):
        ctx = client_ctx(pki, cert)
        ctx.set_alpn_protocols([alpn])
        self.s = tls_connect(ctx, host, port, timeout=20)
        assert self.s.selected_alpn_protocol() == alpn
        self.buf = b""

    def send(self, ftype, sid, payload=b"", flags=0):
        self.s.sendall(struct.pack(">BBHI", ftype, flags, len(payload), sid) + payload)

    def _parse(self, until):
        while True:
            frame, self.buf = _next_frame(self.buf)
            if frame is None or until(*frame):
                return frame

    def frames(self, until, timeout=10):
        """Reads frames until until(type, flags, sid, payload) is true; returns that frame."""
        deadline = time.monotonic() + timeout
        while True:
            got = self._parse(until)
            if got:
                return got
            left = deadline - time.monotonic()
            assert left > 0, "frame not seen in time"
            self.s.settimeout(left)
            d = self.s.recv(65536)
            assert d, "session closed"
            self.buf += d

    def poll(self, until):
        """Like frames, but reads only what has arrived (one thread drives the
        TLS socket: OpenSSL objects are not for concurrent use)."""
        while self.s.pending() or select.select([self.s], [], [], 0)[0]:
            self.s.settimeout(5)
            d = self.s.recv(65536)
            assert d, "session closed"
            self.buf += d
        return self._parse(until)


def _silent_app():
    """A listener that accepts into its backlog and never reads."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((LOOP, 0))
    ls.listen(512)
    return ls


def test_peer_beyond_its_window_is_reset(pki, procs):
    """A client that ignores flow control and keeps sending on a stream whose
    app does not read: the stream is reset (RST reason 2) once the window and
    one read of slack are used up; the session lives on."""
    app = _silent_app()
    try:
        in_t = start_tunnel(procs, "inbound", addr(LOOP, app.getsockname()[1]), pki)
        m = RawMux(pki, in_t.port)
        m.send(1, 1)  # OPEN 1
        chunk = b"f" * 65535
        sent = 0
        rst = None
        is_rst = lambda t, f, sid, p: t == 2 and sid == 1  # noqa: E731
        while rst is None and sent < (64 << 20):
            m.send(0, 1, chunk)
            sent += len(chunk)
            rst = m.poll(is_rst)
        if rst is None:
            rst = m.frames(is_rst, timeout=10)
        assert struct.unpack(">I", rst[3])[0] == 2, rst  # SC_MUX_RST_FLOW
        ev = wait_for(lambda: events(in_t.proc, "mux.flow_violation"), 5, what="flow_violation")
        assert ev[0]["stream"] == "1"
        # Only the stream was reset: the session is still read and checked (a
        # new stream, then a bad frame on it is a protocol error of the session).
        m.send(1, 2)
        m.send(3, 2, struct.pack(">I", 0))  # WINDOW 0 on a live stream: protocol error
        ev = wait_for(lambda: events(in_t.proc, "mux.protocol_error"), 5, what="protocol_error")
        assert "bad WINDOW increment" in ev[0]["detail"]
    finally:
        app.close()


class _Windowed:
    """A sender on stream sid held to its credit: each time, all the credit
    there is in one write (as the outbound sends a full read), then it waits
    for WINDOW frames. room is the most credit ever held after a WINDOW
    arrived (reset it to watch a phase). With blocked (seam-mux/2) it says
    BLOCKED each time it runs out of credit, as the outbound does."""

    def __init__(self, m, sid, window=256 << 10, opening=False, blocked=False):
        self.m, self.sid, self.blocked = m, sid, blocked
        self.granted, self.sent, self.room = window, 0, 0
        # The first write carries the OPEN: the whole window arrives while
        # the sidecar connects to the app, and goes to it in one go.
        self.first = struct.pack(">BBHI", 1, 0, 0, sid) if opening else b""

    def _take(self, t, f, s_id, p):
        if t == 3 and s_id == self.sid:
            self.granted += struct.unpack(">I", p)[0]
            self.room = max(self.room, self.granted - self.sent)
        return False

    def send(self, total, until=lambda: False, each=lambda: None):
        """Sends total bytes, or fewer once until() is true after a WINDOW;
        calls each() on every turn (a write, or a wait for credit)."""
        end = self.sent + total
        while self.sent < end:
            each()
            room = min(self.granted - self.sent, end - self.sent)
            if room <= 0:
                if self.blocked:
                    self.m.send(5, self.sid, struct.pack(">I", self.sent & 0xffffffff))
                self.m.frames(lambda *f: self._take(*f) or f[0] == 3, timeout=20)
                self.m.poll(self._take)
                if until():
                    return
                continue
            frames, self.first = [self.first], b""
            while room > 0:
                n = min(room, 65535)
                frames.append(struct.pack(">BBHI", 0, 0, n, self.sid) + b"w" * n)
                room -= n
                self.sent += n
            self.m.s.sendall(b"".join(frames))
            self.m.poll(self._take)


def _raw_to_inbound(procs, pki, app, alpn="seam-mux/1"):
    """An inbound sidecar (admin port on loopback) in front of |app|, and a
    RawMux session to it with stream 1 open: (the session, the admin port)."""
    a_in = free_port()
    in_t = start_tunnel(procs, "inbound", addr(LOOP, app.getsockname()[1]), pki,
                        extra=["--admin", f"{LOOP}:{a_in}"])
    m = RawMux(pki, in_t.port, alpn=alpn)
    m.send(1, 1)  # OPEN 1
    return m, a_in


def test_window_grows_when_the_window_limits_the_stream(pki, procs):
    """A sender that always has its whole window out, towards an app that
    reads at once: the window, not the app, limits the stream, and the
    receiving sidecar grants more than the 256 KiB streams start with
    (seam_mux_window_grows_total), never more than 1 MiB, and every byte
    arrives. (A stalled app gets no growth once writes to it queue;
    test_peer_beyond_its_window_is_reset and
    test_stalled_stream_does_not_block_others hold for it.)"""
    from test_admin import _http, _metric
    total = 16 << 20
    app, st = _draining_app()
    try:
        m, a_in = _raw_to_inbound(procs, pki, app)
        w = _Windowed(m, 1)
        w.send(total)
        m.send(0, 1, flags=1)  # FIN
        wait_for(lambda: st["n"] == total, 30, what="every byte at the app")
        assert st["hash"].digest() == hashlib.sha256(b"w" * total).digest()
        assert (256 << 10) < w.room <= (1 << 20), w.room
        status, text = _http(a_in, "GET", "/metrics")
        assert status == 200
        assert _metric(text, "seam_mux_window_grows_total", direction="inbound") >= 1
    finally:
        app.close()


def test_window_growth_is_given_back_when_the_session_is_shared(pki, procs):
    """Bytes a grown window keeps in flight wait in the one TCP flow in front
    of every other stream's, so only a stream alone on its session grows. A
    stream grown past 256 KiB gives the growth back once a second stream on
    its session moves bytes too (seam_mux_window_shrinks_total), and does not
    grow while that stream keeps sending; once the other stream has been idle
    for the hold (a second) the window grows again, though that stream stays
    open (an idle keep-alive connection does not share a session), and a
    stream opened after the first ended grows at once."""
    from test_admin import _http, _metric
    sts = [{"n": 0, "hash": hashlib.sha256()} for _ in range(3)]

    def sink(c, i):  # one counter per connection: each drains in its own thread
        with c:
            _drain(c, sts[i])

    def metric(name):
        _, text = _http(a_in, "GET", "/metrics")
        return _metric(text, name, direction="inbound")

    app = _app(sink)
    try:
        m, a_in = _raw_to_inbound(procs, pki, app)
        w = _Windowed(m, 1)
        # Stream 3 opens before the growth and stays idle: no matter.
        m.send(1, 3)
        w.send(64 << 20, until=lambda: w.room > (512 << 10))
        assert w.room > (512 << 10), w.room  # alone: grown
        shrinks = metric("seam_mux_window_shrinks_total")
        small = {"n": 0}

        def chatter():  # a small request on stream 3 between stream 1's writes
            m.send(0, 3, b"r" * 100)
            small["n"] += 100

        # The give-back: each WINDOW returns (almost) nothing until the
        # window is 256 KiB again, i.e. within the next MiB acknowledged.
        w.send(2 << 20, each=chatter)
        assert metric("seam_mux_window_shrinks_total") > shrinks
        grows = metric("seam_mux_window_grows_total")
        w.room = 0
        w.send(4 << 20, each=chatter)
        assert 0 < w.room <= (256 << 10), w.room
        assert metric("seam_mux_window_grows_total") == grows
        # Stream 3 goes quiet (still open): after the hold, stream 1 grows.
        w.room = 0
        deadline, cap = time.monotonic() + 30, w.sent + (2 << 30)
        while w.room <= (256 << 10) and time.monotonic() < deadline and w.sent < cap:
            w.send(4 << 20, until=lambda: w.room > (256 << 10))
        assert w.room > (256 << 10), w.room
        assert metric("seam_mux_window_grows_total") > grows
        # Stream 1 ends both ways (the sink closes at our FIN); stream 5,
        # opened after it, is alone at once: it grows within the bytes stream
        # 1 was given (well under the hold's second at any speed this runs at).
        m.send(0, 1, flags=1)
        m.frames(lambda t, f, sid, p: t == 0 and f & 1 and sid == 1, timeout=20)
        w5 = _Windowed(m, 5, opening=True)
        w5.send(64 << 20, until=lambda: w5.room > (256 << 10))
        assert w5.room > (256 << 10), w5.room
        m.send(0, 5, flags=1)
        m.send(0, 3, flags=1)
        total = w.sent + small["n"] + w5.sent
        wait_for(lambda: sum(st["n"] for st in sts) == total, 30, what="every byte at the app")
    finally:
        app.close()


def test_blocked_sender_gets_its_window_grown(pki, procs):
    """A sender on a path whose round trip the window cannot cover: its bytes
    arrive spread out (here: 8 KiB a millisecond) and it learns of credit
    only once it has used all it had (as if WINDOW frames took a round trip
    to reach it). The receiving sidecar then never sees most of the window
    unacknowledged at once, the trigger window growth has on seam-mux/1, so
    a seam-mux/1 stream stays at 256 KiB; on seam-mux/2 the sender says
    BLOCKED when it runs out, and the window grows (to at most 1 MiB) while
    the app keeps up. Every byte arrives either way."""
    from test_admin import _http, _metric
    for alpn in ("seam-mux/1", "seam-mux/2"):
        # seam-mux/1: 2 MiB without growth; seam-mux/2: until the window has
        # grown (the app must keep up when BLOCKED arrives), at most 16 MiB.
        total = (2 << 20) if alpn == "seam-mux/1" else (16 << 20)
        app, st = _draining_app()
        try:
            m, a_in = _raw_to_inbound(procs, pki, app, alpn=alpn)
            # Credit is used only once the sender has run out (granted): what
            # came back meanwhile waits in pending. It never runs more than
            # 128 KiB ahead of the WINDOWs it has seen, so the receiver never
            # holds three quarters of 256 KiB unacknowledged, however late
            # the sidecar gets the CPU: no growth without BLOCKED.
            granted, sent, room, seen, pending = 256 << 10, 0, 0, 0, 0

            def take(t, f, sid, p):
                nonlocal seen, pending
                if t == 3 and sid == 1:
                    inc = struct.unpack(">I", p)[0]
                    seen += inc
                    pending += inc
                return False

            def wait_window():
                m.frames(lambda *f: take(*f) or f[0] == 3, timeout=20)

            while sent < total and not (alpn == "seam-mux/2" and room > (256 << 10)):
                if granted == sent:
                    if alpn == "seam-mux/2":
                        m.send(5, 1, struct.pack(">I", sent & 0xffffffff))  # BLOCKED
                    if pending == 0:
                        wait_window()
                    m.poll(take)
                    granted, pending = granted + pending, 0
                    room = max(room, granted - sent)
                    continue
                if sent - seen >= (128 << 10):
                    wait_window()
                    continue
                n = min(8 << 10, granted - sent, total - sent)
                m.send(0, 1, b"p" * n)
                sent += n
                time.sleep(0.001)
                m.poll(take)
            m.send(0, 1, flags=1)  # FIN
            wait_for(lambda: st["n"] == sent, 30, what=f"every byte at the app ({alpn})")
            assert st["hash"].digest() == hashlib.sha256(b"p" * sent).digest()
            status, text = _http(a_in, "GET", "/metrics")
            assert status == 200
            grows = _metric(text, "seam_mux_window_grows_total", direction="inbound")
            if alpn == "seam-mux/1":
                assert room <= (256 << 10) and grows == 0, (room, grows)
            else:
                assert (256 << 10) < room <= (1 << 20) and grows >= 1, (room, grows)
        finally:
            app.close()


@pytest.mark.parametrize("alpn", ["seam-mux/2", "seam-mux/1"])
def test_outbound_says_blocked_on_seam_mux_2_only(pki, procs, alpn):
    """The outbound's side of BLOCKED: towards a server that chose seam-mux/2
    and gives no credit back, a stream that used its 256 KiB sends BLOCKED
    with the bytes it sent; a seam-mux/1 server (whose decoder would take
    the frame for a protocol error) never gets one."""
    import ssl
    from seamtest import mtls_server_ctx
    from tunnelkit import OneConnServer
    got = {"frames": [], "data": 0, "alpn": None}
    blocked = threading.Event()
    enough = threading.Event()

    def serve(c):
        ctx = mtls_server_ctx(pki, "server")
        ctx.set_alpn_protocols([alpn])
        t = ctx.wrap_socket(c, server_side=True)
        got["alpn"] = t.selected_alpn_protocol()
        buf = b""
        t.settimeout(30)
        while True:
            try:
                d = t.recv(65536)
            except (OSError, ssl.SSLError):
                return
            if not d:
                return
            buf += d
            while True:
                frame, buf = _next_frame(buf)
                if frame is None:
                    break
                ft, _, sid, p = frame
                if ft == 0:
                    got["data"] += len(p)
                    if got["data"] >= (256 << 10):
                        enough.set()
                else:
                    got["frames"].append((ft, sid, p, got["data"]))
                if ft == 5:
                    blocked.set()

    srv = OneConnServer(serve)
    try:
        out_t = start_tunnel(procs, "outbound", srv.target, pki, peer_id=SERVER_ID, extra=MUX)
        c = socket.create_connection((LOOP, out_t.port), timeout=10)
        c.setblocking(False)
        pushed, deadline = 0, time.monotonic() + 20
        while pushed < (4 << 20) and not enough.is_set() and time.monotonic() < deadline:
            try:
                pushed += c.send(b"b" * 65536)
            except BlockingIOError:
                select.select([], [c], [], 0.05)
        assert enough.wait(20), got["data"]
        if alpn == "seam-mux/2":
            assert blocked.wait(10), got["frames"]
            ft, sid, p, data_before = [f for f in got["frames"] if f[0] == 5][0]
            assert sid == 1
            # What it had sent when it stopped: its window and at most one read more.
            assert struct.unpack(">I", p)[0] == data_before
            assert (256 << 10) <= data_before <= (256 << 10) + (256 << 10), data_before
        else:
            # Bounded look: the outbound stopped at its window; nothing else comes.
            assert not blocked.wait(1.0), got["frames"]
            assert got["data"] <= (512 << 10)
        assert got["alpn"] == alpn
        opens = _sessions(out_t)
        assert opens and opens[0]["proto"] == alpn, opens
        c.close()
    finally:
        srv.close()


def test_streams_over_the_cap_are_refused(pki, procs):
    """The 129th open stream of one session is refused with RST (reason 3)
    and a log line; the 128 before it stay open."""
    app = _silent_app()
    try:
        in_t = start_tunnel(procs, "inbound", addr(LOOP, app.getsockname()[1]), pki)
        m = RawMux(pki, in_t.port)
        for sid in range(1, 131):
            m.send(1, sid)
        t, f, sid, p = m.frames(lambda t, f, sid, p: t == 2, timeout=10)
        assert sid == 129 and struct.unpack(">I", p)[0] == 3, (t, sid, p)
        t, f, sid, p = m.frames(lambda t, f, sid, p: t == 2, timeout=10)
        assert sid == 130
        ev = wait_for(lambda: events(in_t.proc, "mux.stream_refused"), 5, what="stream_refused")
        assert all(e["reason"] == "max_streams" for e in ev) and len(ev) == 2
    finally:
        app.close()


def test_goaway_is_advice_for_its_grace(pki, procs, tmp_path):
    """The inbound's certificate reload sends GOAWAY. An OPEN the client sent
    before it heard (here: a raw client that ignores GOAWAY) is still served,
    not refused: a rotation drops no connection. But GOAWAY is advice for
    SC_MUX_GOAWAY_GRACE_MS (5 s) only: a peer still opening streams on the
    session after that is refused (RST, reason goaway_ignored), so no session
    verified before a rotation of the certificate or the trust bundle carries
    new work for long. The open streams are not touched."""
    import shutil
    from test_reload import _swap_identity
    d = str(tmp_path)
    shutil.copyfile(os.path.join(pki, "server.pem"), os.path.join(d, "id.pem"))
    shutil.copyfile(os.path.join(pki, "server.key"), os.path.join(d, "id.key"))
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki, cert=os.path.join(d, "id"))
    m = RawMux(pki, in_t.port)
    m.send(1, 1)
    m.send(0, 1, b"one")
    m.frames(lambda t, f, sid, p: t == 0 and sid == 1 and p == b"one")
    _swap_identity(pki, "server2", d, "id")
    m.frames(lambda t, f, sid, p: t == 4, timeout=15)  # GOAWAY
    goaway_at = time.monotonic()
    sid, got = 1, None
    while got is None or got[0] == 0:
        assert time.monotonic() - goaway_at < 20, "streams still taken 20 s after GOAWAY"
        sid += 1
        m.send(1, sid)
        m.send(0, sid, b"s%d" % sid)
        got = m.frames(lambda t, f, s_, p: s_ == sid and t in (0, 2), timeout=10)
        if got[0] == 0:
            assert got[3] == b"s%d" % sid
            time.sleep(0.5)  # pacing the probes (the wait is bounded above)
    assert sid > 2, "the OPEN right after GOAWAY was refused: a rotation dropped a connection"
    assert got[0] == 2, f"stream {sid}: {got}"
    ev = wait_for(lambda: events(in_t.proc, "mux.stream_refused"), 5, what="stream_refused")
    assert [e["reason"] for e in ev] == ["goaway_ignored"]
    assert ev[0]["stream"] == str(sid)
    m.send(0, 1, b"still")
    m.frames(lambda t, f, s_, p: t == 0 and s_ == 1 and p == b"still")


def _wait_expired(cert):
    """Waits until cert.pem's notAfter (inclusive, to the second) has passed."""
    import ssl
    import subprocess
    out = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in", cert + ".pem"],
                         check=True, capture_output=True, text=True).stdout
    end = ssl.cert_time_to_seconds(out.strip().split("=", 1)[1])
    wait_for(lambda: time.time() >= end + 1.2, 15, interval=0.1, what="the certificate to expire")


def test_no_new_stream_once_the_client_cert_expired(pki, procs, tmp_path):
    """A session outlives its client's certificate: its open stream goes on,
    a new one is refused (RST, reason peer_cert_expired), counted and listed
    as a 1:1 handshake with that certificate would be, and the inbound says
    GOAWAY."""
    from test_admin import _http, _metric
    import json
    from tunnelkit import mint_leaf
    echo = Echo(procs)
    adm = free_port()
    in_t = start_tunnel(procs, "inbound", echo.target, pki, extra=["--admin", f"{LOOP}:{adm}"])
    short = mint_leaf(pki, str(tmp_path), "short", "spiffe://cluster.local/ns/default/sa/client",
                      valid_s=4)
    m = RawMux(pki, in_t.port, cert=short)
    m.send(1, 1)
    m.send(0, 1, b"one")
    m.frames(lambda t, f, sid, p: t == 0 and sid == 1 and p == b"one")
    _wait_expired(short)
    m.send(1, 2)
    t, f, sid, p = m.frames(lambda t, f, s_, p: s_ == 2 or t == 4, timeout=10)
    frames = [(t, sid)]
    if t == 4:
        t, f, sid, p = m.frames(lambda t, f, s_, p: s_ == 2, timeout=10)
        frames.append((t, sid))
    else:
        m.frames(lambda t, f, s_, p: t == 4, timeout=10)
    assert t == 2, f"stream 2 was not refused: {frames}"
    ev = wait_for(lambda: events(in_t.proc, "mux.stream_refused"), 5, what="stream_refused")
    assert ev[0]["reason"] == "peer_cert_expired" and ev[0]["stream"] == "2", ev
    m.send(0, 1, b"still")
    m.frames(lambda t, f, s_, p: t == 0 and s_ == 1 and p == b"still")
    st, text = _http(adm, "GET", "/metrics")
    assert st == 200
    assert _metric(text, "seam_tls_handshake_failures_total", direction="inbound",
                   reason="expired") == 1
    st, body = _http(adm, "GET", "/debug/tls-failures")
    fails = json.loads(body)["failures"]
    assert [(f["reason"], f["peer_id"]) for f in fails] == [
        ("expired", "spiffe://cluster.local/ns/default/sa/client")], fails


def test_outbound_leaves_a_session_whose_server_cert_expired(pki, procs, tmp_path):
    """The outbound puts no new stream on a session whose server certificate
    has expired since its handshake: the next connection opens a new session,
    whose handshake then refuses that certificate (reason expired), as a 1:1
    connection's would."""
    from tunnelkit import mint_leaf
    echo = Echo(procs)
    short = mint_leaf(pki, str(tmp_path), "short", "spiffe://cluster.local/ns/default/sa/server",
                      valid_s=4)
    in_t = start_tunnel(procs, "inbound", echo.target, pki, cert=short)
    out_t = start_tunnel(procs, "outbound", addr(LOOP, in_t.port), pki, workers=1, extra=MUX)
    first = out_t.connect()
    assert echo_roundtrip(first, b"one") == b"one"
    _wait_expired(short)
    s = out_t.connect()
    try:
        s.sendall(b"two")
        closed, got = closed_by_peer(s, timeout=10)
        assert closed and got == b"", f"a connection went on the expired session (got {got!r})"
    finally:
        s.close()
    ev = wait_for(lambda: [e for e in events(out_t.proc, "tls.handshake_failed")
                           if e["reason"] == "expired"], 10, what="handshake refused: expired")
    assert ev
    assert echo_roundtrip(first, b"still") == b"still"  # the open stream goes on
