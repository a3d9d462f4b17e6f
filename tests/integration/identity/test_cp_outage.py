"""The control plane goes away (issue 5).

- Down longer than a renewal interval but shorter than the certificate
  lifetime: renewals fail and are retried with backoff, traffic is
  unaffected (long-lived and new connections), readiness stays 200, and the
  renewal succeeds once the control plane is back.
- Down past expiry: new handshakes fail with a clear "certificate expired"
  log line, /healthz/ready answers 503, and both sides recover by themselves
  when the control plane returns.

The control plane signs with the gen.sh root (--ca-cert/--ca-key) so that a
restart keeps the root every sidecar trusts."""
import os
import signal
import time

import idkit
import seamtest


def renew_both_now(*tunnels):
    """SIGHUP makes each sidecar renew now; wait until each installed one."""
    before = [len(t.installed_serials()) for t in tunnels]
    for t in tunnels:
        t.proc.send_signal(signal.SIGHUP)
    for t, n in zip(tunnels, before):
        seamtest.wait_for(lambda t=t, n=n: len(t.installed_serials()) > n, 15,
                          what="a renewal after SIGHUP")


def test_outage_shorter_than_lifetime(procs, tmp_path, pki):
    cp = idkit.ControlPlane(procs, tmp_path, ttl="30s",
                            ca=(os.path.join(pki, "ca.pem"), os.path.join(pki, "ca.key")))
    app = idkit.EchoApp()
    try:
        tin, tout = idkit.tunnel_pair(procs, cp, app.port)
        tr = idkit.Traffic(tout.port, long_lived=10, new_conn_interval=0.1).start()
        renew_both_now(tin, tout)
        serials = (tin.serial(), tout.serial())
        cp.stop()
        t0 = time.monotonic()
        # 20 s down: past the renewal point (40-60 % of 30 s), inside the lifetime.
        while time.monotonic() - t0 < 20:
            assert tin.ready_status() == 200 and tout.ready_status() == 200
            assert idkit.connection_works(tout.port)
            time.sleep(1)
        for t in (tin, tout):
            assert "identity.renewal_failed" in t.proc.log(), "renewal must have been tried"
            assert "identity.cert_expired" not in t.proc.log()
        assert (tin.serial(), tout.serial()) == serials
        cp.start()
        # Retries are capped at a fifth of the lifetime (6 s): renewed well before expiry.
        seamtest.wait_for(lambda: tin.serial() != serials[0] and tout.serial() != serials[1], 9,
                          what="renewal after the control plane came back")
        tr.stop()
        print(f"\nCP-OUTAGE-SHORT {tr.summary()} failed_renewals_in="
              f"{tin.proc.log().count('identity.renewal_failed')} failed_renewals_out="
              f"{tout.proc.log().count('identity.renewal_failed')}")
        assert not tr.failures, "\n".join(tr.failures[:20])
        assert tr.long_done == 10
        for t in (tin, tout):
            assert t.ready_status() == 200
            assert "tls.handshake_failed" not in t.proc.log()
            m = t.metrics()
            assert idkit.metric(m, "seam_cert_renewals_total", 'result="rpc_failed"') >= 1
    finally:
        app.close()


def test_outage_past_expiry(procs, tmp_path, pki):
    cp = idkit.ControlPlane(procs, tmp_path, ttl="10s",
                            ca=(os.path.join(pki, "ca.pem"), os.path.join(pki, "ca.key")))
    app = idkit.EchoApp()
    try:
        tin, tout = idkit.tunnel_pair(procs, cp, app.port)
        assert idkit.connection_works(tout.port)
        renew_both_now(tin, tout)
        cp.stop()
        for t in (tin, tout):
            t.proc.wait_log("identity.cert_expired", timeout=15)
            seamtest.wait_for(lambda t=t: t.ready_status() == 503, 5, what="not ready")
            assert '"ready":false' in idkit.http_get(t.admin_port, "/certs")[1]
        # New handshakes fail, and say why.
        assert not idkit.connection_works(tout.port)
        seamtest.wait_for(lambda: "reason=expired" in tout.proc.log() + tin.proc.log(), 5,
                          what="a handshake refused for an expired certificate")
        line = next(ln for ln in (tout.proc.log() + tin.proc.log()).splitlines()
                    if "tls.handshake_failed" in ln and "reason=expired" in ln)
        print(f"\nCP-OUTAGE-EXPIRED log: {line}")
        assert "certificate has expired" in line or "expired" in line.split("detail=")[1]
        cp.start()
        for t in (tin, tout):
            seamtest.wait_for(lambda t=t: t.ready_status() == 200, 15, what="ready again")
        seamtest.wait_for(lambda: idkit.connection_works(tout.port), 10,
                          what="traffic again after recovery")
        for t in (tin, tout):
            m = t.metrics()
            assert idkit.metric(m, "seam_cert_renewals_total", 'result="rpc_failed"') >= 1
    finally:
        app.close()
