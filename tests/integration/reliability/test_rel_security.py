"""Security review in tests (issue 10).

- private key bytes (PEM body, the raw scalar in hex) never appear in the
  sidecars' logs or in any admin endpoint's output, and the sidecar writes no
  file (only the log it was given is open for writing); `certify` writes a
  key only with --out-dir (0600) and never prints one;
- mutating admin endpoints refuse non-loopback clients: the sidecar runs in a
  network namespace this test creates (veth pair, as root) with --admin
  0.0.0.0:P, and a client outside connects to the namespace's address;
- TLS 1.2 is refused by default in both directions (so renegotiation, a TLS
  1.2 feature, cannot happen; TLS 1.3 has none);
- a peer with a valid certificate from the right CA but the wrong SPIFFE ID is
  refused inbound and outbound, and delivers no byte;
- resumption never skips the SPIFFE check: a resumed session is authorized
  again (authz counter, peer_id in the log), and after a trust change (SIGHUP)
  an old session is not accepted;
- the sidecar runs as uid 1337 with no capabilities at all (as the pod spec
  starts it: deploy/kubernetes) and still proxies.
"""
import os
import pathlib
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import uuid

import pytest

import seamtest
from relkit import (CLIENT_ID, LOOP, SERVER_ID, Echo, addr, admin_metric, client_ctx,
                    closed_by_peer, echo_roundtrip, events, http, pair, proc_status,
                    start_tunnel, tls_connect, use_mesh_with_a_port)
from seamtest import free_port, wait_for
from upstream import FakeUpstream

ADMIN_GETS = ["/metrics", "/certs", "/config", "/debug/tls-failures", "/healthz/ready",
              "/healthz/live"]


def key_needles(key_path):
    """Strings that would betray the private key: PEM body lines, the scalar in hex."""
    with open(key_path) as f:
        pem = f.read()
    needles = [ln for ln in pem.splitlines() if ln and not ln.startswith("-----") and len(ln) >= 24]
    out = subprocess.run(["openssl", "pkey", "-in", key_path, "-noout", "-text"],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"priv:\s*((?:[0-9a-f]{2}:?\s*)+)", out)
    assert m, out
    hexs = re.sub(r"[\s:]", "", m.group(1))
    hexs = hexs[2:] if len(hexs) == 66 and hexs.startswith("00") else hexs
    needles += [hexs, hexs.upper(), "PRIVATE KEY"]
    return needles


def test_no_key_material_in_logs_or_admin_output(pki, procs):
    a_in, a_out = free_port(), free_port()
    echo, in_t, out_t = pair(procs, pki, in_extra=["--admin", addr(LOOP, a_in)],
                             out_extra=["--admin", addr(LOOP, a_out)])
    with out_t.connect() as s:
        assert echo_roundtrip(s, b"hello") == b"hello"
    # a refused handshake (recorded in /debug/tls-failures) and a reload
    with tls_connect(client_ctx(pki, "denied"), LOOP, in_t.port) as s:
        closed_by_peer(s, 5)
    in_t.proc.send_signal(signal.SIGHUP)
    in_t.proc.wait_log("tls.reloaded", 10)
    texts = {"inbound log": in_t.log(), "outbound log": out_t.log()}
    for name, port in (("inbound", a_in), ("outbound", a_out)):
        for path in ADMIN_GETS:
            status, body = http(port, path)
            texts[f"{name} GET {path} ({status})"] = body
    needles = key_needles(os.path.join(pki, "server.key")) + \
        key_needles(os.path.join(pki, "client.key"))
    for name, text in texts.items():
        for n in needles:
            assert n not in text, f"key material {n[:12]}... in {name}"
    # No file is written: the only regular files open for writing are the logs we gave.
    for t in (in_t, out_t):
        for fd in os.listdir(f"/proc/{t.proc.pid}/fd"):
            try:
                target = os.readlink(f"/proc/{t.proc.pid}/fd/{fd}")
                with open(f"/proc/{t.proc.pid}/fdinfo/{fd}") as f:
                    flags = int(re.search(r"flags:\s*(\d+)", f.read()).group(1), 8)
            except (FileNotFoundError, AttributeError):
                continue
            if target.startswith("/") and not target.startswith("/dev/") and flags & 3:
                assert target == t.proc.log_path, f"pid {t.proc.pid} writes {target}"


