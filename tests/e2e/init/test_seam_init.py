"""seam-init: the nat rules it installs, idempotency, uninstall, backends, and
real redirection, each inside network namespaces this test creates and removes.

Root-only parts skip with a reason when not root. The flag / dry-run /
error-mapping checks run anywhere (the last one uses fake iptables tools).
"""
import itertools
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

# Self-contained on purpose (no tests/lib import): this file only needs a
# binary path and a few processes it ends by PID.
BUILD_DIR = os.environ.get("SEAM_BUILD_DIR") or os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "build")

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (network namespaces, iptables)")
_counter = itertools.count()

PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
CHAINS = ("SEAM_INBOUND", "SEAM_IN_REDIRECT", "SEAM_OUTPUT", "SEAM_REDIRECT")


@pytest.fixture(scope="module")
def seam_init():
    p = os.path.join(BUILD_DIR, "sidecar", "seam-init")
    if not os.path.exists(p):
        pytest.skip(f"seam-init not built under {BUILD_DIR}")
    return p


class Server:
    """A listener process we started; ended by its PID."""

    def __init__(self, args, log_path):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.p = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                if b"ready" in f.read():
                    return
            assert self.p.poll() is None, open(self.log_path).read()
            time.sleep(0.02)
        raise TimeoutError(f"{self.p.args} not ready after {timeout}s")

    def stop(self):
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.p.pid, signal.SIGKILL)
                self.p.wait(5)
        self.log.close()


@pytest.fixture
def servers():
    started = []
    yield started
    for s in reversed(started):
        s.stop()


def run(args, ns=None, env=None, timeout=30):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def netns():
    """Creates network namespaces by name on demand; deletes them afterwards."""
    made = []

    def make():
        name = f"seam-init-test-{os.getpid()}-{next(_counter)}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        made.append(name)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        return name

    yield make
    for name in reversed(made):
        subprocess.run(["ip", "netns", "del", name], check=False)


def backends():
    out = [pytest.param("nft", marks=pytest.mark.skipif(
        not shutil.which("iptables-nft-restore"), reason="iptables-nft not installed"))]
    out.append(pytest.param("legacy", marks=pytest.mark.skipif(
        not shutil.which("iptables-legacy-restore"), reason="iptables-legacy not installed")))
    return out


def save_tool(family, backend):
    """The save tool of |backend|; None means the system default."""
    base = "iptables" if family == 4 else "ip6tables"
    return f"{base}-{backend}-save" if backend else f"{base}-save"


def our_rules(ns, family, backend):
    """Normalized nat lines that mention our chains, in iptables-save order."""
    r = run([save_tool(family, backend), "-t", "nat"], ns=ns)
    assert r.returncode == 0, r.stderr
    lines = []
    for line in r.stdout.splitlines():
        if "SEAM_" not in line or line.startswith("#"):
            continue
        line = line.replace(" -m tcp", "").replace(" -m udp", "")
        lines.append(" ".join(line.split()))
    return lines


def expected_rules(family, uid=1337, gid=1337, inbound=15006, outbound=15001,
                   excl_in=(), excl_out=(), cidrs=()):
    """The intended rule set, written out independently of seam-init."""
    lo_net = "127.0.0.0/8" if family == 4 else "::1/128"
    rules = [f":{c} - [0:0]" for c in CHAINS]
    rules += ["-A PREROUTING -p tcp -j SEAM_INBOUND", "-A OUTPUT -p tcp -j SEAM_OUTPUT"]
    rules += [f"-A SEAM_INBOUND -p tcp --dport {p} -j RETURN" for p in (15020, 15021, *excl_in)]
    rules += ["-A SEAM_INBOUND -p tcp -j SEAM_IN_REDIRECT",
              f"-A SEAM_IN_REDIRECT -p tcp -j REDIRECT --to-ports {inbound}"]
    rules += [f"-A SEAM_OUTPUT -p tcp --dport {p} -j RETURN" for p in excl_out]
    rules += [f"-A SEAM_OUTPUT -m owner --uid-owner {uid} -j RETURN",
              f"-A SEAM_OUTPUT -m owner --gid-owner {gid} -j RETURN",
              "-A SEAM_OUTPUT -o lo -j RETURN",
              f"-A SEAM_OUTPUT -d {lo_net} -j RETURN"]
    rules += [f"-A SEAM_OUTPUT -d {c} -j RETURN" for c in cidrs]
    rules += ["-A SEAM_OUTPUT -j SEAM_REDIRECT",
              f"-A SEAM_REDIRECT -p tcp -j REDIRECT --to-ports {outbound}"]
    return rules


