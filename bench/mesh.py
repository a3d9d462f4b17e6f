#!/usr/bin/env python3
"""bench/mesh.py - the bench's two-hop job in mesh mode (issue 9, "mesh mode later").

    pod a (10.244.0.10)                               pod b (10.244.0.20)
    client --plain--> [iptables OUTPUT REDIRECT] --> sidecar a :15001
       --mTLS over veth + bridge--> [PREROUTING REDIRECT] --> sidecar b :15006
       --plain over loopback--> backend nginx :8080 (100 B response / big file)

The applications know nothing about the proxies: wrk, ratebench and curl in
pod a call http://10.244.0.20:8080/ in plain TCP, and seam-init's real
iptables rules (installed in both pods) send the connection through the
sidecars. Every peer runs behind the same rules, as uid 1337 (the uid the
rules exempt), with both sidecars pinned to one core and the load generator
and the backend to the other, as in bench/run.sh:

  seam      `seam-sidecar run --workers 1`, its defaults: certificates and
            the mesh config from seam-control-plane over gRPC, destination
            from SO_ORIGINAL_DST, SPIFFE authorization per port (STRICT,
            allow the client's ID), the client pod's connections carried as
            streams of one long-lived mTLS session to the server pod
            (seam-mux/1, docs/MUX.md), TLS resumption on
  seam-1to1 the same with `--mux=false`: one mTLS connection (a handshake,
            resumed where it can be) per client connection — the row for the
            issue's handshake job
  seam-mux  the same with an explicit `--mux` (the default since 2026-11-29;
            kept so older commands still run)
  seam-1sess the same with `--mux-sessions 1`: one session per destination
            even while it carries a bulk stream (the default before
            2026-11-29 15:00; bench/impaired.py's comparison)
  haproxy   bench/peers.sh's mode tcp config (nbthread 1), listening on the
  nginx     capture ports 15001 / 15006 with the one upstream of this job
            fixed in the config (an L4 proxy without SO_ORIGINAL_DST cannot
            do more), TLS resumption allowed, certificates from files

Both pods run with net.ipv4.tcp_tw_reuse=1 (see Bench.setup).

Measured per peer, REPS rounds (every peer once per round, in turn):
  keep-alive  wrk -t1 -c50 -dDUR: req/s, the pair's CPU s per 1k requests
  latency     ratebench 1000 rps on 16 connections: p50/p90/p99, added over
              the direct path (the same client and backend before the rules)
  new conn    wrk -c50 'Connection: close': conn/s, CPU ms per connection
  bulk        curl download of a big file for BULK_SECS: Gbit/s, CPU s/GB
Medians with min-max ranges; ratios seam / best peer (and seam-1to1 / best
peer: the peers and both seam modes are measured in the same rounds).

Root only (network namespaces, iptables, setpriv). Addresses exist only in
the namespaces this script creates (10.244.0.0/24) and removes at the end;
every process is stopped by its PID.

  python3 bench/mesh.py [--only seam,nginx] [--dur 10] [--reps 3]
                        [--out FILE] [--smoke] [--build-dir DIR]
  --smoke: 1 s per measurement, seam, seam-1to1 and nginx, exit 0 iff every path moved
           the right bytes without errors (CI).
"""
import argparse
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "e2e", "mesh"))
import meshlab  # noqa: E402
from meshlab import tree_pids  # noqa: E402

A_IP, B_IP, APP_PORT = "10.244.0.10", "10.244.0.20", 8080
CLIENT_ID = meshlab.spiffe("default", "client")
SERVER_ID = meshlab.spiffe("default", "server")
HZ = os.sysconf("SC_CLK_TCK")
CONNS, RATE, RATE_CONNS = 50, 1000, 16
PEERS = ("seam", "haproxy", "nginx")
SEAMS = ("seam", "seam-1to1", "seam-mux", "seam-1sess")  # seam's own modes: never a 'best peer'
KNOWN = PEERS + ("seam-1to1", "seam-mux", "seam-1sess")
DEFAULT_ONLY = "seam,seam-1to1,haproxy,nginx"
STREAMS = ("seam", "seam-mux")  # a new client connection is a stream: no handshake
MUX_ARGS = {"seam": [], "seam-1to1": ["--mux=false"], "seam-mux": ["--mux"],
            "seam-1sess": ["--mux-sessions", "1"]}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def rng(xs, nd=0):
    """' (min-max)' over the rounds, or '' for a single round."""
    xs = [x for x in xs if x is not None]
    return f" ({min(xs):.{nd}f}-{max(xs):.{nd}f})" if len(xs) > 1 else ""


