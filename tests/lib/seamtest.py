"""Shared helpers for seam's integration and e2e tests.

Rules every test follows (README "Testing"):
- traffic only to loopback, or to namespaces the test creates and removes;
- ports are picked free at run time (tests run side by side);
- processes are ended by the PID we started, never by name;
- no sleep-and-hope: wait_for() polls a condition with a deadline.
"""
import hashlib
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time

SOURCE_DIR = os.environ.get("SEAM_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_DIR = os.environ.get("SEAM_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")


def binary(name):
    """Path of a built binary (seam-sidecar, seam-control-plane, seam-init)."""
    for sub in ("sidecar", "control-plane", ""):
        p = os.path.join(BUILD_DIR, sub, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(f"{name} not built under {BUILD_DIR}")


_handed_out = set()
_rng = random.SystemRandom()


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host="127.0.0.1"):
    """A TCP port that was free a moment ago on host.

    Picked at random below the kernel's ephemeral range (ip_local_port_range),
    not with bind(port 0): a port from the ephemeral range can be taken by any
    outgoing connection of a test running beside this one (the load tests make
    thousands) between our pick and the server's bind, and the server then
    exits "address already in use" (a CI failure, stop 12). Ports handed out
    by this process are not handed out again."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    hi = min(_ephemeral_low(), 65536) - 1
    lo = 10000 if hi > 12000 else 1024
    for _ in range(200):
        port = _rng.randint(lo, hi)
        if port in _handed_out:
            continue
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(fam, socket.SOCK_STREAM) as s:  # a crowded range: let the kernel pick
        s.bind((host, 0))
        return s.getsockname()[1]


def free_ports(n, host="127.0.0.1"):
    """n distinct ports from free_port()."""
    return [free_port(host) for _ in range(n)]


class ProcessExited(RuntimeError):
    """A process a test waits on ended before it got ready."""


def wait_for(cond, timeout=10.0, interval=0.02, what="condition", fatal=()):
    """Polls cond() until it returns a truthy value; raises after timeout.
    An exception of a type in |fatal| ends the wait at once."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except fatal:
            raise
        except Exception as e:  # noqa: BLE001 - the condition may raise while not ready
            last_exc = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}" +
                       (f" (last error: {last_exc})" if last_exc else ""))


def port_open(host, port):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(host, port, timeout=10.0):
    wait_for(lambda: port_open(host, port), timeout, what=f"{host}:{port} to accept")


def tcp_sockets(netns=None):
    """Established TCP sockets from `ss -tinpH` (in |netns| if given): a list
    of dicts with local, peer ("ip:port"), process, pid and cc (the socket's
    congestion control, e.g. "reno", "cubic", "bbr")."""
    cmd = ["ss", "-tinpH", "state", "established"]
    if netns:
        cmd = ["ip", "netns", "exec", netns] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True).stdout
    socks, cur = [], None
    for line in out.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            f = line.split()
            # Recv-Q Send-Q Local Peer [users:(("name",pid=N,fd=M))]
            cur = {"local": f[2], "peer": f[3], "process": None, "pid": None, "cc": None}
            users = line.split("users:((", 1)
            if len(users) == 2:
                u = users[1]
                cur["process"] = u.split('"')[1]
                cur["pid"] = int(u.split("pid=", 1)[1].split(",", 1)[0])
            socks.append(cur)
        elif cur is not None and cur["cc"] is None:
            # ss prints its option flags first: "ts sack ecn ecnseen fastopen cubic wscale..."
            flags = {"ts", "sack", "ecn", "ecnseen", "fastopen"}
            cur["cc"] = next((t for t in line.split() if t not in flags), None)
    return socks


def tcp_cc_default():
    """This network namespace's default congestion control."""
    with open("/proc/sys/net/ipv4/tcp_congestion_control") as f:
        return f.read().strip()