def canon(rules):
    # iptables-save groups rules per chain in chain order; compare per chain,
    # keeping the order inside each chain (it is what matters).
    chains = {}
    for r in rules:
        key = r.split()[1] if r.startswith("-A") else r
        chains.setdefault(key, []).append(r)
    return chains


# --- anywhere -------------------------------------------------------------

@pytest.mark.parametrize("args,needle", [
    ([], "missing command"),
    (["frob"], "unknown command"),
    (["install", "--bogus"], "unknown option"),
    (["install", "--inbound-port"], "needs a value"),
    (["install", "--inbound-port", "0"], "--inbound-port"),
    (["install", "--outbound-port", "65536"], "--outbound-port"),
    (["install", "--inbound-port", "15001"], "must differ"),
    (["install", "--proxy-uid", "abc"], "--proxy-uid"),
    (["install", "--exclude-inbound-ports", "80,,81"], "--exclude-inbound-ports"),
    (["install", "--exclude-outbound-ports", "70000"], "--exclude-outbound-ports"),
    (["install", "--exclude-outbound-cidrs", "10.0.0.0/33"], "--exclude-outbound-cidrs"),
    (["install", "--exclude-outbound-cidrs", "not-an-ip"], "--exclude-outbound-cidrs"),
    (["install", "--ipv6", "maybe"], "--ipv6"),
    (["install", "--backend", "ebpf"], "--backend"),
    (["install", "extra"], "unexpected argument"),
])
def test_bad_flags_exit_2(seam_init, args, needle):
    r = run([seam_init, *args])
    assert r.returncode == 2, (args, r.stdout, r.stderr)
    assert needle in r.stderr, r.stderr
    assert "SEAM_" not in r.stdout


def test_dry_run_prints_rules(seam_init):
    r = run([seam_init, "install", "--dry-run", "--backend", "nft", "--ipv6", "on",
             "--exclude-inbound-ports", "9090", "--exclude-outbound-ports", "3306",
             "--exclude-outbound-cidrs", "10.1.2.3/8,fd00::/8", "--proxy-uid", "2102"])
    if r.returncode == 1 and "not found" in r.stderr:
        pytest.skip("iptables-nft tools not installed: " + r.stderr.strip())
    assert r.returncode == 0, r.stderr
    assert "backend nft" in r.stdout
    v4, v6 = r.stdout.split("# IPv6:")
    for text, fam in ((v4, 4), (v6, 6)):
        got = [ln for ln in text.splitlines() if ln.startswith(("-A", ":SEAM"))]
        want = expected_rules(fam, uid=2102, gid=2102, excl_in=(9090,), excl_out=(3306,),
                              cidrs=("10.0.0.0/8",) if fam == 4 else ("fd00::/8",))
        assert canon(got) == canon(want), "\n".join(got)
    # Uninstall's dry run lists the chain removals.
    r = run([seam_init, "uninstall", "--dry-run", "--backend", "nft"])
    assert r.returncode == 0, r.stderr
    for c in CHAINS:
        assert f"-X {c}" in r.stdout


