"""Helpers for the identity tests (issue 5): a seam-control-plane issuing
short-lived certificates, tunnel pairs taking their certificates from it, an
echo app, traffic generators that count every failure, and readers for the
sidecars' admin endpoints.

Everything listens on 127.0.0.1 with ports picked at run time; processes are
started through the `procs` fixture and ended by PID."""
import json
import os
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.request

import seamtest

TD = "cluster.local"
ID_IN = f"spiffe://{TD}/ns/default/sa/in"
ID_OUT = f"spiffe://{TD}/ns/default/sa/out"
MESH = "trust_domain: cluster.local\nservices: []\n"


def http_get(port, path, timeout=5):
    """(status, body) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def http_post(port, path, timeout=10):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode()


def metric(text, name, labels=None):
    """Value of the sample `name{labels}` in Prometheus text, or None."""
    want = name + ("{" + labels + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


class ControlPlane:
    """seam-control-plane with a token file for the two tunnel identities.
    With ca_cert/ca_key it signs with that root (so a restart keeps the same
    root); otherwise it generates one (root rotation test)."""

    def __init__(self, procs, tmp, ttl="10s", ca=None, port=None):
        self.procs = procs
        self.tmp = str(tmp)
        self.ttl = ttl
        self.ca = ca
        self.port = port or seamtest.free_port()
        self.admin_port = seamtest.free_port()
        self.root = os.path.join(self.tmp, "cp-roots.pem")
        self.mesh = os.path.join(self.tmp, "mesh.yaml")
        self.tokens = os.path.join(self.tmp, "tokens.yaml")
        with open(self.mesh, "w") as f:
            f.write(MESH)
        with open(self.tokens, "w") as f:
            f.write(f"tok-in: {ID_IN}\ntok-out: {ID_OUT}\n")
        self.token_files = {}
        for name in ("in", "out"):
            p = os.path.join(self.tmp, f"token-{name}")
            with open(p, "w") as f:
                f.write(f"tok-{name}\n")
            self.token_files[name] = p
        self.proc = None
        self.start()

    def start(self):
        args = [seamtest.binary("seam-control-plane"),
                "--listen", f"127.0.0.1:{self.port}",
                "--admin", f"127.0.0.1:{self.admin_port}",
                "--mesh", self.mesh, "--tokens", self.tokens, "--cert-ttl", self.ttl,
                "--root-out", self.root, "--log-level", "warn"]
        if self.ca:
            args += ["--ca-cert", self.ca[0], "--ca-key", self.ca[1]]
        self.starts = getattr(self, "starts", 0) + 1
        # Logs in the test's own directory (never shared /tmp names).
        self.proc = self.procs.start(args, log_path=os.path.join(self.tmp, f"cp-{self.starts}.log"))
        seamtest.wait_port("127.0.0.1", self.port, timeout=15)

    def stop(self):
        rc = self.proc.stop()
        assert not seamtest.port_open("127.0.0.1", self.port)
        return rc

    def post(self, path):
        return http_post(self.admin_port, path)


class EchoApp:
    """A threaded TCP echo server in this process (the app behind the inbound)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.conns = []
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self._accept, daemon=True)
        self.t.start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(c)
            threading.Thread(target=self._echo, args=(c,), daemon=True).start()

    @staticmethod
    def _echo(c):
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
            c.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.stopping = True
        self.sock.close()


class Tunnel:
    """One seam-sidecar tunnel (inbound or outbound) with an admin port."""

    def __init__(self, procs, mode, listen_port, target_port, cp, name, extra=(), trust=None,
                 control_plane_trust=None, cp_port=None, log_dir=None):
        self.mode = mode
        self.port = listen_port
        self.admin_port = seamtest.free_port()
        args = [seamtest.binary("seam-sidecar"), "tunnel", mode,
                "--listen", f"127.0.0.1:{listen_port}", "--target", f"127.0.0.1:{target_port}",
                "--control-plane", f"127.0.0.1:{cp_port or cp.port}",
                "--control-plane-trust", control_plane_trust or cp.root,
                "--token-file", cp.token_files[name],
                "--spiffe-id", ID_IN if name == "in" else ID_OUT,
                "--admin", f"127.0.0.1:{self.admin_port}", "--workers", "2"]
        if trust:
            args += ["--trust", trust]
        if mode == "inbound":
            args += ["--allow", f"spiffe://{TD}/ns/default/*"]
        else:
            args += ["--peer-id", ID_IN]
        args += list(extra)
        self.proc = procs.start(args, log_path=os.path.join(log_dir or cp.tmp, f"{mode}.log"))

    def wait_ready(self, timeout=45):
        # The ready line comes after the listeners are up. (No probe
        # connection: it would show up as a refused handshake.) The first
        # certificate can take a retry or two under the ASan build on a busy
        # CI machine: the bound is generous, the wait ends as soon as it is up.
        self.proc.wait_log("sidecar.ready", timeout=timeout)

    def certs(self):
        st, body = http_get(self.admin_port, "/certs")
        assert st == 200, body
        return json.loads(body)

    def serial(self):
        return self.certs()["serial"]

    def metrics(self):
        return http_get(self.admin_port, "/metrics")[1]

    def ready_status(self):
        return http_get(self.admin_port, "/healthz/ready")[0]

    def installed_serials(self):
        """Serials of the certificates installed so far, from the log, in order."""
        return re.findall(r"identity\.cert_installed \S+ serial=(\S+)", self.proc.log())


