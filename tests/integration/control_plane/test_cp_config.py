"""seam-control-plane config stream, mesh watching, root rotation and CLI (issue 4)."""
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request

import grpc
import pytest
from cryptography import x509

import seamtest
from cphelp import (ID_A, MESH, ConfigStream, ControlPlane, create_cert, make_csr, new_key,
                    openssl_verify, pb)


def write_mesh(path, text):
    # Write then rename, as editors and ConfigMap updates do; bump mtime so
    # the 1 s poll always sees a change.
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def test_stream_gets_snapshot_then_mesh_change_then_nack(procs, tmp_path):
    _, cfg = pb()
    cp = ControlPlane(procs, tmp_path)
    ch = cp.channel()
    st = ConfigStream(ch, "spiffe://cluster.local/ns/default/sa/web", token="tok-a")
    r1 = st.next()
    assert r1.version_info and r1.nonce
    snap = r1.snapshot
    assert snap.outbound_policy == cfg.REGISTRY_ONLY
    assert snap.cert_ttl_seconds == 1800
    assert [s.name for s in snap.services] == ["web.default.svc.cluster.local"]
    ep = snap.services[0].endpoints[0]
    assert (ep.address, ep.port, ep.spiffe_id) == ("127.0.0.1", 8080,
                                                   "spiffe://cluster.local/ns/default/sa/web")
    assert snap.inbound_ports[0].port == 8080 and snap.inbound_ports[0].mode == cfg.STRICT
    assert list(snap.inbound_ports[0].allow) == [ID_A]
    assert snap.trust_bundle.trust_domain == "cluster.local"
    with open(cp.root) as f:
        assert snap.trust_bundle.roots[0] in f.read()
    st.ack(r1)
    seamtest.wait_for(lambda: cp.metric("seam_cp_config_acks_total") == 1, 10, what="ack counted")

    # A second stream sees the same version (one snapshot per version).
    st2 = ConfigStream(cp.channel(), "node-2")
    assert st2.next().version_info == r1.version_info

    # Change the mesh: every stream gets the new version.
    write_mesh(cp.mesh, MESH.replace("cert_ttl: 30m", "cert_ttl: 10m"))
    r2 = st.next(timeout=15)
    assert r2.version_info != r1.version_info and r2.snapshot.cert_ttl_seconds == 600
    assert st2.next(timeout=15).version_info == r2.version_info
    st.nack(r2, r1.version_info, "I refuse")
    seamtest.wait_for(lambda: cp.metric("seam_cp_config_nacks_total") == 1, 10, what="nack counted")
    cp.proc.wait_log("cp.config_nack", timeout=5)
    m = cp.metrics()
    assert f'nacked="{r2.nonce}"' in m and f'acked="{r1.version_info}"' in m
    assert cp.metric("seam_cp_config_streams") == 2

    # An invalid mesh file is refused, logged with file:line, and nothing is pushed.
    write_mesh(cp.mesh, MESH.replace("mode: STRICT", "mode: SOMETIMES"))
    cp.proc.wait_log("cp.mesh_invalid", timeout=10)
    assert "mesh.yaml:13:" in cp.proc.log()
    assert cp.metric("seam_cp_mesh_reload_failures_total") == 1
    with pytest.raises(Exception):
        st.next(timeout=2)
    # Fixing it pushes again.
    write_mesh(cp.mesh, MESH.replace("REGISTRY_ONLY", "ALLOW_ANY"))
    r3 = st.next(timeout=15)
    assert r3.snapshot.outbound_policy == cfg.ALLOW_ANY
    st.close()
    st2.close()
    ch.close()


