#!/usr/bin/env bash
# soak.sh — the soak test of issue 10: mixed traffic (keep-alive, new
# connections, bulk) through a tunnel pair (app -> outbound -> inbound -> echo)
# for SOAK_SECS with certificates rotating every SOAK_ROTATE secs, sampling
# each sidecar's RSS and open fds every SOAK_SAMPLE secs. Writes bench/SOAK.md
# (regenerated on every run) and exits 1 on any failed connection or exchange.
#
#   bench/soak.sh [BUILD_DIR]          (default: build; SEAM_BUILD_DIR also works)
#   SOAK_SECS=600 SOAK_ROTATE=10 SOAK_SAMPLE=10 SOAK_OUT=bench/SOAK.md
#   SOAK_KEEPALIVE=20 SOAK_NEWCONN=3 SOAK_BULK_MIB=4
#
# Rotation (SOAK_MODE): "cp" — the sidecars take SOAK_ROTATE-second
# certificates from seam-control-plane (`tunnel --control-plane`, CA
# --cert-ttl), renewed by the identity manager at about half their life;
# "files" — each sidecar's certificate AND key are re-issued by the test CA
# every SOAK_ROTATE secs and swapped in like a Kubernetes Secret volume
# (..data symlink), picked up by the file watch (tls.reloaded). "auto"
# (default): cp if the binaries support it. Loopback only, ports picked at
# run time, every process ended by its PID. Not part of CI.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-${SEAM_BUILD_DIR:-$src/build}}"
export SOAK_SECS="${SOAK_SECS:-600}" SOAK_ROTATE="${SOAK_ROTATE:-10}" SOAK_SAMPLE="${SOAK_SAMPLE:-10}"
export SOAK_OUT="${SOAK_OUT:-$src/bench/SOAK.md}" SOAK_KEEPALIVE="${SOAK_KEEPALIVE:-20}"
export SOAK_NEWCONN="${SOAK_NEWCONN:-3}" SOAK_BULK_MIB="${SOAK_BULK_MIB:-4}" SOAK_MODE="${SOAK_MODE:-auto}"
export SEAM_BUILD_DIR="$build" SEAM_SOURCE_DIR="$src"
[ -x "$build/sidecar/seam-sidecar" ] || { echo "soak.sh: $build/sidecar/seam-sidecar not built" >&2; exit 2; }
exec python3 - <<'PY'
import datetime, hashlib, os, shutil, signal, socket, subprocess, sys, tempfile, threading, time

src = os.environ["SEAM_SOURCE_DIR"]; build = os.environ["SEAM_BUILD_DIR"]
sys.path.insert(0, os.path.join(src, "tests", "lib"))
import seamtest  # noqa: E402

SECS = int(os.environ["SOAK_SECS"]); ROTATE = int(os.environ["SOAK_ROTATE"])
SAMPLE = int(os.environ["SOAK_SAMPLE"]); OUT = os.environ["SOAK_OUT"]
KEEP = int(os.environ["SOAK_KEEPALIVE"]); NEWC = int(os.environ["SOAK_NEWCONN"])
BULK = int(os.environ["SOAK_BULK_MIB"]) << 20
MODE = os.environ["SOAK_MODE"]
ID_IN, ID_OUT = "spiffe://cluster.local/ns/default/sa/server", "spiffe://cluster.local/ns/default/sa/client"
LOOP = "127.0.0.1"
PAGE = os.sysconf("SC_PAGE_SIZE")
work = tempfile.mkdtemp(prefix="seam-soak-")
procs = seamtest.Procs()
stop = threading.Event()
lock = threading.Lock()
stats = {"keepalive_rt": 0, "new_conns": 0, "bulk_bytes": 0, "failures": 0, "rotations": 0}
first_fail = []


def fail(what):
    with lock:
        stats["failures"] += 1
        if len(first_fail) < 10:
            first_fail.append(f"{time.strftime('%H:%M:%S')} {what}")