def fmt(v, nd=0):
    if v is None:
        return "-"
    return f"{v:.{nd}f}"


# ---------------------------------------------------------------- processes
def cpu_ticks(pids):
    t = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            t += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return t


def steal_snap(cpus):
    """(steal, total) ticks summed over the CPUs in |cpus| ("1" or "0,2"),
    from /proc/stat: hypervisor steal on the proxy core, as run.sh reports."""
    want = {f"cpu{c.strip()}" for c in str(cpus).split(",") if c.strip()}
    steal = total = 0
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] in want:
                ticks = [int(x) for x in parts[1:]]
                steal += ticks[7] if len(ticks) > 7 else 0
                total += sum(ticks[:8])
    return steal, total


def ns_run(pod, cmd, timeout, cpus=None):
    """stdout + stderr of |cmd| in |pod|'s namespace (any exit code)."""
    r = pod.exec(cmd, check=False, timeout=timeout, cpus=cpus)
    return r.stdout + r.stderr


# ---------------------------------------------------------------- measurements
def to_us(s):
    m = re.match(r"([\d.]+)(us|ms|s)$", s or "")
    if not m:
        return None
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]


def wrk(pod, cpus, dur, extra=()):
    out = ns_run(pod, ["timeout", dur + 30, "wrk", "-t1", f"-c{CONNS}", f"-d{dur}s", "--latency",
                      *extra, f"http://{B_IP}:{APP_PORT}/100b"], dur + 40, cpus)
    m = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    n = re.search(r"^\s*(\d+) requests in", out, re.M)
    errs = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    nx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs += int(nx.group(1)) if nx else 0
    return {"rps": float(m.group(1)) if m else None, "n": int(n.group(1)) if n else 0,
            "errs": errs if (m and n) else 1, "raw": out}


def rate(pod, cpus, dur, ratebench, rps=RATE, conns=RATE_CONNS):
    out = ns_run(pod, ["timeout", dur + 30, ratebench, "rate", B_IP, APP_PORT, "/100b",
                      conns, rps, dur, 1], dur + 40, cpus)
    kv = dict(x.split("=", 1) for x in out.split() if "=" in x)
    num = lambda k: float(kv[k]) if k in kv else None  # noqa: E731
    return {"p50": num("p50_us"), "p90": num("p90_us"), "p99": num("p99_us"),
            "done": int(kv.get("completed", 0)),
            "errs": int(kv.get("errors", 1)) if kv else 1, "raw": out}


def bulk_cmd(secs):
    """curl downloading the big file from pod b for at most |secs|."""
    return ["curl", "-s", "-o", "/dev/null", "--max-time", secs, "-w",
            "%{size_download} %{time_total}", f"http://{B_IP}:{APP_PORT}/big"]


def bulk_result(out):
    """What bulk_cmd printed: bytes, Gbit/s (None if nothing came), errors."""
    m = re.search(r"(\d+) ([\d.]+)\s*$", out or "")
    size, t = (int(m.group(1)), float(m.group(2))) if m else (0, 0.0)
    return {"bytes": size, "gbps": size * 8 / t / 1e9 if t > 0 else None,
            "errs": 0 if size > 0 else 1, "raw": out}


def bulk(pod, cpus, secs):
    return bulk_result(ns_run(pod, bulk_cmd(secs), secs + 30, cpus))