def test_bad_token_on_stream_is_unauthenticated(procs, tmp_path):
    cp = ControlPlane(procs, tmp_path)
    st = ConfigStream(cp.channel(), "x", token="wrong")
    with pytest.raises(grpc.RpcError) as e:
        st.next()
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_root_rotation_add_issue_retire(procs, tmp_path):
    cp = ControlPlane(procs, tmp_path)
    ch = cp.channel()
    st = ConfigStream(ch, "n", token="tok-a")
    r1 = st.next()
    assert len(r1.snapshot.trust_bundle.roots) == 1
    old_root = r1.snapshot.trust_bundle.roots[0]
    old_chain = create_cert(ch, "tok-a", make_csr(new_key(), uri=ID_A)).cert_chain
    assert "roots=2" in cp.post("/ca/rotate")
    r2 = st.next(timeout=10)
    roots = list(r2.snapshot.trust_bundle.roots)
    assert len(roots) == 2 and old_root in roots
    new_chain = create_cert(ch, "tok-a", make_csr(new_key(), uri=ID_A)).cert_chain
    assert new_chain[-1] != old_chain[-1] and new_chain[-1] in roots
    bundle = "".join(roots)
    assert openssl_verify(tmp_path, list(old_chain), bundle, "old")[0]
    assert openssl_verify(tmp_path, list(new_chain), bundle, "new")[0]
    # The serving certificate stays verifiable with the rewritten --root-out.
    ch2 = cp.channel()
    assert create_cert(ch2, "tok-a", make_csr(new_key(), uri=ID_A)).cert_chain
    assert "retired 1" in cp.post("/ca/retire")
    r3 = st.next(timeout=10)
    assert list(r3.snapshot.trust_bundle.roots) == [new_chain[-1]]
    assert not openssl_verify(tmp_path, list(old_chain), new_chain[-1], "old2")[0]
    assert cp.metric("seam_cp_trust_bundle_roots") == 1
    st.close()
    ch.close()
    ch2.close()


def test_sigterm_ends_streams_unavailable_and_exits_0(procs, tmp_path):
    cp = ControlPlane(procs, tmp_path)
    st = ConfigStream(cp.channel(), "n")
    st.next()
    t0 = time.monotonic()
    cp.proc.send_signal(signal.SIGTERM)
    with pytest.raises(grpc.RpcError) as e:
        st.next(timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    cp.proc.p.wait(10)
    assert cp.proc.p.returncode == 0
    assert time.monotonic() - t0 < 5


def run_cp(args, timeout=10):
    return subprocess.run([seamtest.binary("seam-control-plane")] + args, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("args,needle", [
    (["--bogus", "1"], "unknown flag --bogus"),
    (["--mesh", "m"], "--listen"),
    (["--listen", "127.0.0.1:99999", "--mesh", "m"], "--listen"),
    (["--listen", "127.0.0.1:0", "--mesh", "m", "--cert-ttl", "5s"], "at least 10s"),
    (["--listen", "127.0.0.1:0", "--mesh", "m", "--cert-ttl", "soon"], "--cert-ttl"),
    (["--listen", "127.0.0.1:0", "--mesh", "m", "--jwks", "j"], "--audience"),
    (["--listen", "127.0.0.1:0", "--mesh", "m", "--ca-cert", "c"], "--ca-key"),
    (["--listen", "127.0.0.1:0", "--mesh", "/nonexistent/mesh.yaml"], "/nonexistent/mesh.yaml"),
    (["--listen", "127.0.0.1:0", "--mesh", "m", "--tokens", "/nonexistent/t"], "/nonexistent/t"),
    (["--listen", "127.0.0.1:0", "--mesh", "m", "--trust-domain", "Bad Domain"], "trust domain"),
    (["--listen", "127.0.0.1:0", "--mesh", "m", "--idle-timeout", "forever"], "--idle-timeout"),
])
def test_bad_flags_exit_2(tmp_path, args, needle):
    args = [a if a != "m" else str(tmp_path / "mesh.yaml") for a in args]
    (tmp_path / "mesh.yaml").write_text(MESH)
    r = run_cp(args)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr


def test_flags_from_environment(procs, tmp_path):
    """Every flag has a SEAM_<FLAG> twin (as the sidecar's): a Deployment can
    configure the control plane with env. The command line wins."""
    (tmp_path / "mesh.yaml").write_text(MESH)
    (tmp_path / "tokens.yaml").write_text(f"tok-a: {ID_A}\n")
    port, admin = seamtest.free_port(), seamtest.free_port()
    env = {"SEAM_LISTEN": "127.0.0.1:1",  # overridden by --listen below
           "SEAM_MESH": str(tmp_path / "mesh.yaml"),
           "SEAM_TOKENS": str(tmp_path / "tokens.yaml"),
           "SEAM_ADMIN": f"127.0.0.1:{admin}",
           "SEAM_ROOT_OUT": str(tmp_path / "root.pem"),
           "SEAM_CERT_TTL": "10m",
           "SEAM_SERVER_NAME": "cp.example,localhost"}
    p = procs.start([seamtest.binary("seam-control-plane"), "--listen", f"127.0.0.1:{port}"],
                    env=env)
    p.wait_log("cp.ready", timeout=15)
    assert seamtest.port_open("127.0.0.1", port), p.log()
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        assert b"seam_cp_" in r.read()
    # Certificates carry the env's TTL; the server certificate the env's names.
    with open(tmp_path / "root.pem", "rb") as f:
        creds = grpc.ssl_channel_credentials(f.read())
    ch = grpc.secure_channel(f"localhost:{port}", creds)
    resp = create_cert(ch, "tok-a", make_csr(new_key(), uri=ID_A), ttl=3600)
    leaf = x509.load_pem_x509_certificate(resp.cert_chain[0].encode())
    life = leaf.not_valid_after - leaf.not_valid_before
    assert 9 * 60 <= life.total_seconds() <= 11 * 60, life
    ch.close()
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="cp.example") as tls:
            server = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) >= {"cp.example", "localhost"}, sans
    assert p.stop() == 0