def issue(name, spiffe_id):
    """A new key + certificate for name (signed by the test CA), swapped in at
    once like a Kubernetes Secret volume: <name>/..data is a symlink to a fresh
    dir, <name>/tls.crt and tls.key point through it."""
    top = os.path.join(work, name)
    os.makedirs(top, exist_ok=True)
    d = tempfile.mkdtemp(dir=top, prefix="..v")
    key, csr, crt, ext = (os.path.join(d, n) for n in ("tls.key", "csr", "tls.crt", "ext"))
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                f"extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=critical,URI:{spiffe_id}\n")
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    run("openssl", "req", "-new", "-key", key, "-subj", "/O=seam soak", "-out", csr)
    run("openssl", "x509", "-req", "-in", csr, "-CA", f"{pki}/ca.pem", "-CAkey", f"{pki}/ca.key",
        "-CAcreateserial", "-days", "1", "-sha256", "-extfile", ext, "-out", crt)
    data = os.path.join(top, "..data")
    old = os.path.realpath(data) if os.path.islink(data) else None
    tmp = os.path.join(top, "..data_tmp")
    os.symlink(os.path.basename(d), tmp)
    os.replace(tmp, data)
    for n in ("tls.crt", "tls.key"):
        if not os.path.islink(os.path.join(top, n)):
            os.symlink(os.path.join("..data", n), os.path.join(top, n))
    if old:
        shutil.rmtree(old, ignore_errors=True)


