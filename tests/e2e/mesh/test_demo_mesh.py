"""README's first command as root: scripts/demo.sh runs the mesh scenario
(scripts/demo/mesh.sh) against this build's binaries. It must exit 0, print
what happened (answers over IPv4 and IPv6 through mTLS 1.3, the peer ID the
backend saw, the refused caller, a rotation without failed calls) and leave
no namespace behind."""
import os
import re
import subprocess
import sys

import pytest

SOURCE_DIR = os.environ.get("SEAM_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BUILD_DIR = os.environ.get("SEAM_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the mesh demo uses network namespaces")
def test_demo_mesh_summary():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import meshlab
    why = meshlab.run_built(BUILD_DIR)
    if why:
        pytest.skip(why)
    env = dict(os.environ, SEAM_DEMO_NO_BUILD="1", SEAM_BUILD_DIR=BUILD_DIR, SEAM_DEMO="mesh")
    r = subprocess.run(["bash", os.path.join(SOURCE_DIR, "scripts", "demo.sh")],
                       capture_output=True, text=True, timeout=120, env=env,
                       stdin=subprocess.DEVNULL)
    out = r.stdout
    assert r.returncode == 0, f"demo failed ({r.returncode}):\n{out}\n{r.stderr}"
    summary = out.split("== seam mesh demo: what happened", 1)
    assert len(summary) == 2, out
    f = {}
    for line in summary[1].splitlines():
        k, sep, v = line.partition(": ")
        if sep:
            f[k] = v
    assert f["frontend -> backend IPv4"] == \
        "app@backend:8080 got hello over IPv4 from 127.0.0.1"
    assert f["frontend -> backend IPv6"] == "app@backend:8080 got hello over IPv6 from ::1"
    assert f["backend sidecar saw peer"] == \
        "spiffe://cluster.local/ns/default/sa/frontend over TLSv1.3 (seam-mux/2)"
    assert f["refused"] == "spiffe://cluster.local/ns/evil/sa/mallory reason=not_allowed"
    assert re.fullmatch(r"frontend certificate \S+ -> \S+, \d+ calls during it, 0 failed",
                        f["rotation"]), f["rotation"]
    assert out.rstrip().endswith("DEMO OK (mesh mode)")
    tag = re.search(r"namespaces (seam\d+)-node", out).group(1)
    assert tag not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                     text=True).stdout
