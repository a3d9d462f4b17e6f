"""Mesh mode end to end (issue 6), as root: a control plane and three pods in
network namespaces joined by a bridge in a namespace of their own, seam-init's
real iptables rules in every pod, a seam sidecar as uid 1337 and an app as
uid 1000 per pod. The apps know nothing about the mesh: they call pod IPs in
plain TCP.

    pod a  spiffe://cluster.local/ns/default/sa/a   10.244.0.10  fd00:10:244::10
    pod b  spiffe://cluster.local/ns/default/sa/b   10.244.0.20  fd00:10:244::20
    pod c  spiffe://cluster.local/ns/other/sa/c     10.244.0.30  fd00:10:244::30
    node   bridge br0, control plane, a server outside the mesh  10.244.0.1

b's port 8080 is STRICT and allows only a; 9090 is PERMISSIVE without rules;
9091 is PERMISSIVE and allows only a (so no plain client either).
Certificates live 10 s, so they rotate all through the test.
Every test runs twice: with the sidecars' defaults (the outbound carries
mTLS connections as streams of seam-mux/1 sessions, docs/MUX.md) and with
`--mux=false` (one mTLS connection per app connection); test_mesh_mux.py has
what only sessions do. Everything is created here and removed afterwards, also on failure.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import meshlab  # noqa: E402

BUILD_DIR = meshlab.BUILD_DIR
pytestmark = meshlab.root_marks("curl")

A, B, C = (meshlab.spiffe("default", "a"), meshlab.spiffe("default", "b"),
           meshlab.spiffe("other", "c"))


def mesh_yaml(allow_8080=(A,), policy="ALLOW_ANY"):
    allow = "".join(f"      - {i}\n" for i in allow_8080)
    return f"""trust_domain: cluster.local
cert_ttl: 10s
outbound_policy: {policy}
default_inbound_mode: STRICT
services:
  - name: a.default.svc.cluster.local
    port: 8080
    endpoints:
      - address: 10.244.0.10
        port: 8080
        spiffe_id: {A}
  - name: b.default.svc.cluster.local
    port: 8080
    endpoints:
      - address: 10.244.0.20
        port: 8080
        spiffe_id: {B}
      - address: "fd00:10:244::20"
        port: 8080
        spiffe_id: {B}
      - address: 10.244.0.20
        port: 9090
        spiffe_id: {B}
      - address: 10.244.0.20
        port: 9091
        spiffe_id: {B}
inbound:
  - port: 8080
    mode: STRICT
    allow:
{allow}  - port: 9090
    mode: PERMISSIVE
  - port: 9091
    mode: PERMISSIVE
    allow:
      - {A}
