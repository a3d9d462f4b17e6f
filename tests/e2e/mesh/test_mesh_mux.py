"""seam-mux/1 in mesh mode, as root (docs/MUX.md "Mesh mode"): pods a and c
run `seam-sidecar run --mux`, so their apps' mTLS connections travel as
streams of long-lived sessions, one per destination address, port and
identity; b's inbound accepts sessions (the default); d's refuses them
(`--accept-mux=false`), standing in for a sidecar without seam-mux/1.

    pod a  spiffe://cluster.local/ns/default/sa/a   10.244.0.10   --mux
    pod b  spiffe://cluster.local/ns/default/sa/b   10.244.0.20
    pod c  spiffe://cluster.local/ns/other/sa/c     10.244.0.30   --mux
    pod d  spiffe://cluster.local/ns/default/sa/d   10.244.0.40   --accept-mux=false

b's port 8080 is STRICT and allows only a; 9090 is PERMISSIVE without rules.
What must hold, stream by stream, is what holds for 1:1 connections
(test_mesh.py): the server proves the destination's identity, each new
stream is authorized by the inbound's newest rules, a refusal reaches only
that stream. Everything is created here and removed afterwards.
"""
import os
import re
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import meshlab  # noqa: E402

BUILD_DIR = meshlab.BUILD_DIR
pytestmark = meshlab.root_marks("curl")

A, B, C, D = (meshlab.spiffe("default", "a"), meshlab.spiffe("default", "b"),
              meshlab.spiffe("other", "c"), meshlab.spiffe("default", "d"))


def mesh_yaml(allow_8080=(A,), b9090_id=B):
    allow = "".join(f"      - {i}\n" for i in allow_8080)
    return f"""trust_domain: cluster.local
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
      - address: "fd00:10:244::20"
        port: 8080
        spiffe_id: {B}
      - address: 10.244.0.20
        port: 9090
        spiffe_id: {b9090_id}
  - name: d.default.svc.cluster.local
    port: 8080
    endpoints:
      - address: 10.244.0.40
        port: 8080
        spiffe_id: {D}
inbound:
  - port: 8080
    mode: STRICT
    allow:
{allow}  - port: 9090
    mode: PERMISSIVE
"""


@pytest.fixture(scope="module")
def lab():
    meshlab.skip_unless_lab_built(BUILD_DIR)
    lab = meshlab.MeshLab(BUILD_DIR, tag=f"smux{os.getpid() % 10000}")
    try:
        lab.setup_network([("a", 10, "default", "a"), ("b", 20, "default", "b"),
                           ("c", 30, "other", "c"), ("d", 40, "default", "d")])
        # Certificates for an hour: the session counts below are not
        # interrupted by rotations (test_rotation_load covers those, with --mux).
        lab.start_control_plane(mesh_yaml(), cert_ttl="1h")
        lab.start_pod("a", extra_args=["--mux"])
        lab.start_pod("b", app_ports=(8080, 9090))
        lab.start_pod("c", extra_args=["--mux"])
        lab.start_pod("d", extra_args=["--accept-mux=false"])
        lab.wait_ready()
        yield lab
    finally:
        lab.close_checked()


def lines(proc, *needles):
    return [line for line in proc.log().splitlines() if all(n in line for n in needles)]


def set_mesh_and_wait(lab, text):
    applied = {n: len(lines(p.sidecar, "mesh.config_applied")) for n, p in lab.pods.items()}
    lab.set_mesh(text)
    for n, p in lab.pods.items():
        meshlab.wait_for(lambda p=p, n=n: len(lines(p.sidecar, "mesh.config_applied")) > applied[n],
                         15, what=f"new config in pod {n}")


