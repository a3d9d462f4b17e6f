"""Handshake and idle timeouts (issue 2: connect / handshake / idle timeouts as
flags): stuck connections are closed, and the handshake one is logged."""
import socket
import time

from seamtest import wait_for
from tunnelkit import (LOOP, Echo, addr, client_ctx, closed_by_peer, echo_roundtrip, hs_failures,
                       sock_peer_str, start_tunnel, tls_connect)


def test_handshake_timeout(pki, procs):
    """A client that connects and says nothing is closed after
    --handshake-timeout and logged as handshake_timeout."""
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki, extra=["--handshake-timeout", "1s"])
    s = socket.create_connection((LOOP, in_t.port), timeout=10)
    peer = sock_peer_str(s)
    t0 = time.monotonic()
    closed, _ = closed_by_peer(s, 6)
    elapsed = time.monotonic() - t0
    s.close()
    assert closed, "silent client not closed by the handshake timeout"
    assert 0.5 <= elapsed < 6, elapsed
    f = wait_for(lambda: hs_failures(in_t.proc, peer), 5, what="handshake_timeout log")[0]
    assert f["reason"] == "handshake_timeout", f["line"]
    assert echo.stats()["bytes"] == 0


def test_idle_timeout(pki, procs):
    """An established connection with no traffic is closed after --idle-timeout;
    traffic keeps it open."""
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki, extra=["--idle-timeout", "2s"])
    out_t = start_tunnel(procs, "outbound", addr(LOOP, in_t.port), pki,
                         extra=["--idle-timeout", "2s"])
    s = out_t.connect()
    # Traffic every 0.5 s for 3 s (longer than the idle timeout) keeps it open.
    t_end = time.monotonic() + 3
    while time.monotonic() < t_end:
        assert echo_roundtrip(s, b"keepalive") == b"keepalive"
        time.sleep(0.5)  # the pause between app messages is the behaviour under test
    t0 = time.monotonic()
    closed, got = closed_by_peer(s, 8)
    s.close()
    assert closed, "idle connection not closed by the idle timeout"
    assert got == b""
    assert 1.0 <= time.monotonic() - t0 < 8


def test_inbound_idle_timeout_tls_client(pki, procs):
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki, extra=["--idle-timeout", "1s"])
    s = tls_connect(client_ctx(pki, "client"), LOOP, in_t.port)
    assert echo_roundtrip(s, b"x") == b"x"
    closed, _ = closed_by_peer(s, 6)
    s.close()
    assert closed
    wait_for(lambda: echo.stats()["active"] == 0, 5, what="the app side closed too")