@pytest.mark.parametrize("env,needle", [
    ({"SEAM_CERT_TTL": "5s"}, "at least 10s"),
    ({"SEAM_MAX_STREAMS": "0"}, "--max-streams"),
    ({"SEAM_LOG_LEVEL": "loud"}, "--log-level"),
])
def test_bad_environment_value_exits_2(tmp_path, env, needle):
    (tmp_path / "mesh.yaml").write_text(MESH)
    r = subprocess.run([seamtest.binary("seam-control-plane"), "--listen", "127.0.0.1:0",
                        "--mesh", str(tmp_path / "mesh.yaml")], capture_output=True, text=True,
                       timeout=10, env=dict(os.environ, **env))
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr


def test_help_lists_env_names():
    r = subprocess.run([seamtest.binary("seam-control-plane"), "--help"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0
    assert "--cert-ttl" in r.stdout and "SEAM_CERT_TTL" in r.stdout


def test_bad_mesh_at_start_names_file_and_line(tmp_path):
    bad = MESH.replace("port: 8080\n    endpoints", "port: 80800\n    endpoints")
    (tmp_path / "mesh.yaml").write_text(bad)
    r = run_cp(["--listen", "127.0.0.1:0", "--mesh", str(tmp_path / "mesh.yaml")])
    assert r.returncode == 2
    assert f"{tmp_path}/mesh.yaml:6:" in r.stderr and "port" in r.stderr


def test_bad_tokens_file_names_line(tmp_path):
    (tmp_path / "mesh.yaml").write_text(MESH)
    (tmp_path / "t.yaml").write_text("a: spiffe://cluster.local/ns/x/sa/y\nb: not-an-id\n")
    r = run_cp(["--listen", "127.0.0.1:0", "--mesh", str(tmp_path / "mesh.yaml"),
                "--tokens", str(tmp_path / "t.yaml")])
    assert r.returncode == 2 and "line 2" in r.stderr


def test_example_mesh_is_valid(procs, tmp_path):
    with open(os.path.join(seamtest.SOURCE_DIR, "control-plane/examples/mesh.yaml")) as f:
        cp = ControlPlane(procs, tmp_path, mesh=f.read())
    st = ConfigStream(cp.channel(), "n")
    assert len(st.next().snapshot.services) == 2
    st.close()


def test_peer_strings_cannot_forge_log_lines_or_labels(procs, tmp_path):
    cp = ControlPlane(procs, tmp_path)
    evil = 'x"} 1\nseam_cp_fake 1\n2026-01-01T00:00:00Z ERROR forged'
    st = ConfigStream(cp.channel(), evil)
    r = st.next()
    st.nack(r, "", 'bad\nERROR forged "line"')
    cp.proc.wait_log("cp.config_nack", timeout=10)
    m = cp.metrics()
    assert "seam_cp_fake" not in [l.split(" ")[0] for l in m.splitlines()]
    assert [l for l in m.splitlines() if l.startswith("seam_cp_config_client{")][0].endswith(" 1")
    assert not any(l.startswith("seam_cp_fake") for l in m.splitlines())
    assert not any(l.startswith("2026-01-01") or "ERROR forged" in l.split(" ")[0:3]
                   for l in cp.proc.log().splitlines())
    st.close()
