"""README's first command (scripts/demo.sh), tunnel scenario, against the
binaries of this build: it must finish in time, exit 0, print the summary with
the peer SPIFFE IDs each side saw, TLS 1.3, bytes each way and one refused
handshake with its reason, and leave nothing behind."""
import os
import re
import subprocess

import seamtest

DEMO = os.path.join(seamtest.SOURCE_DIR, "scripts", "demo.sh")


def _run_demo(env_extra=None, timeout=60):
    env = dict(os.environ)
    env.update({"SEAM_DEMO_NO_BUILD": "1", "SEAM_BUILD_DIR": seamtest.BUILD_DIR,
                "SEAM_DEMO": "tunnel"})
    env.update(env_extra or {})
    return subprocess.run(["bash", DEMO], capture_output=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)


def _summary(out):
    s = out.split("== seam tunnel demo: what happened", 1)
    assert len(s) == 2, f"no summary in the demo output:\n{out}"
    fields = {}
    for line in s[1].splitlines():
        k, sep, v = line.partition(": ")
        if sep:
            fields[k.strip()] = v.strip()
    return fields


def test_demo_tunnel_summary():
    r = _run_demo()
    out = r.stdout.decode(errors="replace")
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 0, f"demo failed ({r.returncode}):\n{out}\n{err}"
    f = _summary(out)
    assert f["messages"] == "3 sent, 3 echoed intact"
    assert f["outbound tunnel saw peer"] == "spiffe://cluster.local/ns/default/sa/server"
    assert f["inbound tunnel saw peer"] == "spiffe://cluster.local/ns/default/sa/client"
    assert f["TLS version"] == "TLSv1.3"
    # Bytes each way: every message (a line) goes out and comes back intact.
    sent = sum(len(f"message {i} from the demo app\n") for i in (1, 2, 3))
    m = re.fullmatch(r"app->tunnel (\d+), tunnel->app (\d+)", f["outbound bytes"])
    assert m and int(m.group(1)) == sent and int(m.group(2)) == sent, f["outbound bytes"]
    m = re.fullmatch(r"tunnel->echo (\d+), echo->tunnel (\d+)", f["inbound bytes"])
    assert m and int(m.group(1)) == sent and int(m.group(2)) == sent, f["inbound bytes"]
    assert re.fullmatch(r"spiffe://cluster\.local/ns/evil/sa/mallory from 127\.0\.0\.1:\d+ "
                        r"reason=not_allowed", f["refused"]), f["refused"]
    assert out.rstrip().endswith("DEMO OK (tunnel mode)")
    # Its work dir (PKI with private keys, logs) is gone. (Other demo runs may
    # be going on in parallel: check this run's dir only.)
    m = re.search(r"^CA: (/tmp/seam-demo-tunnel\.[^/]+)/pki/ca\.pem", out, re.M)
    assert m, out
    assert not os.path.exists(m.group(1))


def test_demo_fails_clearly_without_binaries(tmp_path):
    r = _run_demo({"SEAM_BUILD_DIR": str(tmp_path)}, timeout=30)
    err = r.stderr.decode(errors="replace")
    assert r.returncode != 0
    assert "demo: FAILED" in err and "seam-sidecar" in err, err


def test_demo_unknown_scenario():
    r = _run_demo({"SEAM_DEMO": "nonesuch"}, timeout=30)
    assert r.returncode != 0
    assert "nonesuch" in r.stderr.decode(errors="replace")