def rss(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        d = s.recv(min(1 << 20, n - len(buf)))
        if not d:
            raise ConnectionError(f"EOF after {len(buf)} of {n}")
        buf += d
    return bytes(buf)


def keepalive(port, i):
    payload = b"k%03d" % i * 256
    while not stop.is_set():
        try:
            with socket.create_connection((LOOP, port), timeout=10) as s:
                s.settimeout(10)
                while not stop.is_set():
                    s.sendall(payload)
                    if recv_exact(s, len(payload)) != payload:
                        fail("keepalive: corrupt echo")
                    with lock:
                        stats["keepalive_rt"] += 1
                    stop.wait(0.1)
        except OSError as e:
            if not stop.is_set():
                fail(f"keepalive {i}: {e!r}")
                stop.wait(0.5)


def newconn(port):
    payload = os.urandom(2048)
    while not stop.is_set():
        try:
            with socket.create_connection((LOOP, port), timeout=10) as s:
                s.settimeout(10)
                s.sendall(payload)
                if recv_exact(s, len(payload)) != payload:
                    fail("newconn: corrupt echo")
                with lock:
                    stats["new_conns"] += 1
        except OSError as e:
            if not stop.is_set():
                fail(f"newconn: {e!r}")
        stop.wait(0.02)


def bulk(port):
    blob = os.urandom(BULK)
    digest = hashlib.sha256(blob).digest()
    while not stop.is_set():
        try:
            with socket.create_connection((LOOP, port), timeout=30) as s:
                s.settimeout(30)
                got = {}
                def reader():
                    try:
                        got["d"] = recv_exact(s, BULK)
                    except OSError as e:
                        got["e"] = e
                t = threading.Thread(target=reader); t.start()
                s.sendall(blob)
                t.join(60)
                if "e" in got or hashlib.sha256(got.get("d", b"")).digest() != digest:
                    fail(f"bulk: {got.get('e', 'corrupt or short')!r}")
                else:
                    with lock:
                        stats["bulk_bytes"] += BULK
        except OSError as e:
            if not stop.is_set():
                fail(f"bulk: {e!r}")
        stop.wait(1.0)


rows = []
rc = 0
try:
    pki = seamtest.gen_pki(os.path.join(work, "pki"))
    sc = seamtest.binary("seam-sidecar")
    if MODE == "auto":
        helptext = subprocess.run([sc, "tunnel", "--help"], capture_output=True, text=True).stdout
        try:
            seamtest.binary("seam-control-plane")
            MODE = "cp" if "--control-plane" in helptext else "files"
        except FileNotFoundError:
            MODE = "files"
    echo_port, in_port, out_port = seamtest.free_port(), seamtest.free_port(), seamtest.free_port()
    echo = procs.start([sys.executable, os.path.join(src, "tests/integration/tunnel/echo_app.py"),
                        "--listen", f"{LOOP}:{echo_port}", "--stats", os.path.join(work, "echo.json")],
                       log_path=os.path.join(work, "echo.log"))
    echo.wait_log("echo.ready")
    common = ["--log-level", "info", "--drain-timeout", "10s"]
    if MODE == "cp":
        cp_port = seamtest.free_port()
        with open(f"{work}/mesh.yaml", "w") as f:
            f.write("trust_domain: cluster.local\nservices: []\n")
        with open(f"{work}/tokens.yaml", "w") as f:
            f.write(f"tok-in: {ID_IN}\ntok-out: {ID_OUT}\n")
        for n in ("in", "out"):
            with open(f"{work}/token-{n}", "w") as f:
                f.write(f"tok-{n}\n")
        procs.start([seamtest.binary("seam-control-plane"), "--listen", f"{LOOP}:{cp_port}",
                     "--mesh", f"{work}/mesh.yaml", "--tokens", f"{work}/tokens.yaml",
                     "--cert-ttl", f"{ROTATE}s", "--root-out", f"{work}/root.pem",
                     "--ca-cert", f"{pki}/ca.pem", "--ca-key", f"{pki}/ca.key", "--log-level", "warn"],
                    log_path=os.path.join(work, "cp.log"))
        seamtest.wait_for(lambda: os.path.exists(f"{work}/root.pem"), 15, what="control plane root")
        ident = {n: ["--control-plane", f"{LOOP}:{cp_port}", "--control-plane-trust", f"{work}/root.pem",
                     "--token-file", f"{work}/token-{n}", "--spiffe-id", ID_IN if n == "in" else ID_OUT,
                     "--cert-ttl", f"{ROTATE}s"] for n in ("in", "out")}
        rotation_event = "identity.cert_installed"
    else:
        issue("in", ID_IN)
        issue("out", ID_OUT)
        ident = {n: ["--cert", f"{work}/{n}/tls.crt", "--key", f"{work}/{n}/tls.key",
                     "--trust", f"{pki}/ca.pem"] for n in ("in", "out")}
        rotation_event = "tls.reloaded"
    inb = procs.start([sc, "tunnel", "inbound", "--listen", f"{LOOP}:{in_port}", "--target",
                       f"{LOOP}:{echo_port}", "--allow", "spiffe://cluster.local/ns/default/*"]
                      + ident["in"] + common, log_path=os.path.join(work, "inbound.log"))
    outb = procs.start([sc, "tunnel", "outbound", "--listen", f"{LOOP}:{out_port}", "--target",
                        f"{LOOP}:{in_port}", "--peer-id", ID_IN] + ident["out"] + common,
                       log_path=os.path.join(work, "outbound.log"))
    for p in (inb, outb):
        p.wait_log("sidecar.ready", timeout=30)
    seamtest.wait_port(LOOP, in_port); seamtest.wait_port(LOOP, out_port)
    threads = [threading.Thread(target=keepalive, args=(out_port, i), daemon=True) for i in range(KEEP)]
    threads += [threading.Thread(target=newconn, args=(out_port,), daemon=True) for _ in range(NEWC)]
    threads.append(threading.Thread(target=bulk, args=(out_port,), daemon=True))
    for t in threads:
        t.start()
    t0 = time.monotonic(); next_rot = t0 + ROTATE; next_sample = t0
    print(f"soak: {SECS} s, rotation every {ROTATE} s, sampling every {SAMPLE} s -> {OUT}", flush=True)
    while True:
        now = time.monotonic()
        if now >= next_sample:
            with lock:
                s = dict(stats)
            row = (int(now - t0), rss(inb.pid), fds(inb.pid), rss(outb.pid), fds(outb.pid),
                   s["keepalive_rt"], s["new_conns"], s["bulk_bytes"] >> 20, s["rotations"],
                   s["failures"])
            rows.append(row)
            print("t=%4ds in: rss=%.1fMiB fds=%d  out: rss=%.1fMiB fds=%d  ka=%d new=%d bulk=%dMiB "
                  "rot=%d fail=%d" % (row[0], row[1] / 2**20, row[2], row[3] / 2**20, row[4],
                                      *row[5:]), flush=True)
            next_sample += SAMPLE
            if now - t0 >= SECS:
                break
        if now >= next_rot:
            if MODE == "files":
                issue("in", ID_IN)
                issue("out", ID_OUT)
                with lock:
                    stats["rotations"] += 1
            else:
                with lock:
                    stats["rotations"] = min(inb.log().count(rotation_event),
                                             outb.log().count(rotation_event))
            next_rot += ROTATE
        if not (inb.alive() and outb.alive()):
            fail("a sidecar exited")
            break
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(70)
    reloads = [p.log().count(rotation_event) for p in (inb, outb)]
    want = SECS / ROTATE * 0.9
    if min(reloads) < want:
        fail(f"only {reloads} certificate installs in {SECS} s (want >= {want:.0f} each)")
    stats["rotations"] = min(reloads)
    errs = [p.log().count(" ERROR ") for p in (inb, outb)]
    exits = [p.stop() for p in (outb, inb)]
    if stats["failures"] or any(exits):
        rc = 1
    first, last = rows[1] if len(rows) > 1 else rows[0], rows[-1]
    with open(OUT, "w") as f:
        f.write("# Soak (issue 10)\n\nRegenerated by `bench/soak.sh` (do not edit by hand). "
                f"Run {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, {SECS} s, build `{os.path.basename(build)}`, "
                f"on a shared 2-core machine.\n\n"
                f"Traffic through app → outbound → inbound → echo: {KEEP} keep-alive connections "
                f"(1 KiB echo every 100 ms), {NEWC} loops of new connections (2 KiB echo each), one bulk "
                f"loop ({BULK >> 20} MiB echoed, SHA-256 checked, every second). "
                + (f"Both sidecars take {ROTATE}-second certificates from seam-control-plane (`tunnel "
                   f"--control-plane`, CA `--cert-ttl {ROTATE}s`), renewed at about half their life. "
                   if MODE == "cp" else
                   f"Certificates and keys of both sidecars re-issued every {ROTATE} s (a Kubernetes-style "
                   f"`..data` symlink swap picked up by the sidecars' file watch). ")
                + f"RSS and fds from /proc every {SAMPLE} s.\n\n"
                f"**Result: {'PASS' if rc == 0 else 'FAIL'}** — failures: {stats['failures']}, "
                f"rotations: {stats['rotations']}, certificates installed (`{rotation_event}`, in/out): {reloads[0]}/{reloads[1]}, "
                f"ERROR lines (in/out): {errs[0]}/{errs[1]}, exit codes after SIGTERM (out/in): "
                f"{exits[0]}/{exits[1]}; keep-alive round trips {stats['keepalive_rt']}, new connections "
                f"{stats['new_conns']}, bulk {stats['bulk_bytes'] >> 20} MiB.\n\n"
                f"RSS from the first sample after warm-up to the end: inbound {first[1] / 2**20:.1f} → "
                f"{last[1] / 2**20:.1f} MiB, outbound {first[3] / 2**20:.1f} → {last[3] / 2**20:.1f} MiB; "
                f"fds inbound {first[2]} → {last[2]}, outbound {first[4]} → {last[4]}.\n\n")
        if first_fail:
            f.write("First failures:\n\n" + "".join(f"- {x}\n" for x in first_fail) + "\n")
        f.write("| t (s) | inbound RSS (MiB) | inbound fds | outbound RSS (MiB) | outbound fds | "
                "keep-alive RTs | new conns | bulk MiB | rotations | failures |\n"
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
        for r in rows:
            f.write("| %d | %.1f | %d | %.1f | %d | %d | %d | %d | %d | %d |\n" %
                    (r[0], r[1] / 2**20, r[2], r[3] / 2**20, r[4], *r[5:]))
    print(f"soak: {'PASS' if rc == 0 else 'FAIL'} failures={stats['failures']} -> {OUT}", flush=True)
finally:
    stop.set()
    procs.stop_all()
    shutil.rmtree(work, ignore_errors=True)
sys.exit(rc)
PY
