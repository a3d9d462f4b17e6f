"""seam-accel: the sockmap short cut for the plain-text hops (docs/ACCEL.md),
in front of a real tunnel pair (outbound -> mTLS -> inbound) and the echo app.

The test moves its own process into a cgroup v2 directory it creates (so the
client sockets it opens are in it, and every process it starts), attaches
seam-accel there with the outbound's listen port and the app's port, and
checks: the bytes arrive intact both ways, half-close still works, the
plain hops really took the short cut while the mTLS hop between the proxies
did not (the program's own counters), and SIGTERM lets open connections
finish while new ones take the ordinary path. Root only (BPF, cgroups);
skips with the reason elsewhere. Traffic stays on 127.0.0.1.
"""
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "integration", "tunnel"))
import seamtest  # noqa: E402 - tests/conftest.py puts tests/lib on the path
import tunnelkit as tk  # noqa: E402
from seamtest import wait_for  # noqa: E402


def _accel_binary():
    try:
        return seamtest.binary("seam-accel")
    except FileNotFoundError:
        return None


def _cgroup2_dir():
    """This process's own cgroup v2 directory, or None."""
    mnt = None
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                mnt = parts[1]
                break
    if mnt is None:
        return None
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return os.path.join(mnt, line[3:].strip().lstrip("/"))
    return None


ACCEL = _accel_binary()
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (BPF programs, cgroups)"),
    pytest.mark.skipif(ACCEL is None, reason="seam-accel not built (needs clang, libbpf-dev, bpftool)"),
    pytest.mark.skipif(_cgroup2_dir() is None, reason="no cgroup v2 hierarchy mounted"),
]