def test_tls12_refused_both_directions(pki, procs):
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki)
    c = client_ctx(pki, "client", tls12=True)
    c.minimum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with tls_connect(c, LOOP, in_t.port) as s:
            s.sendall(b"x")
            if not s.recv(1):
                raise ConnectionError("closed")
    wait_for(lambda: [e for e in events(in_t.proc, "tls.handshake_failed")
                      if e.get("reason") == "protocol_version"], 5, what="protocol_version")
    assert echo.stats()["bytes"] == 0

    # Outbound to a TLS 1.2-only server (openssl s_server -tls1_2).
    from tunnelkit import start_s_server
    srv = start_s_server(procs, pki, tls="-tls1_2")
    out_t = start_tunnel(procs, "outbound", srv.target, pki)
    with out_t.connect() as s:
        s.sendall(b"must not arrive")
        closed, got = closed_by_peer(s, 8)
    assert closed and got == b""
    wait_for(lambda: events(out_t.proc, "tls.handshake_failed"), 5, what="outbound refusal")
    assert "must not arrive" not in srv.new_output()


def test_wrong_spiffe_id_refused_on_every_path(pki, procs):
    # Inbound: "denied" is signed by our CA, ID ns/evil/sa/mallory, not allowed.
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki)
    for cert in ("denied", "othertd"):
        with tls_connect(client_ctx(pki, cert), LOOP, in_t.port) as s:
            try:
                s.sendall(b"must not arrive")
            except OSError:
                pass
            closed, got = closed_by_peer(s, 5)
        assert closed and got == b"", cert
    reasons = {e.get("reason") for e in events(in_t.proc, "tls.handshake_failed")}
    assert reasons <= {"not_allowed", "bad_svid", "spiffe_id_mismatch"} and reasons, reasons
    assert echo.stats()["bytes"] == 0
    # Outbound: the server presents a valid cert for another ID than --peer-id.
    peer = FakeUpstream(pki, tls=True, cert="denied")
    procs.items.append(peer)
    out_t = start_tunnel(procs, "outbound", peer.target, pki, peer_id=SERVER_ID)
    with out_t.connect() as s:
        s.sendall(b"must not arrive")
        closed, got = closed_by_peer(s, 8)
    assert closed and got == b""
    wait_for(lambda: [e for e in events(out_t.proc, "tls.handshake_failed")
                      if e.get("reason") == "spiffe_id_mismatch"], 5, what="spiffe_id_mismatch")


def _resume(ctx, port, session=None):
    s = tls_connect(ctx, LOOP, port) if session is None else None
    if s is None:
        raw = socket.create_connection((LOOP, port), timeout=10)
        raw.settimeout(10)
        s = ctx.wrap_socket(raw, session=session)
    assert echo_roundtrip(s, b"resume?") == b"resume?"  # tickets arrive after the handshake
    sess, reused = s.session, s.session_reused
    s.close()
    return sess, reused