def test_error_names_failing_rule(seam_init, tmp_path):
    """iptables-restore reports a line number; seam-init prints that rule."""
    fake = tmp_path / "bin"
    fake.mkdir()
    scripts = {
        "iptables": 'echo "iptables v1.8.9 (nf_tables)"',
        "iptables-nft-save": 'echo "*nat"; echo "COMMIT"',
        "iptables-nft-restore": textwrap.dedent("""\
            [ "$1" = --version ] && { echo "iptables-nft-restore v1.8.9 (nf_tables)"; exit 0; }
            cat > /dev/null
            echo "iptables-nft-restore v1.8.9 (nf_tables): invalid port/service" >&2
            echo "Error occurred at line: 11" >&2
            exit 2"""),
    }
    for name, body in scripts.items():
        p = fake / name
        p.write_text("#!/bin/sh\n" + body + "\n")
        p.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}:/usr/bin:/bin")
    # Hide the real sbin tools: seam-init also searches /usr/sbin, so pick a
    # backend whose fake is first on PATH and disable IPv6.
    r = run([seam_init, "install", "--ipv6", "off", "--exclude-outbound-ports", "3306"],
            env=env)
    assert r.returncode == 1, (r.stdout, r.stderr)
    # Line 11 of the restore input (see the dry-run layout) is the first
    # SEAM_OUTPUT rule: the excluded port.
    assert "rejected rule at line 11: -A SEAM_OUTPUT -p tcp --dport 3306 -j RETURN" in r.stderr
    assert "invalid port/service" in r.stderr


def test_failed_family_rolls_back_the_other(seam_init, tmp_path):
    """IPv6 failing after IPv4 succeeded must not leave an IPv4-only capture."""
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "calls.log"
    save = 'printf "*nat\\n:SEAM_OUTPUT - [0:0]\\n-A OUTPUT -p tcp -j SEAM_OUTPUT\\nCOMMIT\\n"'
    scripts = {
        "iptables": 'echo "iptables v1.8.9 (nf_tables)"',
        "iptables-nft-save": save,
        "ip6tables-nft-save": save,
        "iptables-nft-restore": f'[ "$1" = --version ] && exit 0\n'
                                f'echo "== v4 $*" >> {log}; cat >> {log}',
        "ip6tables-nft-restore": f'[ "$1" = --version ] && exit 0\n'
                                 f'echo "== v6 $*" >> {log}; cat >> {log}\n'
                                 'echo "ip6tables-nft-restore: line 3 failed" >&2; exit 1',
    }
    for name, body in scripts.items():
        p = fake / name
        p.write_text("#!/bin/sh\n" + body + "\n")
        p.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}:/usr/bin:/bin")
    r = run([seam_init, "install", "--ipv6", "on"], env=env)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "rejected rule at line 3: :SEAM_IN_REDIRECT - [0:0]" in r.stderr
    assert "rolled back the IPv4 rules" in r.stderr
    calls = log.read_text().split("== ")
    assert [c.split()[0] for c in calls if c] == ["v4", "v6", "v4"]
    assert "--noflush" in calls[1]
    # The install deleted the old jump first; the rollback removes the chains.
    assert "-D OUTPUT -p tcp -j SEAM_OUTPUT" in calls[1]
    assert "-X SEAM_OUTPUT" in calls[3] and "-A " not in calls[3]


# --- root: real rules in a namespace ----------------------------------------

@needs_root
@pytest.mark.parametrize("backend", backends())
def test_install_idempotent_uninstall(seam_init, netns, backend):
    ns = netns()
    flags = ["--backend", backend, "--ipv6", "on", "--exclude-inbound-ports", "9090,8443",
             "--exclude-outbound-ports", "3306", "--exclude-outbound-cidrs",
             "10.96.0.0/12,fd00:10:96::/112,192.168.1.7"]
    r = run([seam_init, "install", *flags], ns=ns)
    assert r.returncode == 0, r.stderr
    assert f"backend {backend}" in r.stdout
    want = {
        4: expected_rules(4, excl_in=(9090, 8443), excl_out=(3306,),
                          cidrs=("10.96.0.0/12", "192.168.1.7/32")),
        6: expected_rules(6, excl_in=(9090, 8443), excl_out=(3306,),
                          cidrs=("fd00:10:96::/112",)),
    }
    for fam in (4, 6):
        got = our_rules(ns, fam, backend)
        assert canon(got) == canon(want[fam]), "\n".join(got)

    # A second install (even with other settings) replaces, never duplicates.
    r = run([seam_init, "install", *flags], ns=ns)
    assert r.returncode == 0, r.stderr
    for fam in (4, 6):
        got = our_rules(ns, fam, backend)
        assert canon(got) == canon(want[fam]), "\n".join(got)
        assert len(got) == len(set(got))
    r = run([seam_init, "install", "--backend", backend, "--ipv6", "on",
             "--inbound-port", "16006"], ns=ns)
    assert r.returncode == 0, r.stderr
    for fam in (4, 6):
        got = our_rules(ns, fam, backend)
        assert canon(got) == canon(expected_rules(fam, inbound=16006)), "\n".join(got)

    # Uninstall removes every chain and jump, in both families; a second
    # uninstall is a no-op that still succeeds.
    r = run([seam_init, "uninstall", "--backend", backend, "--ipv6", "on"], ns=ns)
    assert r.returncode == 0, r.stderr
    assert "removed" in r.stdout
    for fam in (4, 6):
        assert our_rules(ns, fam, backend) == []
    r = run([seam_init, "uninstall", "--backend", backend, "--ipv6", "on"], ns=ns)
    assert r.returncode == 0, r.stderr
    assert "nothing to remove" in r.stdout


