"""Tunnel flags of the control-plane identity source: every bad combination
gets one clear message on stderr and exit code 2; SEAM_* environment
variables work like the flags; SIGTERM while still waiting for the first
certificate (control plane unreachable) exits 0 promptly; readiness waits
for the first certificate."""
import os
import signal
import subprocess
import time

import idkit
import seamtest

ID = idkit.ID_IN


def base(tmp, cp_port=1):
    tok = os.path.join(str(tmp), "tok")
    with open(tok, "w") as f:
        f.write("tok-in\n")
    trust = os.path.join(str(tmp), "trust.pem")
    if not os.path.exists(trust):
        subprocess.run(["bash", os.path.join(seamtest.SOURCE_DIR, "tests/certs/gen.sh"),
                        os.path.join(str(tmp), "pki")], check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(str(tmp), "pki", "ca.pem"), "rb") as f, open(trust, "wb") as g:
            g.write(f.read())
    return [seamtest.binary("seam-sidecar"), "tunnel", "inbound",
            "--listen", f"127.0.0.1:{seamtest.free_port()}", "--target", "127.0.0.1:9",
            "--allow", "spiffe://cluster.local/ns/default/*",
            "--control-plane", f"127.0.0.1:{cp_port}", "--control-plane-trust", trust,
            "--token-file", tok, "--spiffe-id", ID]


def drop(args, flag):
    i = args.index(flag)
    return args[:i] + args[i + 2:]


CASES = [
    ("no_cp_trust", lambda a: drop(a, "--control-plane-trust"), "control-plane-trust"),
    ("no_token", lambda a: drop(a, "--token-file"), "token-file"),
    ("no_identity", lambda a: drop(a, "--spiffe-id"), "spiffe-id"),
    ("both_identities", lambda a: a + ["--trust-domain", "cluster.local"], "not both"),
    ("partial_identity", lambda a: drop(a, "--spiffe-id") + ["--namespace", "default"],
     "go together"),
    ("bad_spiffe_id", lambda a: drop(a, "--spiffe-id") + ["--spiffe-id", "http://x/y"],
     "http://x/y"),
    ("cert_and_cp", lambda a: a + ["--cert", "c.pem", "--key", "k.pem"], "exclude"),
    ("cp_flag_without_cp", lambda a: drop(a, "--control-plane"), "need --control-plane"),
    ("bad_ttl", lambda a: a + ["--cert-ttl", "10 parsecs"], "cert-ttl"),
    ("short_ttl", lambda a: a + ["--cert-ttl", "500ms"], "cert-ttl"),
    ("bad_max_age", lambda a: a + ["--max-connection-age", "soon"], "max-connection-age"),
    ("missing_trust_file", lambda a: a + ["--trust", "/nonexistent/bundle.pem"],
     "/nonexistent/bundle.pem"),
]


def test_bad_flags(tmp_path):
    for name, tf, word in CASES:
        r = subprocess.run(tf(base(tmp_path)), capture_output=True, timeout=20)
        err = r.stderr.decode(errors="replace")
        assert r.returncode == 2, f"{name}: exit {r.returncode}: {err}"
        assert word in err, f"{name}: message does not name {word!r}: {err}"
        assert "sidecar.ready" not in err


def test_sigterm_while_waiting_for_first_certificate(procs, tmp_path):
    admin = seamtest.free_port()
    p = procs.start(base(tmp_path, cp_port=seamtest.free_port()) + ["--admin", f"127.0.0.1:{admin}"],
                    log_path=os.path.join(str(tmp_path), "wait.log"))
    p.wait_log("identity.renewal_failed", timeout=15)
    assert "sidecar.ready" not in p.log()
    # Not ready: the admin port (like the listener) opens with the first certificate.
    assert not seamtest.port_open("127.0.0.1", admin)
    t0 = time.monotonic()
    assert p.stop(signal.SIGTERM, timeout=10) == 0
    assert time.monotonic() - t0 < 5
    with open(p.log_path, errors="replace") as f:
        assert "before_first_certificate=true" in f.read()


def test_env_flags_and_readiness(procs, tmp_path):
    cp = idkit.ControlPlane(procs, tmp_path, ttl="10s")
    app = idkit.EchoApp()
    try:
        port, admin = seamtest.free_port(), seamtest.free_port()
        env = {"SEAM_CONTROL_PLANE": f"127.0.0.1:{cp.port}", "SEAM_CONTROL_PLANE_TRUST": cp.root,
               "SEAM_TOKEN_FILE": cp.token_files["in"], "SEAM_TRUST_DOMAIN": "cluster.local",
               "SEAM_NAMESPACE": "default", "SEAM_SERVICE_ACCOUNT": "in",
               "SEAM_CERT_TTL": "10s", "SEAM_ADMIN": f"127.0.0.1:{admin}"}
        p = procs.start([seamtest.binary("seam-sidecar"), "tunnel", "inbound",
                         "--listen", f"127.0.0.1:{port}", "--target", f"127.0.0.1:{app.port}",
                         "--allow", "spiffe://cluster.local/ns/default/*"], env=env,
                        log_path=os.path.join(str(tmp_path), "env.log"))
        p.wait_log("sidecar.ready", timeout=20)
        st, body = idkit.http_get(admin, "/healthz/ready")
        assert st == 200, body
        st, body = idkit.http_get(admin, "/certs")
        assert f'"spiffe_id":"{ID}"' in body and '"source":"control-plane"' in body
        assert "PRIVATE" not in body
        m = idkit.http_get(admin, "/metrics")[1]
        assert idkit.metric(m, "seam_cert_expiry_timestamp_seconds",
                            f'role="leaf",spiffe_id="{ID}"') > time.time()
        assert idkit.metric(m, "seam_trust_bundle_roots") == 1
    finally:
        app.close()
