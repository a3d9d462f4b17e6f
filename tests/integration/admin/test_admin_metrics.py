"""Metric values through a real tunnel pair (issue 7 "What must be shown").

outbound tunnel (--admin A) -> inbound tunnel (--admin B) -> echo app.
N connections through the proxy: the counters say N on both sides, the byte
counters match what was sent, the handshake histogram is consistent, and
`promtool check metrics` accepts both expositions.
"""
import socket
import time

from adminkit import Admin, promtool_check, start_with_admin, val, wait_for
from seamtest import free_port
from tunnelkit import CLIENT_ID, LOOP, SERVER_ID, Echo, addr, echo_roundtrip, start_tunnel

N = 5


def _pair(procs, pki):
    echo = Echo(procs)
    in_t, in_a = start_with_admin(procs, "inbound", echo.target, pki)
    out_t, out_a = start_with_admin(procs, "outbound", addr(LOOP, in_t.port), pki)
    return echo, in_t, in_a, out_t, out_a


def test_counts_bytes_and_promtool(pki, procs):
    echo, in_t, in_a, out_t, out_a = _pair(procs, pki)
    sent = 0
    for i in range(N):
        s = out_t.connect()
        msg = b"x" * (1000 + i)
        assert echo_roundtrip(s, msg) == msg
        sent += len(msg)
        s.shutdown(socket.SHUT_WR)
        assert s.recv(1) == b""
        s.close()

    def closed_on_both():
        o = out_a.metrics()
        i = in_a.metrics()
        return (val(o, "seam_connections_closed_total", direction="outbound", mode="mtls") == N and
                val(i, "seam_connections_closed_total", direction="inbound", mode="mtls") == N)
    wait_for(closed_on_both, 10, what="both sidecars to count N closed connections")

    o = out_a.metrics()
    i = in_a.metrics()
    assert val(o, "seam_connections_opened_total", direction="outbound", mode="mtls") == N
    assert val(o, "seam_connections_active", direction="outbound", mode="mtls") == 0
    assert val(o, "seam_connections_opened_total", direction="inbound", mode="mtls") == 0
    assert val(i, "seam_connections_opened_total", direction="inbound", mode="mtls") == N
    assert val(i, "seam_connections_opened_total", direction="outbound", mode="mtls") == 0
    # Bytes from / to the downstream side: the app echoes everything back.
    assert val(o, "seam_received_bytes_total", direction="outbound") == sent
    assert val(o, "seam_sent_bytes_total", direction="outbound") == sent
    assert val(i, "seam_received_bytes_total", direction="inbound") == sent
    assert val(i, "seam_sent_bytes_total", direction="inbound") == sent
    assert echo.stats()["bytes"] == sent
    # Inbound authorised each peer; no handshake failed anywhere.
    assert val(i, "seam_authz_decisions_total", result="allow") == N
    assert val(i, "seam_authz_decisions_total", result="deny") == 0
    for m in (o, i):
        fails = sum(v for (name, _), v in m.items() if name == "seam_tls_handshake_failures_total")
        assert fails == 0
    # Histogram: +Inf bucket == _count == handshakes done (one per connection).
    for m in (o, i):
        inf = val(m, "seam_tls_handshake_duration_seconds_bucket", le="+Inf")
        assert inf == val(m, "seam_tls_handshake_duration_seconds_count") == N
        assert 0 < val(m, "seam_tls_handshake_duration_seconds_sum") < 5 * N
    assert val(o, "seam_build_info", version=_version(o)) == 1
    assert val(o, "seam_process_resident_memory_bytes") > 1_000_000
    assert val(o, "seam_process_open_fds") > 3

    for a in (out_a, in_a):
        rc, out = promtool_check(a.metrics_text())
        assert rc == 0, out


def _version(m):
    for (name, labels), _ in m.items():
        if name == "seam_build_info":
            return dict(labels)["version"]
    raise AssertionError("no seam_build_info")


def test_health_and_certs(pki, procs):
    echo, in_t, in_a, out_t, out_a = _pair(procs, pki)
    for a in (in_a, out_a):
        assert a.get("/healthz/ready")[0] == 200
        assert a.get("/healthz/live")[0] == 200
    c = in_a.json("/certs")
    assert c["leaf"]["spiffe_id"] == SERVER_ID
    assert c["leaf"]["not_after_unix"] > time.time()
    assert c["leaf"]["not_before_unix"] <= time.time()
    assert len(c["roots"]) >= 1
    body = in_a.get("/certs")[2]
    assert b"PRIVATE KEY" not in body and b"BEGIN" not in body
    assert out_a.json("/certs")["leaf"]["spiffe_id"] == CLIENT_ID
    m = in_a.metrics()
    exp = val(m, "seam_cert_expiry_timestamp_seconds", role="leaf", spiffe_id=SERVER_ID)
    assert exp == c["leaf"]["not_after_unix"]
    assert exp > time.time()
    # /config answers JSON in tunnel mode too.
    in_a.json("/config")
    # The failure log is empty so far.
    assert in_a.json("/debug/tls-failures")["failures"] == []


def test_expired_leaf_not_ready(pki, procs):
    """Readiness needs a valid certificate: a sidecar given an expired leaf is not ready
    (if it starts at all)."""
    echo = Echo(procs)
    port = free_port()
    t = start_tunnel(
        procs, "inbound", echo.target, pki, cert="expired",
        extra=["--admin", f"{LOOP}:{port}"], wait_ready=False)
    a = Admin(LOOP, port)

    def answered_or_exited():
        if not t.proc.alive():
            return "exited"
        try:
            return a.get("/healthz/ready")[0]
        except OSError:
            return None
    r = wait_for(answered_or_exited, 10, what="ready answer or exit")
    assert r in ("exited", 503), r


def test_upstream_failure_counted(pki, procs):
    """An outbound connection whose upstream refuses the TCP connect counts as
    failed (and closed), not as active."""
    dead = free_port()  # nothing listens here
    out_t, a = start_with_admin(procs, "outbound", addr(LOOP, dead), pki)
    s = out_t.connect()
    try:
        s.sendall(b"hello")
    except OSError:
        pass
    s.settimeout(5)
    try:
        assert s.recv(1) == b""
    except ConnectionResetError:
        pass
    s.close()

    def settled():
        m = a.metrics()
        return (val(m, "seam_connections_failed_total", direction="outbound", mode="mtls") == 1 and
                val(m, "seam_connections_active", direction="outbound", mode="mtls") == 0)
    wait_for(settled, 5, what="failed=1 and active=0")
    m = a.metrics()
    assert val(m, "seam_connections_opened_total", direction="outbound", mode="mtls") == 1
    assert val(m, "seam_tls_handshake_duration_seconds_count") == 0
