"""--loopback-cc in mesh mode, as root: two pods (meshlab) whose network
namespaces default to BBR, the app of pod a holding a connection to pod b's
app through both sidecars. `ss -tinp` in each pod then shows:

    pod a  app -> outbound (redirected to :15001)   loopback cc  (every client of
                                                                  the outbound is the pod's own)
           outbound -> 10.244.0.20:8080             the pod's default (a real network hop)
           sidecar -> control plane                 the pod's default (not a proxied hop)
    pod b  a's sidecar -> inbound (:15006)          the pod's default
           inbound -> app on 127.0.0.1:8080         loopback cc

With BBR the sidecars run on their default (auto: reno for loopback sockets).
Where the kernel has no BBR the pods keep their default and the sidecars get
`--loopback-cc reno`, so the same rule is checked with an explicit name.
Everything lives in namespaces created here and removed afterwards."""
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import meshlab  # noqa: E402
import seamtest  # noqa: E402 - tests/conftest.py puts tests/lib on the path

BUILD_DIR = meshlab.BUILD_DIR
pytestmark = meshlab.root_marks()

A, B = meshlab.spiffe("default", "a"), meshlab.spiffe("default", "b")
MESH = f"""trust_domain: cluster.local
cert_ttl: 1h
outbound_policy: ALLOW_ANY
default_inbound_mode: STRICT
services:
  - name: b.default.svc.cluster.local
    port: 8080
    endpoints:
      - address: 10.244.0.20
        port: 8080
        spiffe_id: {B}
inbound:
  - port: 8080
    mode: STRICT
    allow:
      - {A}
"""


@pytest.fixture(scope="module")
def lab():
    why = meshlab.run_built(BUILD_DIR)
    if why:
        pytest.skip(why)
    lab = meshlab.MeshLab(BUILD_DIR)
    try:
        pods = lab.setup_network([("a", 10, "default", "a"), ("b", 20, "default", "b")])
        bbr = all(p.exec(["sysctl", "-w", "net.ipv4.tcp_congestion_control=bbr"],
                         check=False).returncode == 0 for p in pods.values())
        lab.loopback_cc = "reno"
        args = [] if bbr else ["--loopback-cc", "reno"]
        lab.pod_cc = pods["a"].exec(["sysctl", "-n", "net.ipv4.tcp_congestion_control"]
                                    ).stdout.strip()
        lab.bbr = bbr
        lab.start_control_plane(MESH)
        for name in ("a", "b"):
            lab.start_pod(name, app_ports=(8080,), extra_args=args)
        lab.wait_ready()
        yield lab
    finally:
        lab.close_checked()


def sidecar_sockets(pod):
    return [s for s in seamtest.tcp_sockets(pod.netns) if s["process"] == "seam-sidecar"]


def port_of(addr):
    return addr.rsplit(":", 1)[1]


def test_loopback_hops_get_the_loopback_cc_and_network_hops_keep_the_default(lab):
    a, b = lab.pods["a"], lab.pods["b"]
    assert lab.pod_cc != lab.loopback_cc, "the test needs a default that differs from reno"
    held = subprocess.Popen(meshlab.ns_prefix(a.netns, meshlab.APP_UID)
                            + [meshlab.PY, "-u", lab.app_script, "hold", "10.244.0.20", "8080"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert held.stdout.readline().strip() == "hold.connected"
        held.stdin.write("cc\n")
        held.stdin.flush()
        assert held.stdout.readline().strip() == "app@b:8080 got cc from 127.0.0.1"

        def a_socks():
            s = sidecar_sockets(a)
            down = [x for x in s if port_of(x["local"]) == "15001"]
            up = [x for x in s if x["peer"] == "10.244.0.20:8080"]
            cp = [x for x in s if x["peer"] == f"10.244.0.1:{meshlab.CP_PORT}"]
            return (down, up, cp) if len(down) == 1 and len(up) == 1 and cp else None

        down, up, cp = meshlab.wait_for(a_socks, 10, what="pod a's sidecar sockets")
        assert down[0]["cc"] == lab.loopback_cc, down  # the app's redirected connection
        assert up[0]["cc"] == lab.pod_cc, up           # the pod-to-pod hop
        assert all(x["cc"] == lab.pod_cc for x in cp), cp

        def b_socks():
            s = sidecar_sockets(b)
            down = [x for x in s if port_of(x["local"]) == "15006"]
            up = [x for x in s if x["peer"] in ("127.0.0.1:8080", "[::ffff:127.0.0.1]:8080")]
            return (down, up) if len(down) == 1 and len(up) == 1 else None

        down, up = meshlab.wait_for(b_socks, 10, what="pod b's sidecar sockets")
        assert down[0]["cc"] == lab.pod_cc, down     # from pod a's sidecar, over the bridge
        assert up[0]["cc"] == lab.loopback_cc, up    # to the app on loopback

        # The apps' own sockets are not the sidecar's to change.
        apps = [x for x in seamtest.tcp_sockets(a.netns) if x["process"] == "python3"]
        assert apps and all(x["cc"] == lab.pod_cc for x in apps), apps
        held.stdin.write("again\n")
        held.stdin.flush()
        assert held.stdout.readline().strip() == "app@b:8080 got again from 127.0.0.1"
    finally:
        held.stdin.close()
        held.wait(timeout=10)
    reason = "system_default_paces" if lab.bbr else "flag"
    for pod in (a, b):
        assert f"tcp.loopback_cc cc=reno system={lab.pod_cc} reason={reason}" in pod.sidecar.log()
