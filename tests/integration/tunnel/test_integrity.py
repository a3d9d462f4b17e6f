"""Data integrity through app -> outbound -> (mTLS) -> inbound -> echo app
(issue 2 "What must be shown" #4): 64 MiB with matching SHA-256, 200
concurrent connections, half-close, upstream down -> client closed promptly.
"""
import hashlib
import os
import socket
import threading
import time

import pytest

from seamtest import free_port, wait_for
from tunnelkit import (LOOP, SERVER_ID, Echo, addr, client_ctx, closed_by_peer, echo_roundtrip,
                       events, run_threads, start_tunnel, tls_connect)


@pytest.fixture
def chain(pki, procs):
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki)
    out_t = start_tunnel(procs, "outbound", addr(LOOP, in_t.port), pki, peer_id=SERVER_ID)
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
    assert all(e["tls"] == "TLSv1.3" for e in ev)


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


def test_half_close_reply_after_fin(pki, procs):
    """A server that only answers after the client's FIN (like `wc`), over
    outbound -> inbound: the FIN must cross the tunnel while the other direction
    stays open."""
    port = free_port()
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((LOOP, port))
    lsock.listen(8)
    lsock.settimeout(20)

    def serve():
        try:
            c, _ = lsock.accept()
        except OSError:
            return
        with c:
            c.settimeout(20)
            n = 0
            try:
                while True:
                    d = c.recv(65536)
                    if not d:
                        break
                    n += len(d)
                c.sendall(b"count=%d\n" % n)
                c.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        in_t = start_tunnel(procs, "inbound", addr(LOOP, port), pki)
        out_t = start_tunnel(procs, "outbound", addr(LOOP, in_t.port), pki)
        s = out_t.connect(timeout=20)
        s.sendall(b"x" * 100000)
        s.shutdown(socket.SHUT_WR)
        closed, got = closed_by_peer(s, 15)
        s.close()
        assert got == b"count=100000\n"
        assert closed
    finally:
        lsock.close()


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
