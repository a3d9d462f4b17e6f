"""A real Prometheus server (Debian `prometheus`), started on loopback by the
test, scrapes a running sidecar; PromQL through its HTTP API returns the
expected connection count and a certificate expiry in the future."""
import json
import shutil
import socket
import urllib.parse
import urllib.request

import pytest

from adminkit import start_with_admin, wait_for
from seamtest import free_port
from tunnelkit import LOOP, SERVER_ID, Echo, addr, echo_roundtrip

N = 4


def _query(port, q):
    url = f"http://{LOOP}:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    with urllib.request.urlopen(url, timeout=5) as r:
        d = json.load(r)
    assert d["status"] == "success", d
    return d["data"]["result"]


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian prometheus not installed")
def test_prometheus_scrapes_sidecar(pki, procs, tmp_path):
    echo = Echo(procs)
    in_t, in_a = start_with_admin(procs, "inbound", echo.target, pki)
    out_t, out_a = start_with_admin(procs, "outbound", addr(LOOP, in_t.port), pki)
    for i in range(N):
        s = out_t.connect()
        assert echo_roundtrip(s, b"hello") == b"hello"
        s.shutdown(socket.SHUT_WR)
        s.recv(1)
        s.close()

    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        "  - job_name: seam\n"
        f"    static_configs:\n      - targets: ['{in_a.addr}', '{out_a.addr}']\n")
    port = free_port()
    prom = procs.start(["prometheus", f"--config.file={cfg}",
                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                        f"--web.listen-address={LOOP}:{port}"], cwd=str(tmp_path))
    wait_for(lambda: prom.alive() and "Server is ready to receive web requests" in prom.log(), 30,
             what="prometheus ready")

    def targets_up():
        r = _query(port, 'up{job="seam"}')
        return len(r) == 2 and all(x["value"][1] == "1" for x in r)
    wait_for(targets_up, 30, interval=0.5, what="both sidecars scraped and up")

    def opened():
        r = _query(port, 'sum(seam_connections_opened_total{direction="outbound"})')
        return r and float(r[0]["value"][1]) == N
    wait_for(opened, 20, interval=0.5, what=f"PromQL to see {N} outbound connections")
    r = _query(port, 'sum(seam_connections_opened_total{direction="inbound",mode="mtls"})')
    assert float(r[0]["value"][1]) == N

    r = _query(port, f'seam_cert_expiry_timestamp_seconds{{role="leaf",spiffe_id="{SERVER_ID}"}}'
                     ' - time()')
    assert len(r) == 1, r
    assert float(r[0]["value"][1]) > 0, "certificate expiry is not in the future"
    r = _query(port, 'seam_build_info')
    assert len(r) == 2
    # No scrape produced a parse/lint problem on Prometheus' side.
    r = _query(port, 'scrape_samples_scraped{job="seam"}')
    assert all(float(x["value"][1]) > 50 for x in r), r
    assert prom.alive()
