"""seam's own control-client (seam-sidecar certify / config-watch) against
seam-control-plane: certify, the config stream with a mesh change pushed to
a connected client, and a NACKed version counted in /metrics (issue 4)."""
import hashlib
import os
import subprocess

import pytest

import seamtest
from cphelp import ID_A, MESH, ConfigStream, ControlPlane


def sidecar():
    try:
        return seamtest.binary("seam-sidecar")
    except FileNotFoundError:
        pytest.skip("seam-sidecar is not built in this build tree")


def certify(cp, tok_file, *extra):
    return subprocess.run([sidecar(), "certify", "--control-plane", f"127.0.0.1:{cp.port}",
                           "--control-plane-trust", cp.root, "--token-file", tok_file, *extra],
                          capture_output=True, text=True, timeout=30)


def test_certify(procs, tmp_path):
    cp = ControlPlane(procs, tmp_path)
    tok = tmp_path / "tok"
    tok.write_text("tok-a\n")
    r = certify(cp, str(tok), "--spiffe-id", ID_A, "--ttl", "60s")
    assert r.returncode == 0, r.stderr
    assert f"spiffe_id: {ID_A}" in r.stdout
    r = certify(cp, str(tok), "--trust-domain", "cluster.local", "--namespace", "default",
                "--service-account", "b")
    assert r.returncode != 0 and "PERMISSION_DENIED" in r.stderr
    tok.write_text("nope\n")
    r = certify(cp, str(tok), "--spiffe-id", ID_A)
    assert r.returncode != 0 and "UNAUTHENTICATED" in r.stderr


def expected_version(seq, snapshot):
    """The server's version string for |snapshot|: "<seq>-<sha256[:4] hex>"."""
    return f"{seq}-" + hashlib.sha256(snapshot.SerializeToString()).hexdigest()[:8]


def test_config_watch_push_and_nack(procs, tmp_path):
    cp = ControlPlane(procs, tmp_path)
    # Learn snapshot 1 with grpcio to predict the version of the change.
    probe = ConfigStream(cp.channel(), "probe")
    r1 = probe.next()
    assert expected_version(1, r1.snapshot) == r1.version_info
    changed = type(r1.snapshot)()
    changed.CopyFrom(r1.snapshot)
    changed.cert_ttl_seconds = 600
    v2 = expected_version(2, changed)
    tok = tmp_path / "tok"
    tok.write_text("tok-a\n")
    w = procs.start([sidecar(), "config-watch", "--control-plane", f"127.0.0.1:{cp.port}",
                     "--control-plane-trust", cp.root, "--token-file", str(tok),
                     "--spiffe-id", ID_A, "--reject-version", v2, "--log-level", "info"])
    w.wait_log(f"ACK version={r1.version_info}", timeout=15)
    with open(cp.mesh + ".new", "w") as f:
        f.write(MESH.replace("cert_ttl: 30m", "cert_ttl: 10m"))
    os.replace(cp.mesh + ".new", cp.mesh)
    assert probe.next(timeout=15).version_info == v2
    w.wait_log(f"NACK version={v2}", timeout=15)
    cp.proc.wait_log("cp.config_nack", timeout=15)
    seamtest.wait_for(lambda: cp.metric("seam_cp_config_nacks_total") == 1, 10, what="nack")
    m = cp.metrics()
    assert f'node="{ID_A}"' in m and f'nacked="{v2}"' in m and f'acked="{r1.version_info}"' in m
    probe.close()
