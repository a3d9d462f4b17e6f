"""Helpers for the tunnel-mode integration tests (tests/integration/tunnel/).

They drive `seam-sidecar tunnel outbound|inbound` per the shared CLI/log
contract and real peers: openssl s_server/s_client (OpenSSL 3 CLI), Python's
ssl module (also OpenSSL) and a plain echo app (echo_app.py) whose counters
show whether any byte reached the app.
"""
import atexit
import hashlib
import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

import seamtest
from seamtest import free_port, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
TD = "spiffe://cluster.local"
CLIENT_ID = TD + "/ns/default/sa/client"
SERVER_ID = TD + "/ns/default/sa/server"
ALLOW_DEFAULT_NS = TD + "/ns/default/*"
LOOP = "127.0.0.1"

# Logs and counter files of this pytest process live in one temp dir that is
# removed at exit (keys never go there: the PKI is the pki fixture's).
_TMP = tempfile.mkdtemp(prefix="seam-tunneltests-")
atexit.register(shutil.rmtree, _TMP, True)


def tmpfile(prefix, suffix=".log"):
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=_TMP)
    os.close(fd)
    return path


# One event line of the sidecar's text log:
#   2026-11-27T08:00:00.123Z WARN tls.handshake_failed dir=inbound reason=expired peer=... detail=...
_LINE = re.compile(r"^(\S+) (DEBUG|INFO|WARN|ERROR) (\S+) ?(.*)$")
_KV = re.compile(r"(\w+)=(\S*)")


def parse_events(text, event=None):
    """Parses the sidecar's text log into dicts (level, event, fields...).

    `detail=` is the last field and may contain spaces: it takes the rest of
    the line."""
    out = []
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        if event is not None and m.group(3) != event:
            continue
        rest = m.group(4)
        ev = {"level": m.group(2), "event": m.group(3), "line": line}
        detail_at = rest.find("detail=")
        head = rest if detail_at < 0 else rest[:detail_at]
        for k, v in _KV.findall(head):
            ev[k] = v
        if detail_at >= 0:
            ev["detail"] = rest[detail_at + len("detail="):]
        out.append(ev)
    return out


def events(proc, event=None):
    return parse_events(proc.log(), event)


def hs_failures(proc, peer=None):
    """tls.handshake_failed events of proc, optionally only those for peer."""
    return [e for e in events(proc, "tls.handshake_failed") if peer is None or e.get("peer") == peer]