def test_resumption_reauthorizes_and_dies_with_a_trust_change(pki, procs, tmp_path):
    trust = str(tmp_path / "trust.pem")
    shutil.copy(os.path.join(pki, "ca.pem"), trust)
    admin = free_port()
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki, trust=trust,
                        extra=["--admin", addr(LOOP, admin)])
    ctx = client_ctx(pki, "client")
    sess, reused = _resume(ctx, in_t.port)
    assert not reused
    allow0 = admin_metric(admin, "seam_authz_decisions_total", {"result": "allow"}) or 0
    sess2, reused = _resume(ctx, in_t.port, sess)
    if not reused:
        pytest.skip("the sidecar did not resume a TLS 1.3 session (resumption off)")
    # The resumed connection was authorized again, with the client's identity.
    wait_for(lambda: admin_metric(admin, "seam_authz_decisions_total",
                                  {"result": "allow"}) >= allow0 + 1, 5, what="authz on resume")
    closes = events(in_t.proc, "conn.close")
    assert closes and closes[-1]["peer_id"] == CLIENT_ID, closes[-1:]
    # Trust change: the bundle no longer holds our CA. The old session must not
    # get the client in.
    shutil.copy(os.path.join(pki, "ca2.pem"), trust)
    in_t.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len(events(in_t.proc, "tls.reloaded")) >= 1, 10, what="reload")
    bytes_before = echo.stats()["bytes"]
    with pytest.raises((ssl.SSLError, ConnectionError, OSError, AssertionError)):
        _resume(ctx, in_t.port, sess2)
    assert echo.stats()["bytes"] == bytes_before


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to start the sidecar as uid 1337")
def test_runs_as_uid_1337_without_capabilities(pki, procs):
    # The pod spec starts the sidecar as 1337:1337 with every capability
    # dropped; check it needs nothing more. Its files must be readable by 1337
    # (a dir of its own under /tmp, removed at the end).
    top = tempfile.mkdtemp(prefix="seam-rel-1337-")
    try:
        _run_as_1337(pki, procs, top)
    finally:
        for p in list(procs.items):
            p.stop()
        shutil.rmtree(top, ignore_errors=True)


def _run_as_1337(pki, procs, top):
    os.chmod(top, 0o755)
    d = pathlib.Path(top) / "pki"
    d.mkdir()
    for n in ("ca.pem", "server.pem", "server.key"):
        shutil.copy(os.path.join(pki, n), d / n)
    for p in [d] + list(d.iterdir()):
        os.chown(p, 1337, 1337)
    os.chmod(d, 0o700)
    echo = Echo(procs)
    pre = ["setpriv", "--reuid=1337", "--regid=1337", "--clear-groups", "--inh-caps=-all",
           "--bounding-set=-all", "--no-new-privs"]
    port = free_port()
    args = pre + [seamtest.binary("seam-sidecar"), "tunnel", "inbound", "--listen",
                  addr(LOOP, port), "--target", echo.target, "--cert", str(d / "server.pem"),
                  "--key", str(d / "server.key"), "--trust", str(d / "ca.pem"),
                  "--allow", "spiffe://cluster.local/ns/default/*", "--drain-timeout", "5s"]
    in_t = start_tunnel(procs, "inbound", None, str(d), args=args, port=port)
    st = proc_status(in_t.proc.pid)
    assert st["Uid"].split() == ["1337"] * 4, st["Uid"]
    assert st["Gid"].split() == ["1337"] * 4, st["Gid"]
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(st[cap], 16) == 0, f"{cap}={st[cap]}"
    assert st.get("NoNewPrivs") == "1"
    with tls_connect(client_ctx(pki, "client"), LOOP, port) as s:
        assert echo_roundtrip(s, b"as 1337") == b"as 1337"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the drop from root is what is tested")
