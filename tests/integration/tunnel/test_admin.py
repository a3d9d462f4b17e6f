"""Tunnel mode with --admin: the counters agree with what the tunnel did,
readiness, /certs without key material, POST /drain."""
import http.client
import json
import re

from seamtest import free_port, wait_for
from tunnelkit import (LOOP, SERVER_ID, Echo, client_ctx, closed_by_peer, echo_roundtrip,
                       hs_failures, sock_peer_str, start_tunnel, tls_connect)


def _http(port, method, path):
    c = http.client.HTTPConnection(LOOP, port, timeout=5)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        c.close()


def _metric(text, name, **labels):
    """Value of one sample (exact label set match) in Prometheus text, or None."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if got == {k: str(v) for k, v in labels.items()}:
            return float(m.group(4))
    return None


def test_admin_metrics_reflect_traffic(pki, procs):
    echo = Echo(procs)
    admin_port = free_port()
    in_t = start_tunnel(procs, "inbound", echo.target, pki,
                        extra=["--admin", f"{LOOP}:{admin_port}"])
    st, body = _http(admin_port, "GET", "/healthz/ready")
    assert st == 200, body

    good = tls_connect(client_ctx(pki, "client"), LOOP, in_t.port)
    assert echo_roundtrip(good, b"12345") == b"12345"
    good.close()
    bad = tls_connect(client_ctx(pki, "denied"), LOOP, in_t.port)
    peer = sock_peer_str(bad)
    try:
        bad.sendall(b"x")
    except OSError:
        pass
    assert closed_by_peer(bad, 5)[0]
    bad.close()
    wait_for(lambda: hs_failures(in_t.proc, peer), 5, what="refusal logged")

    def scraped():
        st, text = _http(admin_port, "GET", "/metrics")
        assert st == 200
        return text

    def settled():
        t = scraped()
        closed = _metric(t, "seam_connections_closed_total", direction="inbound", mode="mtls")
        active = _metric(t, "seam_connections_active", direction="inbound", mode="mtls")
        return t if closed is not None and closed >= 1 and active == 0 else None

    text = wait_for(settled, 10, what="the connections counted as closed")
    assert _metric(text, "seam_tls_handshake_failures_total", direction="inbound",
                   reason="not_allowed") == 1
    assert _metric(text, "seam_tls_handshake_failures_total", direction="inbound",
                   reason="expired") == 0
    assert _metric(text, "seam_received_bytes_total", direction="inbound") == 5
    assert _metric(text, "seam_sent_bytes_total", direction="inbound") == 5

    st, certs = _http(admin_port, "GET", "/certs")
    assert st == 200
    assert SERVER_ID in certs
    json.loads(certs)
    assert "PRIVATE" not in certs and "BEGIN" not in certs


def test_admin_post_drain(pki, procs):
    """POST /drain from loopback: not ready, listener closed, exit 0."""
    echo = Echo(procs)
    admin_port = free_port()
    out_t = start_tunnel(procs, "outbound", echo.target, pki,
                         extra=["--admin", f"{LOOP}:{admin_port}"], peer_id=SERVER_ID)
    st, _ = _http(admin_port, "POST", "/drain")
    assert st == 200
    # No open connection: the drain completes at once and the process exits 0.
    rc = out_t.proc.p.wait(10)
    assert rc == 0, out_t.log()
    assert "sidecar.ready" in out_t.log()