def addr(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def sock_peer_str(sock):
    """The "peer=" string the sidecar logs for a client socket we opened."""
    h, p = sock.getsockname()[:2]
    return addr(h, p)


class Tunnel:
    """A running seam-sidecar tunnel (a seamtest.Proc plus its addresses)."""

    def __init__(self, proc, direction, host, port, target):
        self.proc = proc
        self.direction = direction
        self.host = host
        self.port = port
        self.target = target

    def log(self):
        return self.proc.log()

    def connect(self, timeout=10.0):
        s = socket.create_connection((self.host, self.port), timeout=timeout)
        s.settimeout(timeout)
        return s


def _pem_key(pki, cert):
    """cert is a name in the PKI dir ("client") or a path prefix ("/x/id" -> id.pem, id.key)."""
    base = cert if os.path.isabs(cert) else os.path.join(pki, cert)
    return base + ".pem", base + ".key"


def tunnel_args(direction, listen, target, pki, cert, peer_id=None, allow=None, workers=None,
                extra=(), trust=None):
    pem, key = _pem_key(pki, cert)
    args = [seamtest.binary("seam-sidecar"), "tunnel", direction, "--listen", listen,
            "--target", target, "--cert", pem, "--key", key,
            "--trust", trust or os.path.join(pki, "ca.pem")]
    if peer_id is not None:
        args += ["--peer-id", peer_id]
    for a in allow or ():
        args += ["--allow", a]
    if workers is not None:
        args += ["--workers", str(workers)]
    return args + list(extra)


def start_tunnel(procs, direction, target, pki, cert=None, peer_id=None, allow=None,
                 workers=None, extra=(), host=LOOP, env=None, wait_ready=True, args=None,
                 trust=None, port=None):
    """Starts `seam-sidecar tunnel DIRECTION` on a free port and waits for sidecar.ready.

    cert is a name in the PKI dir ("client") or a path prefix ("/x/y/cert" ->
    cert.pem, cert.key). Defaults: outbound presents "client" and expects the
    server ID; inbound presents "server" and allows ns/default/*. With args
    (a whole command line), pass the port it listens on."""
    port = port or free_port(host)
    listen = addr(host, port)
    if args is None:
        if direction == "outbound":
            cert = cert or "client"
            if peer_id is None and not (env and "SEAM_PEER_ID" in env):
                peer_id = SERVER_ID
        else:
            cert = cert or "server"
            if allow is None:
                allow = [ALLOW_DEFAULT_NS]
        if "--drain-timeout" not in extra:
            # Bounded teardown (the procs fixture waits 10 s for SIGTERM).
            extra = list(extra) + ["--drain-timeout", "5s"]
        args = tunnel_args(direction, listen, target, pki, cert, peer_id, allow, workers, extra,
                           trust)
    p = procs.start(args, env=env, log_path=tmpfile(f"sidecar-{direction}-"))
    t = Tunnel(p, direction, host, port, target)
    if wait_ready:
        try:
            p.wait_log("sidecar.ready", timeout=15)
        except TimeoutError:
            raise AssertionError(f"sidecar did not become ready; exit={p.p.poll()} log:\n{p.log()}")
    return t


class Echo:
    """The plain echo app (echo_app.py) and its counters."""

    def __init__(self, procs, host=LOOP):
        self.host = host
        self.port = free_port(host)
        self.stats_path = tmpfile("echo-", ".json")
        self.proc = procs.start([sys.executable, os.path.join(HERE, "echo_app.py"),
                                 "--listen", addr(host, self.port), "--stats", self.stats_path],
                                log_path=tmpfile("echo-"))
        self.proc.wait_log("echo.ready", timeout=10)

    @property
    def target(self):
        return addr(self.host, self.port)

    def stats(self):
        with open(self.stats_path) as f:
            return json.load(f)


class OpenSSLServer(seamtest.Proc):
    """`openssl s_server` with a stdin pipe (to send data to its client); a
    seamtest.Proc, so the procs fixture stops it."""

    def __init__(self, pki, cert, extra=(), verify=True, tls="-tls1_3"):
        self.port = free_port()
        args = ["openssl", "s_server", "-accept", f"{LOOP}:{self.port}", tls,
                "-cert", os.path.join(pki, cert + ".pem"), "-key", os.path.join(pki, cert + ".key"),
                "-CAfile", os.path.join(pki, "ca.pem")]
        if verify:
            args += ["-Verify", "1"]
        super().__init__(args + list(extra), log_path=tmpfile("s_server-"), stdin=subprocess.PIPE)
        # s_server prints ACCEPT once it listens (no probe connection: it would
        # show up as a session in its output).
        wait_for(lambda: "ACCEPT" in self.log() or not self.alive(), 10, what="s_server ACCEPT")
        if not self.alive():
            raise AssertionError(f"openssl s_server exited: {self.log()}")
        self.mark = len(self.log())

    @property
    def target(self):
        return addr(LOOP, self.port)

    def new_output(self):
        return self.log()[self.mark:]

    def wait_log(self, needle, timeout=10.0):
        return wait_for(lambda: needle in self.new_output(), timeout,
                        what=f"s_server output {needle!r}")

    def send(self, data):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        rc = super().stop(sig, timeout)
        try:
            self.p.stdin.close()
        except OSError:
            pass
        return rc


def start_s_server(procs, pki, cert="server", **kw):
    s = OpenSSLServer(pki, cert, **kw)
    procs.items.append(s)
    return s


def pem_certs(text):
    return re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)


def cert_uris(pem):
    """URI SANs of a PEM certificate (via the openssl CLI)."""
    out = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName"], input=pem.encode(),
                         capture_output=True, check=True).stdout.decode()
    return re.findall(r"URI:(\S+?)(?:,|\s|$)", out)


def cert_serial(pem_path_or_text):
    if os.path.exists(pem_path_or_text):
        args = ["openssl", "x509", "-noout", "-serial", "-in", pem_path_or_text]
        inp = None
    else:
        args = ["openssl", "x509", "-noout", "-serial"]
        inp = pem_path_or_text.encode()
    out = subprocess.run(args, input=inp, capture_output=True, check=True).stdout.decode()
    return out.strip().split("=", 1)[1]