@needs_root
def test_foreign_rules_survive(seam_init, netns):
    """Install and uninstall touch only our chains and our jumps."""
    ns = netns()
    setup = "*nat\n:OTHER - [0:0]\n-A OTHER -p tcp --dport 1 -j RETURN\n" \
            "-A OUTPUT -p udp -j OTHER\n-A PREROUTING -p tcp --dport 2 -j RETURN\nCOMMIT\n"
    subprocess.run(["ip", "netns", "exec", ns, "iptables-restore", "--noflush"],
                   input=setup, text=True, check=True)
    before = run(["iptables-save", "-t", "nat"], ns=ns).stdout
    foreign = [ln for ln in before.splitlines() if ln.startswith(("-A", ":OTHER"))]
    assert run([seam_init, "install", "--ipv6", "off"], ns=ns).returncode == 0
    assert run([seam_init, "uninstall", "--ipv6", "off"], ns=ns).returncode == 0
    after = run(["iptables-save", "-t", "nat"], ns=ns).stdout
    assert [ln for ln in after.splitlines() if ln.startswith(("-A", ":OTHER"))] == foreign
    assert "SEAM_" not in after


@needs_root
def test_dry_run_changes_nothing(seam_init, netns):
    ns = netns()
    r = run([seam_init, "install", "--dry-run"], ns=ns)
    assert r.returncode == 0, r.stderr
    assert "-A SEAM_OUTPUT -j SEAM_REDIRECT" in r.stdout
    for tool in ("iptables-save", "ip6tables-save"):
        assert "SEAM_" not in run([tool, "-t", "nat"], ns=ns).stdout
    # Also a dry-run uninstall after a real install leaves the rules alone.
    assert run([seam_init, "install"], ns=ns).returncode == 0
    n = len(our_rules(ns, 4, None))
    assert run([seam_init, "uninstall", "--dry-run"], ns=ns).returncode == 0
    assert len(our_rules(ns, 4, None)) == n > 0


@needs_root
def test_auto_uninstall_sweeps_other_backend(seam_init, netns):
    if not (shutil.which("iptables-legacy-restore") and shutil.which("iptables-nft-restore")):
        pytest.skip("needs both iptables-nft and iptables-legacy")
    ns = netns()
    assert run([seam_init, "install", "--backend", "legacy", "--ipv6", "off"],
               ns=ns).returncode == 0
    assert our_rules(ns, 4, "legacy")
    r = run([seam_init, "uninstall", "--ipv6", "off"], ns=ns)
    assert r.returncode == 0, r.stderr
    assert our_rules(ns, 4, "legacy") == []


# --- root: traffic is really redirected ---------------------------------------

