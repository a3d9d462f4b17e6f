"""Each handshake-failure reason from the bad-cert matrix increments its own
label of seam_tls_handshake_failures_total, and /debug/tls-failures shows it
with the peer address and (when known) the peer SPIFFE ID."""
import socket
import ssl

from adminkit import start_with_admin, val, wait_for
from tunnelkit import (LOOP, Echo, client_ctx, closed_by_peer, echo_roundtrip, sock_peer_str,
                       tls_connect)

# (client cert or None, TLS 1.2?, plain text?, expected reason, expected peer_id or None)
CASES = [
    (None, False, False, "no_peer_cert", None),
    ("rogue", False, False, "unknown_ca", None),
    ("expired", False, False, "expired", None),
    ("notyet", False, False, "not_yet_valid", None),
    ("twouri", False, False, "bad_svid", None),
    ("denied", False, False, "not_allowed", "spiffe://cluster.local/ns/evil/sa/mallory"),
    ("client", True, False, "protocol_version", None),
    (None, False, True, "not_tls", None),
]


def _attempt(pki, port, cert, tls12, plain):
    raw = socket.create_connection((LOOP, port), timeout=10)
    peer = sock_peer_str(raw)
    if plain:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        closed_by_peer(raw, 5)
        raw.close()
        return peer
    try:
        s = client_ctx(pki, cert, tls12=tls12).wrap_socket(raw)
    except (ssl.SSLError, OSError):
        raw.close()
        return peer
    try:
        s.sendall(b"data")
    except (ssl.SSLError, OSError):
        pass
    closed_by_peer(s, 5)
    s.close()
    return peer


def test_each_reason_has_its_label(pki, procs):
    echo = Echo(procs)
    in_t, a = start_with_admin(procs, "inbound", echo.target, pki)
    expected = {}
    peers = []
    for cert, tls12, plain, reason, peer_id in CASES:
        before = val(a.metrics(), "seam_tls_handshake_failures_total", direction="inbound",
                     reason=reason)
        peer = _attempt(pki, in_t.port, cert, tls12, plain)
        peers.append((peer, reason, peer_id))
        expected[reason] = expected.get(reason, 0) + 1
        wait_for(lambda: val(a.metrics(), "seam_tls_handshake_failures_total",
                             direction="inbound", reason=reason) == before + 1,
                 5, what=f"{reason} counter to increment")

    m = a.metrics()
    for reason, n in expected.items():
        assert val(m, "seam_tls_handshake_failures_total", direction="inbound", reason=reason) == n
    total = sum(v for (name, labels), v in m.items()
                if name == "seam_tls_handshake_failures_total")
    assert total == len(CASES), "a failure was counted under more than one reason"
    # authz deny counted for the not-allowed ID.
    assert val(m, "seam_authz_decisions_total", result="deny") >= 1

    dbg = a.json("/debug/tls-failures")
    assert dbg["total"] == len(CASES)
    by_peer = {f["peer"]: f for f in dbg["failures"]}
    for peer, reason, peer_id in peers:
        assert peer in by_peer, (peer, dbg)
        f = by_peer[peer]
        assert f["reason"] == reason and f["direction"] == "inbound", f
        if peer_id is not None:
            assert f["peer_id"] == peer_id, f
        assert f["time"].endswith("Z")

    # Still serving good clients.
    s = tls_connect(client_ctx(pki, "client"), LOOP, in_t.port)
    assert echo_roundtrip(s, b"ok") == b"ok"
    s.close()