def test_connections_to_one_destination_are_streams_of_one_session(lab):
    a, b = lab.pods["a"], lab.pods["b"]
    for i in range(3):
        out = a.call("10.244.0.20", 8080, f"stream-{i}")
        assert out == f"app@b:8080 got stream-{i} from 127.0.0.1\n", out
    # b saw three streams from a, each with a's identity, over seam-mux/1.
    closes = meshlab.wait_for(lambda: [l for l in lines(b.sidecar, "conn.close dir=inbound",
                                                        f"peer_id={A}", "tls=mux")
                                       if "bytes_in=9 " in l] if len(
        lines(b.sidecar, "conn.close dir=inbound", "tls=mux")) >= 3 else None, 10,
        what="b's three stream closes")
    assert len(closes) == 3, closes
    # One session from a to b:8080, whose server proved b's identity.
    opened = lines(a.sidecar, "mux.session_open dir=outbound", "peer=10.244.0.20:8080")
    assert len(opened) == 1, a.sidecar.log()[-3000:]
    assert f"peer_id={B}" in opened[0], opened
    assert len(lines(b.sidecar, "mux.session_open dir=inbound", f"peer_id={A}")) == 1
    # Another address of the same pod (IPv6) is another destination: its own session.
    out = a.call("fd00:10:244::20", 8080, "over-v6")
    assert out.startswith("app@b:8080 got over-v6 from "), out
    assert len(lines(a.sidecar, "mux.session_open dir=outbound", "peer=[fd00:10:244::20]:8080")) == 1
    # No 1:1 mTLS connection from a reached b.
    assert not lines(b.sidecar, "conn.close dir=inbound", f"peer_id={A}", "tls=TLSv1.3")


def test_permissive_port_takes_a_session_after_detecting_tls(lab):
    a, b = lab.pods["a"], lab.pods["b"]
    out = a.call("10.244.0.20", 9090, "on-9090")
    assert out == "app@b:9090 got on-9090 from 127.0.0.1\n", out
    assert len(lines(a.sidecar, "mux.session_open dir=outbound", "peer=10.244.0.20:9090")) == 1
    meshlab.wait_for(lambda: lines(b.sidecar, "conn.close dir=inbound", f"peer_id={A}",
                                   "tls=mux", "bytes_in=8 "), 10, what="b's close of on-9090")


def test_not_allowed_identity_is_refused_at_the_session_handshake(lab):
    b, c = lab.pods["b"], lab.pods["c"]
    before = len(lines(b.sidecar, "reason=not_allowed"))
    out = c.call("10.244.0.20", 8080, "let-me-in")
    assert "got let-me-in" not in out, out
    refusal = meshlab.wait_for(lambda: lines(b.sidecar, "reason=not_allowed")[before:], 10,
                               what="b's refusal of c")
    assert "tls.handshake_failed dir=inbound" in refusal[0] and f"peer_id={C}" in refusal[0]
    assert "let-me-in" not in b.app.log()
    assert not lines(b.sidecar, "mux.session_open dir=inbound", f"peer_id={C}")


def test_withdrawn_rule_refuses_the_next_stream_of_an_open_session(lab):
    a, b, c = lab.pods["a"], lab.pods["b"], lab.pods["c"]
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
        sessions = len(lines(a.sidecar, "mux.session_open dir=outbound", "peer=10.244.0.20:8080"))

        # Now only c may call b:8080. a's session stays open (the held stream).
        set_mesh_and_wait(lab, mesh_yaml(allow_8080=(C,)))
        out = a.call("10.244.0.20", 8080, "new-from-a")
        assert "got new-from-a" not in out, out
        refused = meshlab.wait_for(lambda: lines(b.sidecar, "mux.stream_refused dir=inbound",
                                                 "reason=not_allowed"), 10,
                                   what="b's refusal of a's new stream")
        assert f"peer_id={A}" in refused[-1], refused
        assert "new-from-a" not in b.app.log()
        # It was a stream of the open session, not a new connection.
        assert len(lines(a.sidecar, "mux.session_open dir=outbound",
                         "peer=10.244.0.20:8080")) == sessions
        # The stream opened before the change keeps going; c is let in now.
        held.stdin.write("after\n")
        held.stdin.flush()
        assert held.stdout.readline().strip() == "app@b:8080 got after from 127.0.0.1"
        out = c.call("10.244.0.20", 8080, "now-allowed")
        assert out == "app@b:8080 got now-allowed from 127.0.0.1\n", out
        assert lines(b.sidecar, "mux.session_open dir=inbound", f"peer_id={C}")
    finally:
        held.stdin.close()
        held.wait(10)
        set_mesh_and_wait(lab, mesh_yaml())