# ---------------------------------------------------------------- the bench
class Bench:
    def __init__(self, args):
        self.a = args
        self.work = tempfile.mkdtemp(prefix="seam-meshbench-")
        os.chmod(self.work, 0o755)
        self.lab = meshlab.MeshLab(args.build_dir, workdir=self.work)
        self.res = {}  # (peer, metric) -> list over rounds

    # -- setup
    def setup(self):
        a = self.a
        env = dict(os.environ, WORK=self.work, REPO=REPO)
        r = subprocess.run(["bash", "-c", f'. "{HERE}/peers.sh" && make_pki'], env=env,
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"make_pki failed: {r.stderr}")
        self.pki = os.path.join(self.work, "pki")
        for root, _dirs, files in os.walk(self.pki):  # the peers run as uid 1337
            for f in files:
                os.chown(os.path.join(root, f), meshlab.PROXY_UID, meshlab.PROXY_UID)
        os.chmod(self.pki, 0o755)
        self.lab.setup_network([("a", 10, "default", "client"), ("b", 20, "default", "server")])
        self.pa, self.pb = self.lab.pods["a"], self.lab.pods["b"]
        for pod in (self.pa, self.pb):
            # Every new-connection run leaves ~10-25k connections in TIME_WAIT
            # between the same two pod IPs for 60 s. Without TIME_WAIT reuse
            # (on loopback, Linux's default tcp_tw_reuse=2 already allows it)
            # connect() hunts for a free port among them: the sidecars' CPU per
            # connection rose 0.41 -> 1.32 -> 2.76 ms over three back-to-back
            # 5 s runs (NOTES.md section 7), and whichever proxy ran later was
            # charged for the ones before. Per pod (namespaced sysctl), same
            # for every peer.
            pod.exec(["sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1"])
        self.start_backend()
        if any(p in a.peers for p in SEAMS):
            self.lab.start_control_plane(self.mesh_yaml(), cert_ttl="1h")
            # The control plane only answers the sidecars' calls: on the load core.
            subprocess.run(["taskset", "-a", "-pc", a.loadgen_cpus, str(self.lab.cp.pid)],
                           capture_output=True)

    def mesh_yaml(self):
        return f"""trust_domain: cluster.local
outbound_policy: ALLOW_ANY
default_inbound_mode: STRICT
services:
  - name: server.default.svc.cluster.local
    port: {APP_PORT}
    endpoints:
      - address: {B_IP}
        port: {APP_PORT}
        spiffe_id: {SERVER_ID}
inbound:
  - port: {APP_PORT}
    mode: STRICT
    allow:
      - {CLIENT_ID}
"""

    def start_backend(self):
        d = os.path.join(self.work, "backend")
        big = os.path.join(self.work, "big.bin")
        with open(big, "wb") as f:
            f.truncate(4 << 30)  # sparse: no disk I/O
        body = "x" * 100
        conf = os.path.join(d, "nginx.conf")
        subprocess.run(["bash", "-c", f'. "{HERE}/peers.sh" && backend_conf "$@"', "-",
                        d, f"0.0.0.0:{APP_PORT}", body, big], check=True, timeout=30)
        self.backend = self.lab.start(["nginx", "-p", d, "-e", f"{d}/error.log", "-c", conf],
                                      "backend.log", netns=self.pb.netns,
                                      cpus=self.a.loadgen_cpus)
        meshlab.wait_for(lambda: self.get() == body, 10, what="the backend")

    def get(self, path="/100b", timeout=3):
        """The body of pod b's app as pod a's client gets it."""
        return self.pa.exec(["curl", "-s", "--max-time", timeout,
                             f"http://{B_IP}:{APP_PORT}{path}"], check=False,
                            timeout=timeout + 10).stdout

    def install_rules(self):
        for pod in (self.pa, self.pb):
            pod.exec([self.lab.binary("seam-init"), "install"])

    # -- peers
    def start_peer(self, peer):
        a = self.a
        if peer in SEAMS:
            procs = []
            for pod in (self.pa, self.pb):
                procs.append(self.lab.start([
                    self.lab.binary("seam-sidecar"), "run",
                    "--control-plane", f"10.244.0.1:{meshlab.CP_PORT}",
                    "--control-plane-trust", self.lab.path("root.pem"),
                    "--control-plane-name", "seam-control-plane",
                    "--token-file", self.lab.path(f"token-{pod.name}"),
                    "--trust-domain", meshlab.TD, "--namespace", pod.k8s_ns,
                    "--service-account", pod.sa, "--pod-ip", pod.ip4,
                    "--workers", "1", "--log-level", "warn", "--drain-timeout", "1s"]
                    + MUX_ARGS[peer],
                    f"seam-{pod.name}.log", netns=pod.netns, uid=meshlab.PROXY_UID,
                    cpus=a.proxy_cpus))

            def ready():
                for pod, p in zip((self.pa, self.pb), procs):
                    if p.p.poll() is not None:
                        raise RuntimeError(f"seam sidecar exited: {p.log()[-2000:]}")
                    code = ns_run(pod, ["curl", "-s", "-o", "/dev/null", "-w",
                                              "%{http_code}", "--max-time", "2",
                                              "http://127.0.0.1:15020/healthz/ready"], 10)
                    if code.strip() != "200":
                        return False
                return True
            meshlab.wait_for(ready, 20, what="both seam sidecars ready")
        else:
            procs = []
            pki = self.pki
            for pod, role in ((self.pb, "inbound"), (self.pa, "outbound")):
                wd = os.path.join(self.work, "peers", peer, role)
                os.makedirs(wd, exist_ok=True)
                os.chown(wd, meshlab.PROXY_UID, meshlab.PROXY_UID)
                who = "server" if role == "inbound" else "client"
                env = dict(os.environ, ROLE=role, WORKDIR=wd, TLS_RESUME="1",
                           TLS_CIPHERSUITE="TLS_AES_128_GCM_SHA256",
                           ALLOW_ID="spiffe://cluster.local/ns/default/*",
                           CERT=f"{pki}/{who}.crt", KEY=f"{pki}/{who}.key",
                           CERT_KEY_PEM=f"{pki}/{who}.pem", CA=f"{pki}/ca.crt")
                if role == "inbound":
                    env.update(LISTEN_ADDR="0.0.0.0", LISTEN_PORT="15006",
                               UPSTREAM_ADDR="127.0.0.1", UPSTREAM_PORT=str(APP_PORT),
                               PEER_ID=CLIENT_ID, PEER_DNS="client.default.svc")
                else:
                    env.update(LISTEN_ADDR="127.0.0.1", LISTEN_PORT="15001",
                               UPSTREAM_ADDR=B_IP, UPSTREAM_PORT=str(APP_PORT),
                               PEER_ID=SERVER_ID, PEER_DNS="server.default.svc")
                fn = {"haproxy": "peer_haproxy_l4", "nginx": "peer_nginx"}[peer]
                peers_sh = self.lab.readable(os.path.join(HERE, "peers.sh"))  # for uid 1337
                procs.append(self.lab.start(
                    ["bash", "-c", f'. "{peers_sh}" && {fn}'], f"{peer}-{role}.log",
                    netns=pod.netns, uid=meshlab.PROXY_UID, cpus=a.proxy_cpus, env=env))
        try:
            meshlab.wait_for(lambda: self.get() == "x" * 100, 20,
                             what=f"a request through the {peer} sidecars")
        except TimeoutError:
            logs = "\n".join(f"--- {os.path.basename(p.log_path)}\n{p.log()[-1500:]}"
                             for p in procs)
            self.stop_peer(procs)
            raise RuntimeError(f"{peer}: no response through the sidecars\n{logs}") from None
        return procs

    def stop_peer(self, procs):
        for p in procs:
            self.lab.stop(p)
        time.sleep(0.3)

    def measure(self, procs, fn):
        pids = set()
        for p in procs:
            pids |= tree_pids(p.pid)
        c0 = cpu_ticks(pids)
        s0 = steal_snap(self.a.proxy_cpus)
        r = fn()
        s1 = steal_snap(self.a.proxy_cpus)
        pids = set()
        for p in procs:
            pids |= tree_pids(p.pid)
        r["cpu"] = (cpu_ticks(pids) - c0) / HZ
        r["steal"] = 100 * (s1[0] - s0[0]) / (s1[1] - s0[1]) if s1[1] > s0[1] else None
        return r

    def add(self, peer, key, value):
        self.res.setdefault((peer, key), []).append(value)

    def run_direct(self):
        a = self.a
        pod, cpus = self.pa, a.loadgen_cpus
        log("direct (no sidecars, no rules yet): keep-alive, fixed-rate latency, bulk")
        for _ in range(a.reps):
            r = wrk(pod, cpus, a.dur)
            self.add("direct", "rps", r["rps"])
            r = rate(pod, cpus, a.dur, a.ratebench)
            for k in ("p50", "p90", "p99"):
                self.add("direct", k, r[k])
            r = wrk(pod, cpus, a.dur, ("-H", "Connection: close"))
            self.add("direct", "cps", r["rps"])
            self.add("direct", "gbps", bulk(pod, cpus, a.bulk_secs)["gbps"])

    @contextlib.contextmanager
    def running(self, peer):
        """|peer|'s sidecars (their Procs) for the block, stopped after it."""
        procs = self.start_peer(peer)
        try:
            yield procs
        finally:
            self.stop_peer(procs)

    def run_peer(self, peer):
        a = self.a
        pod, cpus = self.pa, a.loadgen_cpus
        with self.running(peer) as procs:
            log(f"{peer}: keep-alive wrk -c{CONNS} {a.dur}s")
            r = self.measure(procs, lambda: wrk(pod, cpus, a.dur))
            self.add(peer, "rps", r["rps"])
            self.add(peer, "steal_ka", r["steal"])
            self.add(peer, "cpu_1k", r["cpu"] / (r["n"] / 1000) if r["n"] else None)
            self.add(peer, "errs", r["errs"])
            log(f"{peer}: {RATE} rps on {RATE_CONNS} connections {a.dur}s")
            r = self.measure(procs, lambda: rate(pod, cpus, a.dur, a.ratebench))
            for k in ("p50", "p90", "p99"):
                self.add(peer, k, r[k])
            self.add(peer, "steal_rate", r["steal"])
            self.add(peer, "errs", r["errs"] if r["done"] else 1)
            log(f"{peer}: new connection per request wrk -c{CONNS} {a.dur}s")
            r = self.measure(procs, lambda: wrk(pod, cpus, a.dur, ("-H", "Connection: close")))
            self.add(peer, "cps", r["rps"])
            self.add(peer, "cpu_conn", r["cpu"] * 1000 / r["n"] if r["n"] else None)
            self.add(peer, "errs", r["errs"])
            log(f"{peer}: bulk download {a.bulk_secs}s")
            r = self.measure(procs, lambda: bulk(pod, cpus, a.bulk_secs))
            self.add(peer, "gbps", r["gbps"])
            self.add(peer, "cpu_gb", r["cpu"] / (r["bytes"] / 1e9) if r["bytes"] else None)
            self.add(peer, "errs", r["errs"])

    def prepare(self):
        """What runs once before the peers: the direct path, then the rules."""
        self.run_direct()
        self.install_rules()

    def run(self):
        """setup, prepare, then every peer once per round for REPS rounds, in
        turn; close in any case. True if no namespace was left behind."""
        a = self.a
        clean = False
        try:
            self.setup()
            self.prepare()
            for rnd in range(1, a.reps + 1):
                for peer in a.peers:
                    log(f"round {rnd}/{a.reps}: {peer}")
                    self.run_peer(peer)
        finally:
            clean = self.close()
        return clean

    def write_report(self):
        """The report to --out, or to stdout without it."""
        text = self.report()
        if self.a.out:
            with open(self.a.out, "w") as f:
                f.write(text)
        else:
            sys.stdout.write(text)

    def close(self):
        self.lab.close()  # every process started here, then the namespaces
        leftover = subprocess.run(["ip", "netns", "list"], capture_output=True,
                                  text=True).stdout
        shutil.rmtree(self.work, ignore_errors=True)
        return self.lab.tag not in leftover

    # -- report
    def m(self, peer, key):
        return median(self.res.get((peer, key), []))

    def worst(self, peer, key):
        xs = [x for x in self.res.get((peer, key), []) if x is not None]
        return max(xs) if xs else None

    def r(self, peer, key, nd=0):
        return rng(self.res.get((peer, key), []), nd)

    def report(self):
        a = self.a
        peers = [p for p in a.peers if (p, "rps") in self.res]
        d50, d90 = self.m("direct", "p50"), self.m("direct", "p90")
        out = []
        w = out.append
        w(f"Command: `{a.cmdline}`; {a.reps} round(s), {a.dur} s per measurement "
          f"(bulk {a.bulk_secs} s), medians (min-max). Both sidecars on CPU {a.proxy_cpus}, "
          f"client + backend on CPU {a.loadgen_cpus}. Pods are network namespaces joined by a "
          f"bridge (veth), seam-init's iptables rules in both; the client calls "
          f"{B_IP}:{APP_PORT} in plain TCP; net.ipv4.tcp_tw_reuse=1 in both pods. Direct path "
          f"(before the rules): p50 "
          f"{fmt(d50)} us, p90 {fmt(d90)} us at {RATE} rps.")
        w("")
        w(f"| sidecars | keep-alive req/s | CPU s/1k req (pair) | p50 / p90 / p99 us at {RATE} rps "
          "| added p50 / p90 us | new conn/s (resumption allowed) | CPU ms/conn (pair) "
          "| bulk download Gbit/s | CPU s/GB (pair) | errors "
          f"| steal % on the proxy core, keep-alive / {RATE} rps (worst round) |")
        w("|---|---|---|---|---|---|---|---|---|---|---|")
        m = lambda k: self.m("direct", k)  # noqa: E731
        w(f"| direct (no sidecars) | {fmt(m('rps'))}{self.r('direct', 'rps')} | - "
          f"| {fmt(m('p50'))} / {fmt(m('p90'))} / {fmt(m('p99'))} | 0 / 0 "
          f"| {fmt(m('cps'))}{self.r('direct', 'cps')} | - "
          f"| {fmt(m('gbps'), 2)}{self.r('direct', 'gbps', 2)} | - | - | - |")
        for p in peers:
            m = lambda k: self.m(p, k)  # noqa: E731
            add50 = m("p50") - d50 if m("p50") is not None and d50 is not None else None
            add90 = m("p90") - d90 if m("p90") is not None and d90 is not None else None
            w(f"| {p} | {fmt(m('rps'))}{self.r(p, 'rps')} | {fmt(m('cpu_1k'), 4)} "
              f"| {fmt(m('p50'))} / {fmt(m('p90'))} / {fmt(m('p99'))} "
              f"| {fmt(add50)} / {fmt(add90)} | {fmt(m('cps'))}{self.r(p, 'cps')} "
              f"| {fmt(m('cpu_conn'), 3)} | {fmt(m('gbps'), 2)}{self.r(p, 'gbps', 2)} "
              f"| {fmt(m('cpu_gb'), 3)} | {sum(self.res.get((p, 'errs'), []))} "
              f"| {fmt(self.worst(p, 'steal_ka'), 1)} / {fmt(self.worst(p, 'steal_rate'), 1)} |")
        others = [p for p in peers if p not in SEAMS]
        for mine in [p for p in SEAMS if p in peers] if others else []:
            w("")
            w(f"| metric (mesh mode) | {mine} | best peer | {mine} / best |")
            w("|---|---|---|---|")
            rows = [("keep-alive req/s", "rps", max, 0), ("CPU s per 1k req", "cpu_1k", min, 4),
                    ("added p50 us", "add50", min, 0), ("added p90 us", "add90", min, 0),
                    ("new conn/s", "cps", max, 0), ("CPU ms per conn", "cpu_conn", min, 3),
                    ("bulk Gbit/s", "gbps", max, 2), ("CPU s/GB", "cpu_gb", min, 3)]
            for label, key, best_fn, nd in rows:
                def val(p, key=key):
                    if key in ("add50", "add90"):
                        base = d50 if key == "add50" else d90
                        v = self.m(p, "p50" if key == "add50" else "p90")
                        return v - base if v is not None and base is not None else None
                    return self.m(p, key)
                cands = [(val(p), p) for p in others if val(p) is not None]
                s = val(mine)
                if not cands or s is None:
                    continue
                bv, bp = best_fn(cands)
                ratio = f"{s / bv:.2f}" if bv else "-"
                if mine in STREAMS and key in ("cps", "cpu_conn"):
                    label += " (streams: no handshake per conn)"
                w(f"| {label} | {fmt(s, nd)} | {fmt(bv, nd)} ({bp}) | {ratio} |")
        return "\n".join(out) + "\n"

    def smoke_failures(self):
        bad = []
        for p in self.a.peers:
            for k in ("rps", "cps", "gbps", "p50"):
                if not self.m(p, k):
                    bad.append(f"{p}: no {k}")
            if sum(self.res.get((p, "errs"), [1])):
                bad.append(f"{p}: errors")
        return bad