def tunnel_pair(procs, cp, app_port, extra=(), trust=None, out_extra=()):
    """An outbound -> inbound tunnel pair in front of the app; both ready.
    |extra| goes to both, |out_extra| to the outbound only (e.g. --mux)."""
    in_port, out_port = seamtest.free_port(), seamtest.free_port()
    tin = Tunnel(procs, "inbound", in_port, app_port, cp, "in", extra, trust)
    tout = Tunnel(procs, "outbound", out_port, in_port, cp, "out", tuple(extra) + tuple(out_extra),
                  trust)
    tin.wait_ready()
    tout.wait_ready()
    return tin, tout


class Traffic:
    """(a) |long_lived| connections through the outbound port, each sending
    random chunks and checking the echo byte for byte, continuously; and (b) a
    stream of new connections (each: connect, send, check, close). Every
    failure is recorded with its reason; |serial_probe| (optional) is called
    for each new connection and its result collected."""

    def __init__(self, port, long_lived=100, new_conn_interval=0.05, serial_probe=None,
                 chunk=(256, 4096), pause=0.05):
        self.port = port
        self.long_lived = long_lived
        self.new_conn_interval = new_conn_interval
        self.serial_probe = serial_probe
        self.chunk = chunk
        self.pause = pause
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.failures = []
        self.long_bytes = 0
        self.long_rounds = 0
        self.long_done = 0
        self.new_ok = 0
        self.serials = []
        self.threads = []
        self.opened = threading.Semaphore(0)

    def _fail(self, what):
        with self.lock:
            self.failures.append(what)

    def _exchange(self, s, rnd):
        n = rnd.randint(*self.chunk)
        data = rnd.randbytes(n)
        s.sendall(data)
        got = bytearray()
        while len(got) < n:
            d = s.recv(n - len(got))
            if not d:
                raise ConnectionError(f"EOF after {len(got)} of {n} echoed bytes")
            got += d
        if bytes(got) != data:
            raise AssertionError("echoed bytes differ")
        return n

    def _long(self, i):
        rnd = random.Random(i)
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=15)
            self._exchange(s, rnd)
        except Exception as e:  # noqa: BLE001
            self._fail(f"long-lived #{i} open: {e!r}")
            self.opened.release()
            return
        self.opened.release()
        try:
            while not self.stop_ev.is_set():
                n = self._exchange(s, rnd)
                with self.lock:
                    self.long_bytes += n
                    self.long_rounds += 1
                self.stop_ev.wait(self.pause)
            # Clean end: half-close, the echo app answers with EOF.
            s.shutdown(socket.SHUT_WR)
            if s.recv(1) != b"":
                raise AssertionError("unexpected bytes after half-close")
            with self.lock:
                self.long_done += 1
        except Exception as e:  # noqa: BLE001
            self._fail(f"long-lived #{i}: {e!r}")
        finally:
            s.close()

    def _new(self):
        rnd = random.Random(12345)
        k = 0
        while not self.stop_ev.is_set():
            k += 1
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=15) as s:
                    self._exchange(s, rnd)
                    s.shutdown(socket.SHUT_WR)
                    if s.recv(1) != b"":
                        raise AssertionError("unexpected bytes after half-close")
                with self.lock:
                    self.new_ok += 1
                if self.serial_probe is not None:
                    v = self.serial_probe()
                    with self.lock:
                        self.serials.append(v)
            except Exception as e:  # noqa: BLE001
                self._fail(f"new connection #{k}: {e!r}")
            self.stop_ev.wait(self.new_conn_interval)

    def start(self):
        for i in range(self.long_lived):
            t = threading.Thread(target=self._long, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)
        deadline = time.monotonic() + 60
        for _ in range(self.long_lived):
            assert self.opened.acquire(timeout=max(0.1, deadline - time.monotonic())), \
                "long-lived connections did not open in time"
        t = threading.Thread(target=self._new, daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def stop(self, timeout=60):
        self.stop_ev.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        alive = [t for t in self.threads if t.is_alive()]
        assert not alive, f"{len(alive)} traffic threads did not finish"

    def summary(self):
        return (f"long_lived={self.long_lived} long_lived_completed={self.long_done} "
                f"long_rounds={self.long_rounds} long_bytes={self.long_bytes} "
                f"new_connections_ok={self.new_ok} failures={len(self.failures)}")


def one_connection(port, payload=b"ping", timeout=10):
    """Sends payload through the tunnel and returns the echo (raises on failure)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
    return got


def connection_works(port):
    try:
        return one_connection(port, b"probe") == b"probe"
    except OSError:
        return False
