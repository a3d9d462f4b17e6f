"""Data integrity through app -> outbound -> (mTLS) -> inbound -> echo app
(issue 2 "What must be shown" #4): 64 MiB with matching SHA-256, 200
concurrent connections, half-close, upstream down -> client closed promptly.
The tests on the `chain` fixture and the half-close-after-FIN test run with
--mux too (docs/MUX.md).
"""
import hashlib
import os
import socket
import threading
import time

import pytest

from seamtest import free_port, rss_kib, wait_for
from tunnelkit import (LOOP, SERVER_ID, Echo, OneConnServer, addr, client_ctx, closed_by_peer,
                       echo_roundtrip, events, finish_push, push_until_stalled, run_threads,
                       start_tunnel, tls_connect)


@pytest.fixture(params=[False, True], ids=["1to1", "mux"])
def chain(pki, procs, request):
    """The pair, with one mTLS connection per connection, and with --mux
    (one worker: its streams share one session per 128, docs/MUX.md)."""
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki)
    mux = request.param
    out_t = start_tunnel(procs, "outbound", addr(LOOP, in_t.port), pki, peer_id=SERVER_ID,
                         extra=["--mux"] if mux else [], workers=1 if mux else None)
    out_t.mux = mux
    return echo, in_t, out_t


def test_64_mib_sha256(chain):
    echo, in_t, out_t = chain
    total = 64 << 20
    chunk = 1 << 20
    s = out_t.connect(timeout=60)
    sent_hash = hashlib.sha256()
    recv_hash = hashlib.sha256()
    received = [0]
    errors = []

    def reader():
        try:
            while True:
                d = s.recv(1 << 18)
                if not d:
                    break
                recv_hash.update(d)
                received[0] += len(d)
        except OSError as e:
            errors.append(e)

    rt = threading.Thread(target=reader, daemon=True)
    rt.start()
    start = time.monotonic()
    for _ in range(total // chunk):
        block = os.urandom(chunk)
        sent_hash.update(block)
        s.sendall(block)
    s.shutdown(socket.SHUT_WR)  # the echo app replies, then FIN comes back
    rt.join(240 - (time.monotonic() - start))
    assert not rt.is_alive(), f"stream stalled: {received[0]} of {total} bytes echoed"
    s.close()
    assert not errors, errors
    assert received[0] == total
    assert recv_hash.hexdigest() == sent_hash.hexdigest()
    wait_for(lambda: echo.stats()["bytes"] == total, 5, what="every byte counted at the app")

    # Both sidecars account for every byte.
    for t in (out_t, in_t):
        ev = wait_for(lambda t=t: events(t.proc, "conn.close"), 10, what="conn.close")
        assert int(ev[0]["bytes_in"]) == total, ev[0]["line"]
        assert int(ev[0]["bytes_out"]) == total, ev[0]["line"]


def test_200_concurrent_connections(chain):
    echo, in_t, out_t = chain
    n = 200
    socks = []
    try:
        # Open all of them first, each proven end to end with a first round trip.
        for i in range(n):
            s = out_t.connect(timeout=30)
            socks.append(s)
            assert echo_roundtrip(s, b"hello %d\n" % i, 30) == b"hello %d\n" % i
        # All 200 are open at once all the way through to the app.
        wait_for(lambda: echo.stats()["active"] == n, 15, what="200 active at the echo app")

        def exchange(i):
            s = socks[i]
            data = os.urandom(64 * 1024)
            got = echo_roundtrip(s, data, 60)
            return got == data

        ok = run_threads([lambda i=i: exchange(i) for i in range(n)], timeout=120)
        assert all(ok), f"{ok.count(False)} connections corrupted data"
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: echo.stats()["active"] == 0, 15, what="all closed at the echo app")
    assert echo.stats()["accepted"] == n
    ev = wait_for(lambda: len(events(out_t.proc, "conn.close")) == n and events(out_t.proc, "conn.close"),
                  15, what="200 conn.close")
    assert all(e["tls"] == ("mux" if out_t.mux else "TLSv1.3") for e in ev)
    if out_t.mux:  # more streams than one session takes (128): a second one opened
        assert len(events(out_t.proc, "mux.session_open")) == 2, out_t.log()


