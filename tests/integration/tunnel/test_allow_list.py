"""Allow-list and SPIFFE ID checks over the wire (inbound), with leaves
minted for IDs the shared PKI does not have: prefix boundaries, several
--allow flags, and malformed SPIFFE IDs (bad_svid)."""
import socket
import ssl

import pytest

from seamtest import wait_for
from tunnelkit import (LOOP, Echo, echo_roundtrip, hs_failures, mint_leaf,
                       sock_peer_str, start_tunnel)

SECRET = b"SECRET-must-not-reach-the-app"


def _ctx(pki, base):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.load_verify_locations(f"{pki}/ca.pem")
    c.load_cert_chain(base + ".pem", base + ".key")
    c.minimum_version = ssl.TLSVersion.TLSv1_3
    return c


def _try(pki, base, port):
    """Returns (accepted, peer string)."""
    raw = socket.create_connection((LOOP, port), timeout=10)
    peer = sock_peer_str(raw)
    try:
        s = _ctx(pki, base).wrap_socket(raw)
    except (ssl.SSLError, OSError):
        raw.close()
        return False, peer
    try:
        return echo_roundtrip(s, b"ok", 5) == b"ok", peer
    except (ssl.SSLError, OSError, TimeoutError, ConnectionError):
        return False, peer
    finally:
        s.close()


PREFIX_CASES = [
    # (id, uri, accepted, reason if refused)
    ("deeper_path", "spiffe://cluster.local/ns/default/sa/a/b", True, None),
    ("sibling_prefix", "spiffe://cluster.local/ns/defaultx/sa/a", False, "not_allowed"),
    ("prefix_itself", "spiffe://cluster.local/ns/default", False, "not_allowed"),
    ("other_td_same_path", "spiffe://cluster.localx/ns/default/sa/a", False, "not_allowed"),
    ("dot_dot_segment", "spiffe://cluster.local/ns/default/sa/..", False, "bad_svid"),
    ("trailing_slash", "spiffe://cluster.local/ns/default/sa/x/", False, "bad_svid"),
    ("query", "spiffe://cluster.local/ns/default/sa/x?q=1", False, "bad_svid"),
    ("percent_encoded", "spiffe://cluster.local/ns/default/sa/%41", False, "bad_svid"),
    ("not_spiffe_scheme", "https://cluster.local/ns/default/sa/x", False, "bad_svid"),
]


@pytest.mark.parametrize("case,uri,accepted,reason", PREFIX_CASES, ids=[c[0] for c in PREFIX_CASES])
def test_prefix_allow_list(pki, procs, tmp_path, case, uri, accepted, reason):
    base = mint_leaf(pki, str(tmp_path), case, uri)
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki,
                        allow=["spiffe://cluster.local/ns/default/*"])
    ok, peer = _try(pki, base, in_t.port)
    assert ok == accepted, f"{uri}: accepted={ok}\n{in_t.log()}"
    if accepted:
        assert not hs_failures(in_t.proc)
        return
    f = wait_for(lambda: hs_failures(in_t.proc, peer), 5, what="refusal log")[0]
    assert f["reason"] == reason, f["line"]
    assert echo.stats()["bytes"] == 0


def test_several_allow_flags(pki, procs, tmp_path):
    """--allow repeated: an exact ID and a prefix of another trust domain; anything else refused."""
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki,
                        allow=["spiffe://cluster.local/ns/evil/sa/mallory", "spiffe://other.org/*"])
    assert _try(pki, f"{pki}/denied", in_t.port)[0]        # the exact ID
    assert _try(pki, f"{pki}/othertd", in_t.port)[0]       # under the prefix
    ok, peer = _try(pki, f"{pki}/client", in_t.port)       # neither
    assert not ok
    f = wait_for(lambda: hs_failures(in_t.proc, peer), 5, what="refusal log")[0]
    assert f["reason"] == "not_allowed"
    assert f["peer_id"] == "spiffe://cluster.local/ns/default/sa/client"


def test_allow_list_from_env_comma_separated(pki, procs):
    """SEAM_ALLOW="a,b" (list flags from the environment are comma-separated)."""
    from seamtest import free_port
    from tunnelkit import addr, tunnel_args
    echo = Echo(procs)
    port = free_port()
    args = tunnel_args("inbound", addr(LOOP, port), echo.target, pki, "server",
                       extra=["--drain-timeout", "5s"])
    env = {"SEAM_ALLOW": "spiffe://cluster.local/ns/evil/sa/mallory,spiffe://other.org/*"}
    in_t = start_tunnel(procs, "inbound", echo.target, pki, args=args, port=port, env=env)
    assert _try(pki, f"{pki}/denied", in_t.port)[0]
    assert _try(pki, f"{pki}/othertd", in_t.port)[0]
    assert not _try(pki, f"{pki}/client", in_t.port)[0]