def test_run_started_as_root_drops_to_1337(pki, procs):
    """seam-init exempts only uid 1337's traffic, so `run` started as root
    must become 1337:1337 itself, with no groups and no capabilities, before
    it opens anything (here it has no control plane: it keeps retrying)."""
    top = tempfile.mkdtemp(prefix="seam-rel-drop-")
    try:
        os.chmod(top, 0o755)
        trust = os.path.join(top, "ca.pem")
        shutil.copy(os.path.join(pki, "ca.pem"), trust)
        os.chmod(trust, 0o644)
        admin = free_port()
        p = procs.start([seamtest.binary("seam-sidecar"), "run",
                         "--control-plane", f"127.0.0.1:{free_port()}",
                         "--control-plane-trust", trust, "--namespace", "default",
                         "--service-account", "web", "--admin", addr(LOOP, admin),
                         "--outbound-port", str(free_port()), "--inbound-port", str(free_port())])
        p.wait_log("sidecar.privileges_dropped", timeout=10)
        st = proc_status(p.pid)
        assert st["Uid"].split() == ["1337"] * 4, st["Uid"]
        assert st["Gid"].split() == ["1337"] * 4, st["Gid"]
        assert st["Groups"].strip() == "", st["Groups"]
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(st[cap], 16) == 0, f"{cap}={st[cap]}"
        assert st.get("NoNewPrivs") == "1"
        assert p.alive(), p.log()
        # The explicit opt-out keeps root (tests without interception only).
        q = procs.start([seamtest.binary("seam-sidecar"), "run",
                         "--control-plane", f"127.0.0.1:{free_port()}",
                         "--control-plane-trust", trust, "--namespace", "default",
                         "--service-account", "web", "--admin", addr(LOOP, free_port()),
                         "--outbound-port", str(free_port()), "--inbound-port", str(free_port()),
                         "--proxy-uid", "0"])
        q.wait_log("sidecar.running_as_root", timeout=10)
        assert proc_status(q.pid)["Uid"].split() == ["0"] * 4
    finally:
        for p in list(procs.items):
            p.stop()
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                    reason="needs root and iproute2 to create a network namespace")
def test_admin_mutations_refused_from_non_loopback(pki, procs):
    tag = uuid.uuid4().hex[:6]
    ns, host_if, ns_if = f"seamrel{tag}", f"srh{tag}", f"srn{tag}"
    o2, o3 = int(tag[:2], 16), int(tag[2:4], 16) & 0xFC
    # 10.200-239.x.x/30: clear of the mesh e2e range (10.244.0.0/24)
    host_ip, ns_ip = f"10.{200 + o2 % 40}.{o3}.1", f"10.{200 + o2 % 40}.{o3}.2"

    def ip(*a, check=True):
        return subprocess.run(["ip", *a], check=check, capture_output=True, text=True)

    ip("netns", "add", ns)
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip("link", "set", ns_if, "netns", ns)
        ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("-n", ns, "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        ip("-n", ns, "link", "set", ns_if, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        admin, port, app = 15000 + o2, 16000 + o3, 17000 + o2  # fresh namespace: all free
        args = ["ip", "netns", "exec", ns, seamtest.binary("seam-sidecar"), "tunnel", "inbound",
                "--listen", f"127.0.0.1:{port}", "--target", f"127.0.0.1:{app}",
                "--cert", os.path.join(pki, "server.pem"), "--key", os.path.join(pki, "server.key"),
                "--trust", os.path.join(pki, "ca.pem"), "--allow",
                "spiffe://cluster.local/ns/default/*", "--admin", f"0.0.0.0:{admin}",
                "--drain-timeout", "2s"]
        t = start_tunnel(procs, "inbound", None, pki, args=args, port=port)
        wait_for(lambda: http(admin, "/healthz/live", host=ns_ip, timeout=2)[0] == 200, 10,
                 what="admin reachable from outside the namespace")
        # Reads are allowed from the network; mutations are not.
        assert http(admin, "/metrics", host=ns_ip)[0] == 200
        for path in ("/drain", "/quitquitquit"):
            status, body = http(admin, path, method="POST", host=ns_ip)
            assert status == 403, (path, status, body)
        assert t.proc.alive(), "a non-loopback POST stopped the sidecar"
        # From inside the namespace, over loopback, /drain works (exit 0).
        r = subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "-o", "/dev/null", "-w",
                            "%{http_code}", "-X", "POST", f"http://127.0.0.1:{admin}/drain"],
                           capture_output=True, text=True, timeout=10)
        assert r.stdout.strip() == "200", r
        assert t.proc.p.wait(10) == 0
    finally:
        for p in list(procs.items):
            p.stop()
        ip("link", "del", host_if, check=False)
        ip("netns", "del", ns, check=False)