SERVER = textwrap.dedent("""\
    import socket, struct, sys, threading
    tag, addrs = sys.argv[1], sys.argv[2:]
    def orig(c):
        try:
            if c.family == socket.AF_INET6:
                raw = c.getsockopt(socket.IPPROTO_IPV6, 80, 28)
                return "[%s]:%d" % (socket.inet_ntop(socket.AF_INET6, raw[8:24]),
                                    struct.unpack_from("!H", raw, 2)[0])
            raw = c.getsockopt(socket.SOL_IP, 80, 16)
            return "%s:%d" % (socket.inet_ntoa(raw[4:8]), struct.unpack_from("!H", raw, 2)[0])
        except OSError:
            return "-"
    def serve(s):
        while True:
            c, _ = s.accept()
            c.sendall(("%s orig=%s\\n" % (tag, orig(c))).encode()); c.close()
    for a in addrs:
        host, port = a.rsplit(":", 1)
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host.strip("[]"), int(port))); s.listen(16)
        threading.Thread(target=serve, args=(s,), daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()
""")

CLIENT = textwrap.dedent("""\
    import socket, sys
    host, port = sys.argv[1], int(sys.argv[2])
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(5)
    s.connect((host, port))
    print(s.recv(200).decode().strip())
""")


def call(ns, host, port, uid=None):
    pre = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] if uid else []
    r = run([*pre, PY, "-c", CLIENT, host, port], ns=ns, timeout=20)
    assert r.returncode == 0, (host, port, uid, r.stderr)
    return r.stdout.strip()


@needs_root
def test_traffic_is_redirected(seam_init, netns, servers, tmp_path):
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) not installed")
    pod, peer = netns(), netns()
    veth = f"si{os.getpid() % 100000}"
    subprocess.run(["ip", "-n", pod, "link", "add", veth, "type", "veth", "peer", "name",
                    "eth0", "netns", peer], check=True)
    for ns, dev, v4, v6 in ((pod, veth, "10.233.0.1", "fd00:233::1"),
                            (peer, "eth0", "10.233.0.2", "fd00:233::2")):
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", dev], check=True)
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad"],
                       check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)

    def serve(ns, tag, *addrs):
        # `ip netns exec` execs the command, so the PID is the server's.
        s = Server(["ip", "netns", "exec", ns, PY, "-c", SERVER, tag, *addrs],
                   str(tmp_path / f"{tag}.log"))
        servers.append(s)
        s.wait_ready()

    # The pod: fake sidecar listeners (inbound binds any address, REDIRECT in
    # PREROUTING targets the interface address) and an excluded admin port.
    serve(pod, "outbound-proxy", "127.0.0.1:15001", "[::1]:15001")
    serve(pod, "inbound-proxy", "0.0.0.0:15006", "[::]:15006")
    serve(pod, "pod-health", "0.0.0.0:15021", "[::]:15021")
    # The peer: the real destinations.
    serve(peer, "peer-app", "0.0.0.0:80", "[::]:80", "0.0.0.0:3306", "[::]:3306")

    r = run([seam_init, "install", "--ipv6", "on", "--exclude-outbound-ports", "3306"], ns=pod)
    assert r.returncode == 0, r.stderr

    for host, orig in (("10.233.0.2", "10.233.0.2:80"), ("fd00:233::2", "[fd00:233::2]:80")):
        # Outbound from an app is captured, with the original destination kept.
        assert call(pod, host, 80, uid=1000) == f"outbound-proxy orig={orig}"
        # The proxy's own traffic (uid 1337) and excluded ports go straight out.
        assert call(pod, host, 80, uid=1337).startswith("peer-app")
        assert call(pod, host, 3306, uid=1000).startswith("peer-app")
    for host, orig in (("10.233.0.1", "10.233.0.1:8080"), ("fd00:233::1", "[fd00:233::1]:8080")):
        # Inbound to any port is captured; 15021 (health) is not.
        assert call(peer, host, 8080) == f"inbound-proxy orig={orig}"
        assert call(peer, host, 15021).startswith("pod-health")
    # Loopback inside the pod is never captured.
    assert call(pod, "127.0.0.1", 15021, uid=1000).startswith("pod-health")

    assert run([seam_init, "uninstall"], ns=pod).returncode == 0
    assert call(pod, "10.233.0.2", 80, uid=1000).startswith("peer-app")
