"""Bad-certificate matrix, outbound side (issue 2 "What must be shown" #3).

`tunnel outbound --peer-id spiffe://cluster.local/ns/default/sa/server` in
front of an `openssl s_server` that presents each kind of bad server
certificate (or speaks TLS 1.2, or plain text). The outbound tunnel refuses:
the app's connection is closed within 5 s, the server never sees the app's
bytes, and the sidecar logs exactly one
`tls.handshake_failed dir=outbound reason=<specific> peer=<server addr>`.
"""
import pytest

from seamtest import wait_for
from tunnelkit import (SERVER_ID, OneConnServer, closed_by_peer, hs_failures, start_s_server,
                       start_tunnel)

# (case id, server cert, s_server protocol flag, reason, logged peer_id or None = don't check)
CASES = [
    ("unrelated_ca", "rogue", "-tls1_3", "unknown_ca", None),
    ("expired", "expired", "-tls1_3", "expired", None),
    ("not_yet_valid", "notyet", "-tls1_3", "not_yet_valid", None),
    ("two_uri_sans", "twouri", "-tls1_3", "bad_svid", None),
    ("ca_true_leaf", "caleaf", "-tls1_3", "bad_svid", None),
    ("key_cert_sign_leaf", "kcs", "-tls1_3", "bad_svid", None),
    ("no_uri_san", "nouri", "-tls1_3", "bad_svid", None),
    ("wrong_server_id", "client", "-tls1_3", "spiffe_id_mismatch",
     "spiffe://cluster.local/ns/default/sa/client"),
    ("denied_id", "denied", "-tls1_3", "spiffe_id_mismatch",
     "spiffe://cluster.local/ns/evil/sa/mallory"),
    ("other_trust_domain", "othertd", "-tls1_3", "spiffe_id_mismatch",
     "spiffe://other.org/ns/default/sa/client"),
    ("tls12_server", "server", "-tls1_2", "protocol_version", None),
]

SECRET = b"SECRET-APP-DATA-must-not-reach-the-server"


def _refused(out_t, upstream_peer):
    s = out_t.connect()
    try:
        s.sendall(SECRET)
    except OSError:
        pass
    closed, got = closed_by_peer(s, 5)
    s.close()
    assert closed, "the outbound tunnel left the app's connection open after a refused handshake"
    assert got == b""
    return wait_for(lambda: hs_failures(out_t.proc, upstream_peer), 5,
                    what=f"tls.handshake_failed for {upstream_peer}")


@pytest.mark.parametrize("case,cert,proto,reason,peer_id", CASES, ids=[c[0] for c in CASES])
def test_outbound_refuses(pki, procs, case, cert, proto, reason, peer_id):
    srv = start_s_server(procs, pki, cert, tls=proto)
    out_t = start_tunnel(procs, "outbound", srv.target, pki, peer_id=SERVER_ID)
    fails = _refused(out_t, srv.target)
    f = fails[0]
    assert f["dir"] == "outbound", f["line"]
    assert f["reason"] == reason, f["line"]
    if peer_id is not None:
        assert f["peer_id"] == peer_id, f["line"]
    assert SECRET.decode() not in srv.new_output()
    assert len(hs_failures(out_t.proc)) == 1, hs_failures(out_t.proc)


def test_outbound_plain_text_server(pki, procs):
    """A server that answers the ClientHello with plain text: not_tls."""
    received = bytearray()

    def serve(c):
        c.settimeout(5)
        received.extend(c.recv(65536))
        c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        while True:
            d = c.recv(65536)
            if not d:
                break
            received.extend(d)

    srv = OneConnServer(serve, accept_timeout=15)
    try:
        out_t = start_tunnel(procs, "outbound", srv.target, pki)
        f = _refused(out_t, srv.target)[0]
        assert f["dir"] == "outbound"
        assert f["reason"] == "not_tls", f["line"]
        srv.thread.join(10)
        assert SECRET not in bytes(received)
    finally:
        srv.close()