"""


@pytest.fixture(scope="module", params=["mux", "1to1"])
def lab(request):
    meshlab.skip_unless_lab_built(BUILD_DIR)
    lab = meshlab.MeshLab(BUILD_DIR, sidecar_args=[] if request.param == "mux" else ["--mux=false"])
    # What b's inbound logs for a's mTLS connections: streams say tls=mux.
    lab.tls_field = "tls=mux" if request.param == "mux" else "tls=TLSv1.3"
    # ServerHellos the capture test sees at least: one per app call 1:1 (probe,
    # v4, v6), one per session (IPv4, IPv6) with sessions.
    lab.min_hellos = 2 if request.param == "mux" else 3
    try:
        lab.setup_network([("a", 10, "default", "a"), ("b", 20, "default", "b"),
                           ("c", 30, "other", "c")])
        lab.start_control_plane(mesh_yaml(), cert_ttl="10s")
        # A server outside the mesh (no sidecar), on the node.
        lab.outside = lab.start([meshlab.PY, "-u", lab.app_script, "serve", "outside", 7070],
                                "app-outside.log", netns=lab.node, uid=meshlab.APP_UID)
        for name in ("a", "b", "c"):
            lab.start_pod(name, app_ports=(8080, 9090, 9091))
        lab.outside.wait_log("app.ready")
        lab.wait_ready()
        yield lab
    finally:
        lab.close_checked()


def count(proc, needle):
    return proc.log().count(needle)


def test_seam_init_rules_in_every_pod(lab):
    for pod in lab.pods.values():
        assert "backend" in pod.init_output, pod.init_output
        for ipt in ("iptables", "ip6tables"):
            rules = pod.exec([ipt, "-t", "nat", "-S", "SEAM_OUTPUT"]).stdout
            assert "--uid-owner 1337" in rules, rules


def test_pod_to_pod_ipv4_and_ipv6_is_tls13_on_the_wire(lab):
    a = lab.pods["a"]
    pcap = lab.path("br0.pcap")
    cap = lab.start(["tshark", "-n", "-i", "br0", "-f", "tcp port 8080", "-w", pcap],
                    "tshark.log", netns=lab.node)
    cap.wait_log("Capturing on", timeout=20)
    # The capture is live once a probe connection shows up in the file.
    meshlab.wait_for(lambda: "got probe" in a.call("10.244.0.20", 8080, "probe")
                     and os.path.getsize(pcap) > 1500, 20, interval=0.2,
                     what="the capture to see traffic")
    secret4, secret6 = f"secret-v4-{uuid.uuid4().hex}", f"secret-v6-{uuid.uuid4().hex}"
    out4 = a.call("10.244.0.20", 8080, secret4)
    out6 = a.call("fd00:10:244::20", 8080, secret6)
    # The app in b answers; the peer it sees is loopback (its sidecar).
    assert out4 == f"app@b:8080 got {secret4} from 127.0.0.1\n", out4
    assert out6 == f"app@b:8080 got {secret6} from ::1\n", out6

    def tshark(*args):
        r = subprocess.run(["tshark", "-n", "-r", pcap, "-d", "tcp.port==8080,tls"] + list(args),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 or "cut short" in r.stderr, r.stderr
        return r.stdout

    # dumpcap writes in blocks: more probe traffic pushes the secret calls'
    # packets (the IPv6 one last) into the file.
    meshlab.wait_for(lambda: "got probe" in a.call("10.244.0.20", 8080, "probe")
                     and tshark("-Y", "ipv6.src == fd00:10:244::10 && tls").strip(), 20,
                     interval=0.2, what="the IPv6 call in the capture")
    cap.stop(signal.SIGINT)
    raw = open(pcap, "rb").read()
    assert secret4.encode() not in raw and secret6.encode() not in raw, "plaintext on the wire"
    assert b"app@b" not in raw, "the answer crossed the bridge in plaintext"

    # Every TCP segment with payload is TLS; every ServerHello picks TLS 1.3.
    # A retransmission repeats bytes of a segment checked here already, and
    # tshark does not dissect it as TLS again: it is left out (one was seen
    # on the bridge of a busy CI machine).
    assert tshark("-Y", "tcp.len > 0 && !tls && !tcp.analysis.retransmission"
                        " && !tcp.analysis.spurious_retransmission").strip() == ""
    versions = tshark("-Y", "tls.handshake.type == 2", "-T", "fields", "-e",
                      "tls.handshake.extensions.supported_version").split()
    assert len(versions) >= lab.min_hellos and set(versions) == {"0x0304"}, versions
    v4 = tshark("-Y", "ip.src == 10.244.0.10 && tls.handshake.type == 1")
    v6 = tshark("-Y", "ipv6.src == fd00:10:244::10 && tls.handshake.type == 1")
    assert v4.strip() and v6.strip(), "a ClientHello from a over IPv4 and over IPv6"


def test_b_sees_a_spiffe_id(lab):
    a, b = lab.pods["a"], lab.pods["b"]
    out = a.call("10.244.0.20", 8080, "who-am-i")
    assert "got who-am-i" in out
    line = meshlab.wait_for(
        lambda: [l for l in b.sidecar.log().splitlines()
                 if "conn.close dir=inbound" in l and f"peer_id={A}" in l], 10,
        what="b's conn.close with a's SPIFFE ID")[-1]
    assert lab.tls_field in line, line
    assert re.search(r"peer=10\.244\.0\.10:\d+", b.sidecar.log()), "peer address of a"
    metrics = b.admin("/metrics")
    assert 'seam_config_responses_total{result="ack"}' in metrics, metrics[-2000:]
    assert re.search(r"^seam_control_plane_connected 1$", metrics, re.M), metrics[-2000:]
    assert re.search(r'^seam_config_info\{version="[^"]+"\} 1$', metrics, re.M)
    if subprocess.run(["which", "promtool"], capture_output=True).returncode == 0:
        r = subprocess.run(["promtool", "check", "metrics"], input=metrics, text=True,
                           capture_output=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr


def test_not_allowed_identity_is_refused(lab):
    b, c = lab.pods["b"], lab.pods["c"]
    before = count(b.sidecar, "reason=not_allowed")
    out = c.call("10.244.0.20", 8080, "let-me-in")
    assert "got let-me-in" not in out, out
    meshlab.wait_for(lambda: count(b.sidecar, "reason=not_allowed") > before, 10,
                     what="b's refusal of c")
    refusal = [l for l in b.sidecar.log().splitlines() if "reason=not_allowed" in l][-1]
    assert "tls.handshake_failed dir=inbound" in refusal and f"peer_id={C}" in refusal, refusal
    assert "let-me-in" not in b.app.log()


def test_destination_outside_the_mesh_passes_through(lab):
    a = lab.pods["a"]
    out = a.call("10.244.0.1", 7070, "hello-outside")
    # Plain passthrough from a's sidecar: the server sees a's pod address.
    assert out == "outside:7070 got hello-outside from 10.244.0.10\n", out
    # A dead destination: the app's connection ends promptly, never hangs.
    t0 = time.monotonic()
    out = a.call("10.244.0.1", 7071, "anyone-there", timeout=8)
    assert "got anyone-there" not in out and time.monotonic() - t0 < 5, out
    meshlab.wait_for(lambda: re.search(r"conn.upstream_failed dir=outbound target=10\.244\.0\.1:7071",
                                       a.sidecar.log()), 10, what="a's upstream failure")


def test_permissive_accepts_plain_strict_refuses_it(lab):
    a, b = lab.pods["a"], lab.pods["b"]
    node = meshlab.Pod(lab, "node", 1, "-", "-")
    node.netns = lab.node  # a client outside the mesh: no sidecar, no capture
    out = node.call("10.244.0.20", 9090, "plain-permissive")
    assert out == "app@b:9090 got plain-permissive from 127.0.0.1\n", out
    before = count(b.sidecar, "reason=not_tls")
    out = node.call("10.244.0.20", 8080, "plain-strict")
    assert "got plain-strict" not in out, out
    meshlab.wait_for(lambda: count(b.sidecar, "reason=not_tls") > before, 10,
                     what="b's not_tls refusal")
    assert "plain-strict" not in b.app.log()
    # A mesh client on the PERMISSIVE port still gets mTLS (detected ClientHello).
    out = a.call("10.244.0.20", 9090, "mtls-permissive")
    assert out == "app@b:9090 got mtls-permissive from 127.0.0.1\n", out
    line = meshlab.wait_for(lambda: [l for l in b.sidecar.log().splitlines()
                                     if "conn.close dir=inbound" in l and f"peer_id={A}" in l
                                     and "bytes_in=16 " in l], 10, what="b's mTLS on 9090")
    assert lab.tls_field in line[-1], line
    # PERMISSIVE with allow rules: a plain client has no identity to allow.
    before = count(b.sidecar, "reason=not_tls")
    out = node.call("10.244.0.20", 9091, "plain-with-rules")
    assert "got plain-with-rules" not in out, out
    meshlab.wait_for(lambda: count(b.sidecar, "reason=not_tls") > before, 10,
                     what="b's refusal of a plain client on 9091")
    assert "plain-with-rules" not in b.app.log()
    out = a.call("10.244.0.20", 9091, "mtls-with-rules")
    assert out == "app@b:9091 got mtls-with-rules from 127.0.0.1\n", out


def test_nothing_loops_back_into_the_sidecar(lab):
    a, b = lab.pods["a"], lab.pods["b"]
    # The app dials a's outbound listener itself: not a redirected connection.
    out = a.call("127.0.0.1", 15001, "loop-out")
    assert "got loop-out" not in out, out
    meshlab.wait_for(lambda: "reason=not_redirected" in a.sidecar.log(), 10,
                     what="a's not_redirected refusal")
    # A peer dials b's inbound capture port: redirected onto itself.
    node = meshlab.Pod(lab, "node", 1, "-", "-")
    node.netns = lab.node
    out = node.call("10.244.0.20", 15006, "loop-in")
    assert "got loop-in" not in out, out
    meshlab.wait_for(lambda: "reason=not_redirected" in b.sidecar.log(), 10,
                     what="b's not_redirected refusal")
    assert "loop-in" not in b.app.log() and "loop-out" not in a.app.log()


def set_mesh_and_wait(lab, text):
    applied = {n: count(p.sidecar, "mesh.config_applied") for n, p in lab.pods.items()}
    lab.set_mesh(text)
    for n, p in lab.pods.items():
        meshlab.wait_for(lambda p=p, n=n: count(p.sidecar, "mesh.config_applied") > applied[n],
                         15, what=f"new config in pod {n}")


def test_config_change_applies_to_new_connections_without_restart(lab):
    a, b, c = lab.pods["a"], lab.pods["b"], lab.pods["c"]
    pids = {n: p.sidecar.pid for n, p in lab.pods.items()}
    # A connection a opened before the change keeps the rules it started with.
    held = subprocess.Popen(["ip", "netns", "exec", a.netns, "setpriv",
                             f"--reuid={meshlab.APP_UID}", f"--regid={meshlab.APP_UID}",
                             "--clear-groups", meshlab.PY, "-u", lab.app_script, "hold",
                             "10.244.0.20", "8080"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert held.stdout.readline().strip() == "hold.connected"
        held.stdin.write("before\n")
        held.stdin.flush()
        assert held.stdout.readline().strip() == "app@b:8080 got before from 127.0.0.1"

        # Now only c may call b:8080, and unknown destinations are refused.
        set_mesh_and_wait(lab, mesh_yaml(allow_8080=(C,), policy="REGISTRY_ONLY"))
        out = c.call("10.244.0.20", 8080, "now-allowed")
        assert out == "app@b:8080 got now-allowed from 127.0.0.1\n", out
        out = a.call("10.244.0.20", 8080, "new-from-a")
        assert "got new-from-a" not in out, out
        held.stdin.write("after\n")
        held.stdin.flush()
        assert held.stdout.readline().strip() == "app@b:8080 got after from 127.0.0.1"
        out = a.call("10.244.0.1", 7070, "not-anymore")
        assert "got not-anymore" not in out, out
        meshlab.wait_for(lambda: "reason=registry_only" in a.sidecar.log(), 10,
                         what="a's registry_only refusal")
    finally:
        held.stdin.close()
        held.wait(10)
    cfg = json.loads(b.admin("/config"))
    assert cfg["snapshot"]["outbound_policy"] == "REGISTRY_ONLY"
    assert cfg["snapshot"]["inbound_ports"][0]["allow"] == [C]
    assert cfg["version"] == cfg["snapshot"]["version"] and cfg["acks"] >= 2
    assert {n: p.sidecar.pid for n, p in lab.pods.items()} == pids
    assert all(p.sidecar.p.poll() is None for p in lab.pods.values())
    set_mesh_and_wait(lab, mesh_yaml())  # back to the start for the next test


def test_config_the_sidecar_cannot_use_is_nacked_and_the_old_one_stays(lab):
    a, b = lab.pods["a"], lab.pods["b"]
    nacks = count(b.sidecar, "config.nack") + count(b.sidecar, "mesh.config_refused")
    version = json.loads(b.admin("/config"))["version"]
    # Valid YAML for the control plane, but one endpoint with two identities.
    bad = mesh_yaml().replace("inbound:", f"""  - name: impostor.default.svc.cluster.local
    port: 8080
    endpoints:
      - address: 10.244.0.20
        port: 8080
        spiffe_id: {C}
