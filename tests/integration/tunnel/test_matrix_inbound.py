"""Bad-certificate matrix, inbound side (issue 2 "What must be shown" #3).

A client with each kind of bad credential connects to `tunnel inbound` (allow
list spiffe://cluster.local/ns/default/*) in front of the echo app. Each is
refused; the app receives no byte; the sidecar logs exactly one
`tls.handshake_failed dir=inbound reason=<specific> peer=<client addr>`; and a
good client still gets through right after.
"""
import socket
import ssl

import pytest

from seamtest import wait_for
from tunnelkit import (CLIENT_ID, LOOP, Echo, client_ctx, closed_by_peer, echo_roundtrip,
                       hs_failures, sock_peer_str, start_tunnel, tls_connect)

# (case id, client cert name or None, TLS 1.2 only?, plain text?, reason, logged peer_id)
CASES = [
    ("no_client_cert", None, False, False, "no_peer_cert", "-"),
    ("unrelated_ca", "rogue", False, False, "unknown_ca", None),
    ("expired", "expired", False, False, "expired", None),
    ("not_yet_valid", "notyet", False, False, "not_yet_valid", None),
    ("two_uri_sans", "twouri", False, False, "bad_svid", None),
    ("ca_true_leaf", "caleaf", False, False, "bad_svid", None),
    ("key_cert_sign_leaf", "kcs", False, False, "bad_svid", None),
    ("no_uri_san", "nouri", False, False, "bad_svid", None),
    ("id_not_allowed", "denied", False, False, "not_allowed",
     "spiffe://cluster.local/ns/evil/sa/mallory"),
    ("other_trust_domain", "othertd", False, False, "not_allowed",
     "spiffe://other.org/ns/default/sa/client"),
    ("tls12_client", "client", True, False, "protocol_version", None),
    ("plain_text", None, False, True, "not_tls", "-"),
]

SECRET = b"SECRET-APP-DATA-must-not-reach-the-app"


@pytest.mark.parametrize("case,cert,tls12,plain,reason,peer_id", CASES, ids=[c[0] for c in CASES])
def test_inbound_refuses(pki, procs, case, cert, tls12, plain, reason, peer_id):
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki)

    raw = socket.create_connection((LOOP, in_t.port), timeout=10)
    peer = sock_peer_str(raw)
    if plain:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n" + SECRET)
        closed, got = closed_by_peer(raw, 5)
        sock = raw
    else:
        ctx = client_ctx(pki, cert, tls12=tls12)
        try:
            sock = ctx.wrap_socket(raw)
        except (ssl.SSLError, OSError):
            # Refused during the handshake (TLS 1.2, or an early alert).
            closed, got, sock = True, b"", raw
        else:
            # TLS 1.3: the client finishes first; the server's verdict on our
            # certificate arrives as an alert or a close afterwards.
            try:
                sock.sendall(SECRET)
            except (ssl.SSLError, OSError):
                pass
            closed, got = closed_by_peer(sock, 5)
    sock.close()
    assert closed, f"{case}: the inbound tunnel did not close the connection within 5 s"
    assert SECRET not in got

    fails = wait_for(lambda: hs_failures(in_t.proc, peer), 5,
                     what=f"tls.handshake_failed for {peer}")
    f = fails[0]
    assert f["dir"] == "inbound", f["line"]
    assert f["reason"] == reason, f["line"]
    if peer_id is not None:
        assert f["peer_id"] == peer_id, f["line"]

    # A good client right after: the sidecar still works, and the app's byte
    # count shows that the refused client delivered nothing.
    good = tls_connect(client_ctx(pki, "client"), LOOP, in_t.port)
    assert echo_roundtrip(good, b"good") == b"good"
    good.close()
    wait_for(lambda: echo.stats()["bytes"] == 4, 5, what="echo count")
    assert echo.stats()["bytes"] == 4, echo.stats()
    # Exactly one log line for the refused handshake (and none for the good one).
    assert len(hs_failures(in_t.proc, peer)) == 1, hs_failures(in_t.proc, peer)
    assert len(hs_failures(in_t.proc)) == 1, hs_failures(in_t.proc)


def test_inbound_exact_id_allow_list(pki, procs):
    """--allow with an exact ID admits that ID only (client2 has the same ID as
    client; denied does not match)."""
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki, allow=[CLIENT_ID])
    s = tls_connect(client_ctx(pki, "client2"), LOOP, in_t.port)
    assert echo_roundtrip(s, b"x") == b"x"
    s.close()
    s = tls_connect(client_ctx(pki, "denied"), LOOP, in_t.port)
    peer = sock_peer_str(s)
    try:
        s.sendall(SECRET)
    except (ssl.SSLError, OSError):
        pass
    closed, _ = closed_by_peer(s, 5)
    s.close()
    assert closed
    f = wait_for(lambda: hs_failures(in_t.proc, peer), 5, what="refusal log")[0]
    assert f["reason"] == "not_allowed"
    assert echo.stats()["bytes"] == 1