def der_of(pem_path):
    with open(pem_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def client_ctx(pki, cert="client", ca="ca.pem", tls12=False):
    """A TLS client context like a peer sidecar's: verifies the server against ca.pem
    (no hostname: SVIDs carry URI SANs only) and presents cert (None: no cert)."""
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_REQUIRED
    c.load_verify_locations(os.path.join(pki, ca))
    if cert:
        c.load_cert_chain(os.path.join(pki, cert + ".pem"), os.path.join(pki, cert + ".key"))
    if tls12:
        c.maximum_version = ssl.TLSVersion.TLSv1_2
    else:
        c.minimum_version = ssl.TLSVersion.TLSv1_3
    return c


def tls_connect(ctx, host, port, timeout=10.0):
    raw = socket.create_connection((host, port), timeout=timeout)
    raw.settimeout(timeout)
    return ctx.wrap_socket(raw)


def closed_by_peer(sock, timeout=5.0):
    """Waits up to timeout for the peer to close sock (EOF, reset or TLS alert).

    Returns (closed, bytes_received_before_close)."""
    got = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, got
        sock.settimeout(left)
        try:
            d = sock.recv(65536)
        except socket.timeout:
            return False, got
        except (ssl.SSLError, ConnectionError, OSError):
            return True, got
        if not d:
            return True, got
        got += d


def push_until_stalled(sock, cap, next_block, stall=2.0, timeout=60.0):
    """Sends next_block() after next_block() on sock (made non-blocking) until
    the receiver has taken nothing for |stall| s, |cap| bytes went out, or
    |timeout| passed. Returns (bytes sent, their sha256, the unsent rest of
    the last block): the backpressure tests' "how much did it take"."""
    sock.setblocking(False)
    sent_hash = hashlib.sha256()
    sent = 0
    pending = memoryview(b"")
    deadline = time.monotonic() + timeout
    while sent < cap and time.monotonic() < deadline:
        if not pending:
            pending = memoryview(next_block())
        try:
            n = sock.send(pending)
        except BlockingIOError:
            if not select.select([], [sock], [], stall)[1]:
                break  # stalled: nothing taken for |stall| s
            continue
        sent_hash.update(pending[:n])
        sent += n
        pending = pending[n:]
    return sent, sent_hash, pending


def finish_push(sock, sent, sent_hash, pending, timeout=30.0):
    """After push_until_stalled: sends the rest (blocking) and FIN; returns
    the total sent (sent_hash is updated)."""
    sock.setblocking(True)
    sock.settimeout(timeout)
    if pending:
        sock.sendall(pending)
        sent_hash.update(pending)
        sent += len(pending)
    sock.shutdown(socket.SHUT_WR)
    return sent


def recv_exact(sock, n, timeout=10.0):
    buf = bytearray()
    deadline = time.monotonic() + timeout
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"got {len(buf)} of {n} bytes")
        sock.settimeout(left)
        d = sock.recv(min(65536, n - len(buf)))
        if not d:
            raise ConnectionError(f"EOF after {len(buf)} of {n} bytes")
        buf += d
    return bytes(buf)


def echo_roundtrip(sock, data, timeout=10.0):
    sock.sendall(data)
    return recv_exact(sock, len(data), timeout)


def run_threads(fns, timeout):
    """Runs each fn in its own thread; returns their results or raises the first error."""
    results = [None] * len(fns)
    errors = []

    def wrap(i, fn):
        try:
            results[i] = fn()
        except BaseException as e:  # noqa: BLE001
            errors.append((i, e))

    ts = [threading.Thread(target=wrap, args=(i, fn), daemon=True) for i, fn in enumerate(fns)]
    for t in ts:
        t.start()
    deadline = time.monotonic() + timeout
    for t in ts:
        t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in ts):
        raise TimeoutError(f"{sum(t.is_alive() for t in ts)} of {len(ts)} threads still running "
                           f"after {timeout}s")
    if errors:
        i, e = errors[0]
        raise AssertionError(f"{len(errors)} of {len(fns)} failed; first (#{i}): {e!r}") from e
    return results