inbound:""", 1)
    lab.set_mesh(bad)
    meshlab.wait_for(lambda: count(b.sidecar, "config.nack") + count(b.sidecar,
                     "mesh.config_refused") > nacks, 15, what="b's NACK")
    cfg = json.loads(b.admin("/config"))
    assert cfg["version"] == version and cfg["nacks"] >= 1, cfg
    assert "two different SPIFFE IDs" in cfg["last_nack_error"], cfg
    assert re.search(r'^seam_config_responses_total\{result="nack"\} [1-9]', b.admin("/metrics"),
                     re.M)
    out = a.call("10.244.0.20", 8080, "still-works")
    assert out == "app@b:8080 got still-works from 127.0.0.1\n", out
    set_mesh_and_wait(lab, mesh_yaml())


def test_rotation_during_steady_traffic_drops_nothing(lab):
    a, b = lab.pods["a"], lab.pods["b"]
    rot_a = count(a.sidecar, "identity.cert_installed")
    rot_b = count(b.sidecar, "identity.cert_installed")
    r = a.exec([meshlab.PY, lab.app_script, "steady", "10.244.0.20", 8080, 16],
               uid=meshlab.APP_UID, timeout=60)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    # 10 s certificates renew every ~5 s: both sides rotated during the run.
    assert count(a.sidecar, "identity.cert_installed") >= rot_a + 2
    assert count(b.sidecar, "identity.cert_installed") >= rot_b + 2
    assert res["failed"] == 0 and res["long_failed"] == 0, res
    assert res["ok"] >= 50 and res["long_ok"] >= 10, res
    assert "tls.handshake_failed" not in "".join(
        l for l in a.sidecar.log().splitlines() if "dir=outbound" in l)