@pytest.fixture
def cgroup(procs):
    """A fresh cgroup v2 directory holding this test process (and so every
    process and socket the test creates); undone after the test."""
    home = _cgroup2_dir()
    cg = os.path.join(home, f"seam-accel-test-{os.getpid()}")
    try:
        os.mkdir(cg)
    except OSError as e:  # a read-only or delegated-away hierarchy (some containers)
        pytest.skip(f"cannot create a cgroup under {home}: {e}")
    with open(os.path.join(cg, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
    try:
        yield cg
    finally:
        procs.stop_all()
        with open(os.path.join(home, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
        wait_for(lambda: _rmdir(cg), 10, what=f"{cg} to empty")


def _rmdir(path):
    try:
        os.rmdir(path)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


class Accel:
    def __init__(self, procs, cg, ports, extra=()):
        args = [ACCEL, "--cgroup", cg, "--drain-timeout", "5s"] + list(extra)
        for p in ports:
            args += ["--port", str(p)]
        self.proc = procs.start(args)
        try:
            self.proc.wait_log("accel.ready", timeout=10)
        except seamtest.ProcessExited:
            log = self.proc.log()
            if "accel.load_failed" in log and "Operation not permitted" in log:
                pytest.skip("this machine does not let root load BPF programs:\n" + log)
            raise

    def stats(self):
        """Asks for the counters (SIGUSR1) and returns the new accel.stats line's fields."""
        n = self.proc.log().count("accel.stats ")
        self.proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: self.proc.log().count("accel.stats ") > n, 10, what="accel.stats")
        line = [ln for ln in self.proc.log().splitlines() if "accel.stats " in ln][-1]
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def tunnels(procs, pki, app_target, host=tk.LOOP):
    """inbound (to app_target) and outbound (to inbound) tunnels."""
    inbound = tk.start_tunnel(procs, "inbound", app_target, pki, host=host)
    outbound = tk.start_tunnel(procs, "outbound", tk.addr(host, inbound.port), pki, host=host)
    return inbound, outbound


def pair(procs, pki, host=tk.LOOP):
    echo = tk.Echo(procs, host=host)
    return (echo,) + tunnels(procs, pki, echo.target, host)


def read_all_hashed(sock):
    """Reads sock to EOF; returns (byte count, sha256 hex)."""
    h, n = hashlib.sha256(), 0
    while True:
        d = sock.recv(1 << 20)
        if not d:
            return n, h.hexdigest()
        h.update(d)
        n += len(d)


def _has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def echo_through(outbound, data, chunk=65536, timeout=30):
    """Sends data (then half-closes) while reading the echo; returns what came back
    and whether EOF followed it."""
    s = outbound.connect(timeout=timeout)
    got = bytearray()
    eof = []

    def reader():
        while True:
            d = s.recv(1 << 20)
            if not d:
                eof.append(True)
                return
            got.extend(d)

    t = threading.Thread(target=reader)
    t.start()
    for i in range(0, len(data), chunk):
        s.sendall(data[i:i + chunk])
    s.shutdown(socket.SHUT_WR)
    t.join(timeout)
    s.close()
    assert not t.is_alive(), f"no EOF after {len(got)} of {len(data)} bytes"
    return bytes(got), bool(eof)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_plain_hops_take_the_short_cut_and_bytes_arrive_intact(procs, cgroup, pki, host):
    if host == "::1" and not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    echo, inbound, outbound = pair(procs, pki, host)
    accel = Accel(procs, cgroup, [outbound.port, echo.port])
    sizes = [1, 100, 4096, 65537, 1 << 20] * 4 + [16 << 20]
    payloads = [os.urandom(n) for n in sizes]
    results = [None] * len(payloads)

    def one(i):
        results[i] = echo_through(outbound, payloads[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(payloads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i, (data, r) in enumerate(zip(payloads, results)):
        assert r is not None, f"connection {i} ({len(data)} bytes) did not finish"
        got, eof = r
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest(), \
            f"connection {i}: {len(got)} of {len(data)} bytes, content differs"
        assert eof, f"connection {i}: no EOF after the echo"
    total = sum(sizes)
    wait_for(lambda: echo.stats()["bytes"] >= total, 10, what="echo app counted every byte")
    st = accel.stats()
    # Four plain crossings per byte (client->outbound, inbound->app, app->inbound,
    # outbound->client). The 16 MiB stream may leave the short cut part-way
    # (--max-unanswered); the small echoes take it, at least half of their crossings ...
    small = sum(n for n in sizes if n < (4 << 20))
    assert st["redirected_bytes"] >= 2 * small, st
    # ... and never the mTLS hop between the proxies (that would add two more).
    assert st["redirected_bytes"] <= 4 * total, st
    # client + accepted socket at the outbound, upstream + accepted at the app.
    assert st["sockets"] >= 2 * len(sizes), st


def test_a_peer_outside_the_cgroup_gets_the_ordinary_path(procs, cgroup, pki):
    """The app runs outside the accelerator's cgroup: the inbound's upstream socket
    is selected (the app's port) but its peer is not in the map, so those bytes go
    the ordinary way (counted as passed) and still arrive intact."""
    home = os.path.dirname(cgroup)  # where this test ran before the fixture moved it
    port = seamtest.free_port()
    app = procs.start(["sh", "-c", f"echo $$ > {home}/cgroup.procs && exec \"$0\" \"$@\"",
                       sys.executable, os.path.join(tk.HERE, "echo_app.py"),
                       "--listen", tk.addr(tk.LOOP, port),
                       "--stats", tk.tmpfile("echo-", ".json")])
    app.wait_log("echo.ready", timeout=10)
    with open(f"/proc/{app.pid}/cgroup") as f:
        assert f"seam-accel-test-{os.getpid()}" not in f.read()
    inbound, outbound = tunnels(procs, pki, tk.addr(tk.LOOP, port))
    accel = Accel(procs, cgroup, [outbound.port, port])
    data = os.urandom(3 << 20)
    got, eof = echo_through(outbound, data)
    assert got == data and eof
    st = accel.stats()
    assert st["passed_msgs"] > 0, st
    # Only the client <-> outbound hop was redirected: at most 2x the payload.
    assert 0 < st["redirected_bytes"] <= 2 * len(data), st


def test_a_stalled_reader_gets_tcp_flow_control_back(procs, cgroup, pki):
    """The kernel gives a redirected hop no backpressure. An app that stops
    reading must still stop the sender (as TCP would), not let the sidecar
    queue without bound in the app's socket: past --max-unanswered the sockets
    leave the short cut and TCP's window takes over; then every byte arrives, in order."""
    srv = socket.socket()
    srv.bind((tk.LOOP, 0))
    srv.listen(1)
    app_port = srv.getsockname()[1]
    go = threading.Event()
    result = {}

    def app():
        c, _ = srv.accept()
        go.wait(60)
        c.settimeout(60)
        result["got"] = read_all_hashed(c)
        c.close()

    t = threading.Thread(target=app)
    t.start()
    inbound, outbound = tunnels(procs, pki, tk.addr(tk.LOOP, app_port))
    accel = Accel(procs, cgroup, [outbound.port, app_port], extra=["--max-unanswered", "1MiB"])
    s = outbound.connect()
    s.setblocking(False)
    chunk = os.urandom(1 << 16)
    h, sent, cap = hashlib.sha256(), 0, 256 << 20
    blocked_since = None
    try:
        # Send until the path pushes back for a whole second (or 256 MiB, the unbounded case).
        while sent < cap:
            try:
                n = s.send(chunk)
                h.update(chunk[:n])
                sent += n
                blocked_since = None
            except BlockingIOError:
                now = time.monotonic()
                blocked_since = blocked_since or now
                if now - blocked_since > 1.0:
                    break
                time.sleep(0.005)
        # Without the bound all 256 MiB would be taken into the app's socket.
        assert sent < 96 << 20, f"{sent >> 20} MiB taken while the app read nothing"
        st = accel.stats()
        assert st["fallbacks"] >= 1, st
    finally:
        go.set()
    s.setblocking(True)
    s.shutdown(socket.SHUT_WR)
    t.join(60)
    s.close()
    srv.close()
    assert result.get("got") == (sent, h.hexdigest()), (result, sent)


def test_sendfile_download_arrives_intact(procs, cgroup, pki, tmp_path):
    """An app that serves a file with sendfile(2) (nginx does, the bench's backend
    too): 48 MiB through the accelerated pair, byte for byte, past the point
    where the one-way stream leaves the short cut."""
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(48 << 20))
    want = hashlib.sha256(blob.read_bytes()).hexdigest()
    srv = socket.socket()
    srv.bind((tk.LOOP, 0))
    srv.listen(1)
    app_port = srv.getsockname()[1]

    def app():
        c, _ = srv.accept()
        c.recv(16)  # the request
        with open(blob, "rb") as f:
            c.sendfile(f)
        c.shutdown(socket.SHUT_WR)
        c.close()

    t = threading.Thread(target=app)
    t.start()
    inbound, outbound = tunnels(procs, pki, tk.addr(tk.LOOP, app_port))
    accel = Accel(procs, cgroup, [outbound.port, app_port])
    s = outbound.connect(timeout=60)
    s.sendall(b"GET")
    got = read_all_hashed(s)
    s.close()
    t.join(30)
    srv.close()
    assert got == (48 << 20, want)
    st = accel.stats()
    assert st["redirected_bytes"] > 0 and st["fallbacks"] >= 1, st


def test_sigterm_keeps_open_connections_and_stops_selecting_new_ones(procs, cgroup, pki):
    echo, inbound, outbound = pair(procs, pki)
    accel = Accel(procs, cgroup, [outbound.port, echo.port])
    a = outbound.connect()
    assert tk.echo_roundtrip(a, b"before" * 1000) == b"before" * 1000
    before = accel.stats()
    assert before["open"] >= 2 and before["redirected_bytes"] > 0, before
    accel.proc.send_signal(signal.SIGTERM)
    accel.proc.wait_log("accel.draining", timeout=10)
    # A new connection works and is not selected any more ...
    b = outbound.connect()
    assert tk.echo_roundtrip(b, b"new" * 3000) == b"new" * 3000
    # ... the open one still works through the short cut ...
    assert tk.echo_roundtrip(a, b"during" * 1000) == b"during" * 1000
    assert accel.proc.alive(), accel.proc.log()
    after = accel.stats()
    assert after["sockets"] == before["sockets"], (before, after)
    assert after["redirected_bytes"] >= before["redirected_bytes"] + 2 * 6000, (before, after)
    # ... and once it closes, seam-accel exits 0 without waiting for the timeout.
    a.close()
    b.close()
    wait_for(lambda: not accel.proc.alive(), 8, what="seam-accel to exit after the drain")
    assert accel.proc.p.returncode == 0, accel.proc.log()
    assert "accel.stopped" in accel.proc.log()
    assert "accel.drain_timeout" not in accel.proc.log()
    # The sidecars never noticed.
    for t in (outbound, inbound):
        assert t.proc.stop() == 0, t.log()


def _run(args, **kw):
    return subprocess.run([ACCEL] + args, capture_output=True, text=True, timeout=20,
                          stdin=subprocess.DEVNULL, **kw)


@pytest.mark.parametrize("args,rc,needle", [
    ([], 2, "--cgroup"),
    (["--cgroup", "/tmp", "--port", "15001"], 2, "not a cgroup v2 directory"),
    (["--cgroup", "@CG", "--port", "0"], 2, "--port"),
    (["--cgroup", "@CG", "--port", "15001,http"], 2, "\"http\" is not a port"),
    (["--cgroup", "@CG", "--port", "15001", "--drain-timeout", "soon"], 2, "--drain-timeout"),
    (["--cgroup", "@CG", "--port", "15001", "--max-unanswered", "1k"], 2, "at least 64KiB"),
    (["--cgroup", "/nonexistent/cg", "--port", "15001"], 1, "accel.cgroup_failed"),
])
def test_bad_flags_are_named(args, rc, needle):
    args = [_cgroup2_dir() if a == "@CG" else a for a in args]
    r = _run(args)
    assert r.returncode == rc, (r.stdout, r.stderr)
    assert needle in r.stderr, r.stderr


def test_unprivileged_is_refused_with_the_reason(tmp_path):
    # uid 1337 may not reach the build tree (a checkout in a 0700 directory): run a copy.
    d = tempfile.mkdtemp(prefix="seam-accel-")
    os.chmod(d, 0o755)
    exe = os.path.join(d, "seam-accel")
    shutil.copy2(ACCEL, exe)
    try:
        r = subprocess.run([exe, "--cgroup", _cgroup2_dir(), "--port", "15001"],
                           capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL,
                           preexec_fn=lambda: (os.setgroups([]), os.setgid(1337), os.setuid(1337)))
    finally:
        shutil.rmtree(d)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "CAP_BPF" in r.stderr, r.stderr


def test_help_names_every_flag():
    r = _run(["--help"])
    assert r.returncode == 0
    for flag in ("--cgroup", "--port", "--drain-timeout", "--max-unanswered", "--stats-interval",
                 "SEAM_PORT"):
        assert flag in r.stdout, r.stdout