def find_build(order):
    """The first of the build directories |order| (under the repo) that has
    seam-sidecar, or None."""
    for d in order:
        if os.path.exists(os.path.join(REPO, d, "sidecar", "seam-sidecar")):
            return os.path.join(REPO, d)
    return None


def build_ratebench():
    out = os.path.join(HERE, "work", "bin", "ratebench")
    src = os.path.join(HERE, "tools", "ratebench.c")
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(src):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        subprocess.run(["gcc", "-O2", "-std=gnu11", "-o", out, src, "-lm"], check=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=DEFAULT_ONLY)
    ap.add_argument("--dur", type=int, default=int(os.environ.get("DUR", 10)))
    ap.add_argument("--reps", type=int, default=int(os.environ.get("REPS", 3)))
    ap.add_argument("--bulk-secs", type=int, default=int(os.environ.get("BULK_SECS", 8)))
    ap.add_argument("--out", help="write the markdown report here (default: stdout)")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--build-dir", default=os.environ.get("SEAM_BUILD_DIR"))
    ap.add_argument("--proxy-cpus", default=os.environ.get("PROXY_CPUS", "1"))
    ap.add_argument("--loadgen-cpus", default=os.environ.get("LOADGEN_CPUS", "0"))
    a = ap.parse_args()
    shown, skip = [], False
    for x in sys.argv[1:]:  # the report names the command, not where it was written
        if skip or x == "--out" or x.startswith("--out="):
            skip = x == "--out" and not skip
            continue
        shown.append(x)
    a.cmdline = "python3 bench/mesh.py" + "".join(f" {x}" for x in shown)
    if a.smoke:
        a.dur, a.reps, a.bulk_secs = 1, 1, 1
        if a.only == DEFAULT_ONLY:
            a.only = "seam,seam-1to1,nginx"
    a.peers = [p for p in a.only.split(",") if p]
    bad = [p for p in a.peers if p not in KNOWN]
    if bad:
        ap.error(f"unknown peer(s) {bad}; known: {', '.join(KNOWN)}")
    if os.geteuid() != 0:
        print("bench/mesh.py needs root (network namespaces, iptables, setpriv)", file=sys.stderr)
        return 2
    need = ["wrk", "curl", "nginx", "taskset", "setpriv", "iptables", "gcc"]
    need += ["haproxy"] if "haproxy" in a.peers else []
    missing = [t for t in need if not shutil.which(t)]
    if missing:
        print(f"bench/mesh.py needs {missing} (bash scripts/deps.sh)", file=sys.stderr)
        return 2
    if a.build_dir is None:
        a.build_dir = find_build(("build", "build-bench") if a.smoke else ("build-bench", "build"))
    if any(p in a.peers for p in SEAMS):
        why = meshlab.run_built(a.build_dir or os.path.join(REPO, "build"))
        if why:
            print(why, file=sys.stderr)
            return 2
    a.ratebench = build_ratebench()
    # A CI timeout or ^C ends us with a signal: leave through the finally
    # blocks below, which stop what we started and delete the namespaces.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    b = Bench(a)
    clean = b.run()
    b.write_report()
    if not clean:
        print("network namespaces were left behind", file=sys.stderr)
        return 1
    if a.smoke:
        bad = b.smoke_failures()
        if bad:
            print("mesh smoke FAILED: " + "; ".join(bad), file=sys.stderr)
            return 1
        log("mesh smoke: every path moved the right bytes (" + ", ".join(a.peers) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