def test_half_close(chain):
    """The client sends, then shuts its write side; it still gets the whole
    echo, then EOF."""
    echo, in_t, out_t = chain
    data = os.urandom(1 << 20)
    s = out_t.connect(timeout=30)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    buf = bytearray()
    deadline = time.monotonic() + 30
    eof = False
    while time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            d = s.recv(1 << 16)
        except socket.timeout:
            break
        if not d:
            eof = True
            break
        buf += d
    s.close()
    assert len(buf) == len(data), f"got {len(buf)} of {len(data)} bytes after half-close"
    assert bytes(buf) == data
    assert eof, "no EOF after the full echo"


@pytest.mark.parametrize("extra", [[], ["--mux"]], ids=["1to1", "mux"])
def test_half_close_reply_after_fin(pki, procs, extra):
    """A server that only answers after the client's FIN (like `wc`), over
    outbound -> inbound: the FIN must cross the tunnel while the other direction
    stays open (with --mux: as a DATA frame with FIN, docs/MUX.md)."""
    def serve(c):
        c.settimeout(20)
        n = 0
        while True:
            d = c.recv(65536)
            if not d:
                break
            n += len(d)
        c.sendall(b"count=%d\n" % n)
        c.shutdown(socket.SHUT_WR)

    srv = OneConnServer(serve)
    try:
        in_t = start_tunnel(procs, "inbound", srv.target, pki)
        out_t = start_tunnel(procs, "outbound", addr(LOOP, in_t.port), pki, extra=extra)
        s = out_t.connect(timeout=20)
        s.sendall(b"x" * 100000)
        s.shutdown(socket.SHUT_WR)
        closed, got = closed_by_peer(s, 15)
        s.close()
        assert got == b"count=100000\n"
        assert closed
    finally:
        srv.close()


def _closed_port():
    return free_port()  # nothing listens there


def test_upstream_down_inbound(pki, procs):
    """inbound's target refuses: the TLS client is closed within 5 s."""
    in_t = start_tunnel(procs, "inbound", addr(LOOP, _closed_port()), pki)
    s = tls_connect(client_ctx(pki, "client"), LOOP, in_t.port)
    t0 = time.monotonic()
    try:
        s.sendall(b"anyone there?")
    except OSError:
        pass
    closed, got = closed_by_peer(s, 5)
    s.close()
    assert closed, "client connection left hanging after the upstream connect failed"
    assert got == b""
    assert time.monotonic() - t0 < 5


def test_upstream_down_through_chain(pki, procs):
    """outbound -> inbound -> closed port: the app's plain connection to the
    outbound tunnel is closed within 5 s (the failure propagates)."""
    in_t = start_tunnel(procs, "inbound", addr(LOOP, _closed_port()), pki)
    out_t = start_tunnel(procs, "outbound", addr(LOOP, in_t.port), pki)
    s = out_t.connect()
    t0 = time.monotonic()
    s.sendall(b"anyone there?")
    closed, got = closed_by_peer(s, 5)
    s.close()
    assert closed, "app connection left hanging after the upstream connect failed"
    assert got == b""
    assert time.monotonic() - t0 < 5


def test_upstream_down_outbound(pki, procs):
    """outbound's target refuses: the app's connection is closed within 5 s."""
    out_t = start_tunnel(procs, "outbound", addr(LOOP, _closed_port()), pki)
    s = out_t.connect()
    closed, got = closed_by_peer(s, 5)
    s.close()
    assert closed, "app connection left hanging after the upstream connect failed"
    assert got == b""