def gen_pki(outdir=None):
    """Runs tests/certs/gen.sh into outdir (a new temp dir by default)."""
    outdir = outdir or tempfile.mkdtemp(prefix="seam-pki-")
    subprocess.run(["bash", os.path.join(SOURCE_DIR, "tests/certs/gen.sh"), outdir],
                   check=True, stdout=subprocess.DEVNULL)
    return outdir


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def rss_kib(pid):
    """Resident set size of process |pid| in KiB (-1 if it has none)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


class Proc:
    """A process we started; stop() ends exactly that PID (and waits for it)."""

    def __init__(self, args, log_path=None, env=None, **kw):
        self.args = [str(a) for a in args]
        # A log we create is removed by stop(); a caller-supplied path is kept.
        self._own_log = log_path is None
        if self._own_log:
            fd, log_path = tempfile.mkstemp(prefix="seam-proc-", suffix=".log")
            os.close(fd)
        self.log_path = log_path
        self._log = open(self.log_path, "wb")
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        kw.setdefault("stdin", subprocess.DEVNULL)
        self.p = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT,
                                  env=full_env, **kw)
        self.pid = self.p.pid

    def log(self):
        self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def log_tail(self, lines=30):
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_log(self, needle, timeout=10.0):
        """Waits for needle in the log. Fails at once, with the log's tail, if
        the process ends first; a timeout shows the tail too."""
        def cond():
            if needle in self.log():
                return True
            if not self.alive() and needle not in self.log():
                raise ProcessExited(f"{os.path.basename(self.args[0])} (pid {self.pid}) exited "
                                    f"{self.p.returncode} before logging {needle!r}; its log "
                                    f"ends:\n{self.log_tail()}")
            return False
        try:
            return wait_for(cond, timeout, what=f"log line {needle!r}", fatal=(ProcessExited,))
        except TimeoutError as e:
            raise TimeoutError(f"{e}; the log of {os.path.basename(self.args[0])} (pid "
                               f"{self.pid}) ends:\n{self.log_tail()}") from None

    def alive(self):
        return self.p.poll() is None

    def send_signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Ends the process; returns its exit code."""
        if self.alive():
            os.kill(self.pid, sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.p.wait(5)
        self._log.close()
        return self.p.returncode

    def cleanup(self):
        """Removes the log file this object created (after stop())."""
        if self._own_log and os.path.exists(self.log_path):
            os.unlink(self.log_path)


class Procs:
    """Collects processes so a fixture can end them all, in reverse order."""

    def __init__(self):
        self.items = []

    def start(self, args, **kw):
        p = Proc(args, **kw)
        self.items.append(p)
        return p

    def stop_all(self):
        for p in reversed(self.items):
            try:
                p.stop()
                p.cleanup()
            except Exception:  # noqa: BLE001
                pass
        self.items.clear()


def which(tool):
    return shutil.which(tool)


# What a sanitizer build (ASan/LSan/UBSan, TSan) writes into a process's log.
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "ThreadSanitizer", "SUMMARY: UndefinedBehaviorSanitizer")


def sidecar_problems(procs, marks=SANITIZER_MARKS, stop_timeout=None, wrapped=False,
                     skip_ended=False):
    """Ends every seam-sidecar in procs (SIGTERM, by PID) and returns what is
    wrong with each: an exit code other than 0, private key material in its
    log, a sanitizer report (any of |marks|) in its log.

    stop_timeout: passed to stop() (None: its default). wrapped: the sidecar
    may run under a wrapper (valgrind, ...), so look for it among the first 8
    arguments and name the process by args[:3]. skip_ended: the exit code of a
    sidecar the test already ended itself does not count."""
    problems = []
    for p in list(procs.items):
        args = [str(a) for a in (getattr(p, "args", None) or ())]
        if not any(a.endswith("seam-sidecar") for a in args[:8 if wrapped else 1]):
            continue
        was_alive = p.alive() if skip_ended else True
        rc = p.stop() if stop_timeout is None else p.stop(timeout=stop_timeout)
        with open(p.log_path, errors="replace") as f:
            log = f.read()
        if was_alive and rc != 0:
            name = " ".join(args[:3] if wrapped else args[1:3])
            problems.append(f"{name} (pid {p.pid}) exited {rc} after SIGTERM")
        if "PRIVATE KEY" in log:
            problems.append(f"pid {p.pid}: private key material in the log")
        for mark in marks:
            if mark in log:
                at = log.index(mark)
                problems.append(f"pid {p.pid}: sanitizer report:\n{log[max(0, at - 200):at + 3000]}")
                break
    return problems


def sidecars_end_cleanly_fixture(**kw):
    """An autouse fixture for a suite's conftest.py (assign it to the name
    sidecars_end_cleanly): after each test, sidecar_problems(procs, **kw) must
    be empty, else the test fails with them."""
    import pytest

    @pytest.fixture(autouse=True)
    def sidecars_end_cleanly(procs):
        yield
        problems = sidecar_problems(procs, **kw)
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)

    return sidecars_end_cleanly


def mtls_server_ctx(pki, cert="server"):
    """A TLS 1.3 server context (Python ssl) with pki's <cert>.pem/.key that
    requires a client certificate from pki's ca.pem."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(os.path.join(pki, "ca.pem"))
    ctx.load_cert_chain(os.path.join(pki, cert + ".pem"), os.path.join(pki, cert + ".key"))
    return ctx


class LoopServer:
    """Base of in-process test servers on 127.0.0.1: _listen() binds a free
    port (self.port) and starts a thread that accepts until self.stopping or
    the listener closes, and runs self._serve(*self._serve_args(conn)) for
    each connection on a daemon thread of its own. A subclass sets its state
    up, calls _listen() and defines _serve; stop() (quacking like Proc) ends
    the accept thread and closes the listener."""

    def stop(self, *a, **kw):
        self.stopping = True
        self.thread.join(2)
        self.lsock.close()
        return 0

    def _listen(self, backlog):
        self.port = free_port()
        self.stopping = False
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", self.port))
        self.lsock.listen(backlog)
        self.lsock.settimeout(0.2)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _serve_args(self, conn):
        return (conn,)

    def _run(self):
        while not self.stopping:
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=self._serve_args(c), daemon=True).start()