def test_certify_writes_a_key_only_with_out_dir(pki, procs, tmp_path):
    """`seam-sidecar certify` prints the certificate's facts; the private key
    goes nowhere (not stdout, stderr or the working directory) unless
    --out-dir is given, and then only into a 0600 file."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "identity"))
    import idkit
    cp = idkit.ControlPlane(procs, tmp_path, ttl="1h")
    wait_for(lambda: os.path.exists(cp.root), 10, what="control plane root file")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    base = [seamtest.binary("seam-sidecar"), "certify", "--control-plane",
            f"127.0.0.1:{cp.port}", "--control-plane-trust", cp.root,
            "--token-file", cp.token_files["in"], "--spiffe-id", idkit.ID_IN]
    r = subprocess.run(base, cwd=cwd, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "PRIVATE KEY" not in r.stdout + r.stderr
    assert list(cwd.iterdir()) == []
    out = tmp_path / "out"
    r = subprocess.run(base + ["--out-dir", str(out)], cwd=cwd, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    assert "PRIVATE KEY" not in r.stdout + r.stderr
    key = out / "key.pem"
    assert key.exists() and (key.stat().st_mode & 0o077) == 0, oct(key.stat().st_mode)
    assert "PRIVATE KEY" in key.read_text()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to start the sidecar as uid 1337")
def test_mesh_sidecar_runs_as_uid_1337_without_capabilities(pki, procs, tmp_path):
    """`seam-sidecar run` (mesh mode) started as the pod spec starts it
    (1337:1337, every capability dropped, no_new_privs) gets its certificate
    and config, becomes ready, and holds no capability."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "identity"))
    import idkit
    cp = idkit.ControlPlane(procs, tmp_path, ttl="1h",
                            ca=(os.path.join(pki, "ca.pem"), os.path.join(pki, "ca.key")))
    wait_for(lambda: os.path.exists(cp.root), 10, what="control plane root file")
    use_mesh_with_a_port(cp)
    top = tempfile.mkdtemp(prefix="seam-rel-1337-run-")
    try:
        os.chmod(top, 0o755)
        root, tok = os.path.join(top, "root.pem"), os.path.join(top, "token")
        shutil.copy(cp.root, root)
        shutil.copy(cp.token_files["in"], tok)
        for p in (root, tok):
            os.chown(p, 1337, 1337)
            os.chmod(p, 0o400)
        admin = free_port()
        pre = ["setpriv", "--reuid=1337", "--regid=1337", "--clear-groups", "--inh-caps=-all",
               "--bounding-set=-all", "--no-new-privs"]
        p = procs.start(pre + [seamtest.binary("seam-sidecar"), "run", "--control-plane",
                               f"127.0.0.1:{cp.port}", "--control-plane-trust", root,
                               "--token-file", tok, "--namespace", "default",
                               "--service-account", "in", "--pod-ip", "127.0.0.1",
                               "--outbound-port", str(free_port()),
                               "--inbound-port", str(free_port()),
                               "--admin", addr(LOOP, admin), "--drain-timeout", "2s"])
        wait_for(lambda: http(admin, "/healthz/ready")[0] == 200, 30, interval=0.2,
                 what="run ready as uid 1337")
        st = proc_status(p.pid)
        assert st["Uid"].split() == ["1337"] * 4, st["Uid"]
        assert st["Gid"].split() == ["1337"] * 4, st["Gid"]
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(st[cap], 16) == 0, f"{cap}={st[cap]}"
        p.send_signal(signal.SIGTERM)
        assert p.p.wait(15) == 0, p.log()[-2000:]
    finally:
        for q in list(procs.items):
            q.stop()
        shutil.rmtree(top, ignore_errors=True)