def test_server_must_be_the_destination_identity(lab):
    a, b = lab.pods["a"], lab.pods["b"]
    # The registry now says b:9090 is c: b's certificate (b) must not pass.
    set_mesh_and_wait(lab, mesh_yaml(b9090_id=C))
    try:
        before = len(lines(a.sidecar, "tls.handshake_failed dir=outbound"))
        out = a.call("10.244.0.20", 9090, "to-impostor")
        assert "got to-impostor" not in out, out
        failed = meshlab.wait_for(
            lambda: lines(a.sidecar, "tls.handshake_failed dir=outbound")[before:], 10,
            what="a's refusal of b's identity on 9090")
        assert f"peer_id={B}" in failed[0], failed
        assert "to-impostor" not in b.app.log()
    finally:
        set_mesh_and_wait(lab, mesh_yaml())
    # With the registry right again, a new session to b:9090 works.
    out = a.call("10.244.0.20", 9090, "to-b-again")
    assert out == "app@b:9090 got to-b-again from 127.0.0.1\n", out


def test_peer_without_mux_gets_1to1_and_others_keep_sessions(lab):
    a, b, d = lab.pods["a"], lab.pods["b"], lab.pods["d"]
    for i in range(2):
        out = a.call("10.244.0.40", 8080, f"to-d-{i}")
        assert out == f"app@d:8080 got to-d-{i} from 127.0.0.1\n", out
    not_supported = lines(a.sidecar, "mux.not_supported dir=outbound", "peer=10.244.0.40:8080")
    assert len(not_supported) == 1, a.sidecar.log()[-3000:]
    assert "fallback=1:1" in not_supported[0]
    # (d also logs the close of the session connection a offered, which chose 1:1.)
    closes = meshlab.wait_for(lambda: lines(d.sidecar, "conn.close dir=inbound", f"peer_id={A}",
                                            "bytes_in=7 ")
                              if len(lines(d.sidecar, "conn.close dir=inbound", "bytes_in=7 ")) >= 2
                              else None, 10, what="d's two closes")
    assert len(closes) == 2 and all("tls=TLSv1.3" in l for l in closes), closes
    # Only that destination went 1:1: a's next call to b is a stream again.
    streams = len(lines(b.sidecar, "conn.close dir=inbound", f"peer_id={A}", "tls=mux"))
    out = a.call("10.244.0.20", 8080, "still-mux")
    assert out == "app@b:8080 got still-mux from 127.0.0.1\n", out
    meshlab.wait_for(lambda: len(lines(b.sidecar, "conn.close dir=inbound", f"peer_id={A}",
                                       "tls=mux")) > streams, 10, what="b's stream close")


def test_sessions_and_streams_in_metrics(lab):
    a, b = lab.pods["a"], lab.pods["b"]
    ma, mb = a.admin("/metrics"), b.admin("/metrics")
    m = re.search(r'^seam_mux_sessions_opened_total\{direction="outbound"\} (\d+)$', ma, re.M)
    assert m and int(m.group(1)) >= 3, ma[-3000:]  # b:8080 (v4, v6), b:9090
    m = re.search(r'^seam_mux_sessions_opened_total\{direction="inbound"\} (\d+)$', mb, re.M)
    assert m and int(m.group(1)) >= 3, mb[-3000:]
    if subprocess.run(["which", "promtool"], capture_output=True).returncode == 0:
        for text in (ma, mb):
            r = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                               capture_output=True, timeout=30)
            assert r.returncode == 0, r.stdout + r.stderr