@pytest.mark.parametrize("workers", [1, 4])
def test_workers(pki, procs, workers):
    """--workers N: every connection is served whatever worker takes it."""
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki, workers=workers)
    out_t = start_tunnel(procs, "outbound", addr(LOOP, in_t.port), pki, workers=workers)
    ready = [e for e in events(in_t.proc, "sidecar.ready")]
    assert ready and ready[0]["workers"] == str(workers), ready

    def one(i):
        s = out_t.connect()
        try:
            data = b"%d:" % i + os.urandom(4096)
            return echo_roundtrip(s, data) == data
        finally:
            s.close()

    assert all(run_threads([lambda i=i: one(i) for i in range(40)], timeout=60))


def test_backpressure_slow_reader(pki, procs):
    """The app behind the tunnels stops reading: the client can only push a
    bounded amount (kernel buffers + the sidecars' fixed buffers), the
    sidecars' memory does not grow with it, and once the app reads again
    every byte arrives intact."""
    go = threading.Event()
    got = {"n": 0, "hash": hashlib.sha256(), "eof": False}

    def sink(c):
        go.wait(60)
        c.settimeout(30)
        while True:
            d = c.recv(1 << 18)
            if not d:
                got["eof"] = True
                break
            got["n"] += len(d)
            got["hash"].update(d)

    srv = OneConnServer(sink)
    try:
        in_t = start_tunnel(procs, "inbound", srv.target, pki)
        out_t = start_tunnel(procs, "outbound", addr(LOOP, in_t.port), pki)
        s = out_t.connect()
        rss0 = {t.proc.pid: rss_kib(t.proc.pid) for t in (in_t, out_t)}
        blocks = [os.urandom(1 << 20)]

        def next_block():  # new content per MiB, cheap to make
            blocks[0] = hashlib.sha256(blocks[0][:64]).digest() * (len(blocks[0]) // 32)
            return blocks[0]

        sent, sent_hash, pending = push_until_stalled(s, 256 << 20, next_block)
        assert sent < 128 << 20, f"{sent >> 20} MiB accepted while the app read nothing"
        for t in (in_t, out_t):
            grew = rss_kib(t.proc.pid) - rss0[t.proc.pid]
            assert grew < 32 * 1024, f"{t.direction} RSS grew {grew} KiB under backpressure"
        # The app reads again: everything arrives, in order.
        go.set()
        sent = finish_push(s, sent, sent_hash, pending)
        srv.thread.join(60)
        assert not srv.thread.is_alive()
        s.close()
        assert got["eof"]
        assert got["n"] == sent
        assert got["hash"].hexdigest() == sent_hash.hexdigest()
    finally:
        go.set()
        srv.close()


def test_connect_timeout(pki, procs):
    """An upstream that never completes the TCP handshake (its accept queue is
    full, so SYNs are dropped): the client is closed after --connect-timeout."""
    port = free_port()
    lsock = socket.socket()
    lsock.bind((LOOP, port))
    lsock.listen(0)
    fillers = []
    try:
        # Fill the accept queue (nobody accepts) until a connect no longer completes.
        for _ in range(8):
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex((LOOP, port))
            fillers.append(f)
        probe = socket.socket()
        probe.settimeout(1)
        try:
            probe.connect((LOOP, port))
            pytest.skip("the kernel completed a connect to a full accept queue")
        except (socket.timeout, OSError):
            pass
        finally:
            probe.close()
        out_t = start_tunnel(procs, "outbound", addr(LOOP, port), pki,
                             extra=["--connect-timeout", "1s"])
        s = out_t.connect()
        t0 = time.monotonic()
        closed, got = closed_by_peer(s, 8)
        s.close()
        assert closed, "client left hanging while the upstream connect never completed"
        assert got == b""
        assert 0.5 <= time.monotonic() - t0 < 8
    finally:
        for f in fillers:
            f.close()
        lsock.close()
