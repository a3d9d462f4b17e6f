"""Fault injection on the upstream side (issue 10): the upstream refuses,
resets (SO_LINGER 0) or half-closes at every stage — at accept, during the
TLS handshake, mid-stream. Each time the client's connection ends promptly
(no hang), what was exchanged before the fault is intact, and the sidecar
keeps serving the next connection (then exits 0 on SIGTERM, no sanitizer
report: conftest.py)."""
import socket

import pytest

from relkit import (LOOP, client_ctx, closed_by_peer, echo_roundtrip, events, free_port_str,
                    start_tunnel, tls_connect)
from seamtest import wait_for
from upstream import FakeUpstream

MSG = b"before the fault " * 64


def _ends_promptly(s, timeout=8):
    closed, _ = closed_by_peer(s, timeout)
    s.close()
    return closed


def _inbound_client(pki, port):
    return tls_connect(client_ctx(pki, "client"), LOOP, port)


def _outbound_client(port):
    s = socket.create_connection((LOOP, port), timeout=10)
    s.settimeout(10)
    return s


def _healthy(connect):
    s = connect()
    try:
        return echo_roundtrip(s, b"still serving") == b"still serving"
    finally:
        s.close()


@pytest.mark.parametrize("direction", ["inbound", "outbound"])
def test_upstream_refuses(pki, procs, direction):
    target = free_port_str()  # nothing listens there
    if direction == "inbound":
        t = start_tunnel(procs, "inbound", target, pki, extra=["--connect-timeout", "3s"])
        for _ in range(3):
            s = _inbound_client(pki, t.port)
            assert _ends_promptly(s)
    else:
        t = start_tunnel(procs, "outbound", target, pki, extra=["--connect-timeout", "3s"])
        for _ in range(3):
            assert _ends_promptly(_outbound_client(t.port))
    assert t.proc.alive()


def test_inbound_app_faults(pki, procs):
    app = FakeUpstream()
    procs.items.append(app)
    t = start_tunnel(procs, "inbound", app.target, pki)

    def connect():
        return _inbound_client(pki, t.port)

    # Reset at accept: the client's TLS connection is closed, nothing else.
    app.push("rst_accept")
    s = connect()
    s.sendall(MSG)
    assert _ends_promptly(s)
    assert _healthy(connect)

    # Half-close at accept: the client sees the end of the app's data, yet what
    # it sends afterwards still reaches the app (TCP half-close carried over TLS).
    app.push("fin_accept")
    s = connect()
    closed, got = closed_by_peer(s, 8)
    assert closed and got == b""
    s.sendall(MSG)
    s.close()
    wait_for(lambda: MSG in app.received_after_fin, 8, what="bytes sent after the app's FIN")
    assert _healthy(connect)

    # Reset mid-stream: the first exchange is intact, then the connection ends.
    app.push("rst_mid")
    s = connect()
    assert echo_roundtrip(s, MSG) == MSG
    assert _ends_promptly(s)
    assert _healthy(connect)

    # Half-close mid-stream: the reply, then EOF; the client's later bytes reach the app.
    app.push("fin_mid")
    s = connect()
    assert echo_roundtrip(s, MSG) == MSG
    closed, got = closed_by_peer(s, 8)
    assert closed and got == b""
    s.sendall(b"after fin")
    s.close()
    wait_for(lambda: b"after fin" in app.received_after_fin, 8,
             what="bytes sent after the app's FIN mid-stream")
    assert _healthy(connect)
    assert t.proc.alive()


def test_outbound_peer_faults(pki, procs):
    peer = FakeUpstream(pki, tls=True)
    procs.items.append(peer)
    t = start_tunnel(procs, "outbound", peer.target, pki, extra=["--handshake-timeout", "5s"])

    def connect():
        return _outbound_client(t.port)

    # Before and during the handshake: reset at accept, FIN at accept, reset
    # after the ClientHello. The app's connection ends; no byte comes back.
    for mode in ("rst_accept", "fin_accept", "rst_hello"):
        peer.push(mode)
        s = connect()
        s.sendall(MSG)
        closed, got = closed_by_peer(s, 8)
        s.close()
        assert closed and got == b"", mode
        assert _healthy(connect), mode

    # After the handshake: reset mid-stream, FIN (without close_notify) mid-stream.
    for mode in ("rst_mid", "fin_mid"):
        peer.push(mode)
        s = connect()
        assert echo_roundtrip(s, MSG) == MSG, mode
        assert _ends_promptly(s), mode
        assert _healthy(connect), mode

    # Each of the three early faults is logged, with a reason: a refused
    # handshake (log contract), or a failed upstream when the reset beat the
    # ClientHello's write.
    fails = events(t.proc, "tls.handshake_failed")
    assert all(e.get("reason") for e in fails), t.log()
    assert len(fails) + len(events(t.proc, "conn.upstream_failed")) >= 3, t.log()
    assert t.proc.alive()