class OneConnServer:
    """A TCP listener on LOOP (free port) whose thread accepts one connection
    within |accept_timeout| s and runs serve(conn) on it; an OSError ends
    serve quietly (the test checks what serve recorded). close() stops the
    listener; the connection is closed when serve returns."""

    def __init__(self, serve, accept_timeout=20.0):
        self.port = free_port()
        self.target = addr(LOOP, self.port)
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((LOOP, self.port))
        self.lsock.listen(8)
        self.lsock.settimeout(accept_timeout)
        self.thread = threading.Thread(target=self._run, args=(serve,), daemon=True)
        self.thread.start()

    def _run(self, serve):
        try:
            c, _ = self.lsock.accept()
        except OSError:
            return
        with c:
            try:
                serve(c)
            except OSError:
                pass

    def close(self):
        self.lsock.close()


class TLSEchoServer(seamtest.LoopServer):
    """An in-process mTLS echo server (Python ssl): requires a client cert from
    ca.pem, records each client's certificate (DER) and echoes until EOF.

    Quacks like seamtest.Proc (stop()) so the procs fixture ends it."""

    def __init__(self, pki, cert="server"):
        self.ctx = seamtest.mtls_server_ctx(pki, cert)
        self.peer_certs = []
        self.lock = threading.Lock()
        self._listen(128)

    @property
    def target(self):
        return addr(LOOP, self.port)

    def _serve(self, c):
        try:
            c.settimeout(30)
            t = self.ctx.wrap_socket(c, server_side=True)
            with self.lock:
                self.peer_certs.append(t.getpeercert(binary_form=True))
            while True:
                d = t.recv(65536)
                if not d:
                    break
                t.sendall(d)
            t.close()
        except (OSError, ssl.SSLError):
            c.close()

    def alive(self):
        return self.thread.is_alive()


def start_tls_echo(procs, pki, cert="server"):
    s = TLSEchoServer(pki, cert)
    procs.items.append(s)
    return s


def mint_leaf(pki, outdir, name, uri, valid_s=None):
    """A client/server leaf signed by the test CA with one URI SAN |uri|
    (for IDs gen.sh does not have); with valid_s, one that expires valid_s
    seconds from now. Returns the path prefix (for cert=)."""
    base = os.path.join(outdir, name)
    ext = base + ".ext"
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth,clientAuth\n"
                f"subjectAltName=critical,URI:{uri}\n")
    run = dict(check=True, capture_output=True)
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-out", base + ".key"], **run)
    subprocess.run(["openssl", "req", "-new", "-key", base + ".key", "-subj", "/O=seam test",
                    "-out", base + ".csr"], **run)
    if valid_s is None:
        subprocess.run(["openssl", "x509", "-req", "-in", base + ".csr", "-CA",
                        os.path.join(pki, "ca.pem"), "-CAkey", os.path.join(pki, "ca.key"),
                        "-CAcreateserial", "-CAserial", base + ".srl", "-days", "2", "-sha256",
                        "-extfile", ext, "-out", base + ".pem"], **run)
        return base
    # openssl x509 (3.0) sets whole days only; a one-shot `openssl ca` sets any
    # end date (as tests/certs/gen.sh does for expired.pem).
    db = base + "-ca"
    os.makedirs(db, exist_ok=True)
    open(os.path.join(db, "index.txt"), "w").close()
    with open(os.path.join(db, "serial"), "w") as f:
        f.write("%012x\n" % (int(time.time() * 1000) & 0xffffffffffff))
    with open(os.path.join(db, "ca.cnf"), "w") as f:
        f.write(f"[ca]\ndefault_ca=d\n[d]\ndatabase={db}/index.txt\nserial={db}/serial\n"
                f"new_certs_dir={db}\ndefault_md=sha256\npolicy=p\nunique_subject=no\n"
                "copy_extensions=none\n[p]\norganizationName=optional\n")
    fmt = "%Y%m%d%H%M%SZ"
    now = time.time()
    subprocess.run(["openssl", "ca", "-batch", "-config", os.path.join(db, "ca.cnf"),
                    "-cert", os.path.join(pki, "ca.pem"), "-keyfile", os.path.join(pki, "ca.key"),
                    "-startdate", time.strftime(fmt, time.gmtime(now - 60)),
                    "-enddate", time.strftime(fmt, time.gmtime(now + valid_s)),
                    "-extfile", ext, "-notext", "-in", base + ".csr", "-out", base + ".pem"],
                   **run)
    return base
