#!/usr/bin/env python3
"""bench/rtt.py - one bulk connection through the two-hop sidecar pair across a
path with a round trip.

bench/run.sh measures the pair on loopback, where a round trip is the proxies'
own CPU time. Between nodes the network adds one: 0.1-0.5 ms in a zone, 1-2 ms
across zones, 10-100 ms across regions. A bulk stream then moves at most one
window per round trip, and how large each proxy lets its windows grow decides
its throughput. This puts the pair on such a path and measures it:

  namespace A: iperf3 client, outbound proxy (plain in, mTLS out)
  namespace B: inbound proxy (mTLS in, client certificate required), iperf3 -s
  A <-> B: tests/tools/delayline.c, a tun device in each namespace, every
           packet passed on RTT/2 later, one by one (this kernel has no netem),
           MTU 9000

Peers (bench/peers.sh, the same configurations as bench/run.sh):
  direct     no proxies: what TCP alone moves on the path (the reference)
  seam-1to1  seam tunnel, one mTLS connection per connection (run.sh's seam)
  seam       seam tunnel --mux: streams of one session (mesh mode's default)
  nginx      stream module, 1 worker;  haproxy  mode tcp, nbthread 1
  NAME=BIN   (with --seam-bin) seam --mux from another binary, for an A/B
Per RTT, REPS rounds (peers in turn), each: iperf3 -t DUR up (A->B) and -R.
Reported: median Gbit/s (min-max) and the ratio to direct; the proxies' CPU
seconds per GB. Both proxies on PROXY_CPUS (1); iperf3 and the delay line on
LOADGEN_CPUS (0).

Root only. Addresses exist only in the two namespaces created here (10.90.0.1,
10.90.0.2 and their loopbacks) and removed at the end; every process started is
stopped by its PID; each measurement is bounded by DUR.

  python3 bench/rtt.py [--rtt-ms 1,10,40] [--dur 8] [--reps 3]
                       [--only direct,seam-1to1,seam,nginx,haproxy]
                       [--seam-bin NAME=BIN ...] [--build-dir build-bench] [--out FILE]
  python3 bench/rtt.py --smoke   # 5 ms, 1 s, direct/seam-1to1/seam/nginx, build/ first;
                                 # exit 0 iff every path moved bytes (run.sh --smoke, CI)
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "e2e", "path"))
from delaypath import DelayPath  # noqa: E402  (the namespaces and the delay line)
from mesh import cpu_ticks, log, tree_pids  # noqa: E402  (bench/mesh.py's process helpers)

A_IP, B_IP = "10.90.0.1", "10.90.0.2"
OUT_PORT, IN_PORT, BACK_PORT = 15001, 15006, 5201
CLIENT_ID = "spiffe://cluster.local/ns/default/sa/client"
SERVER_ID = "spiffe://cluster.local/ns/default/sa/server"
HZ = os.sysconf("SC_CLK_TCK")


class Lab(DelayPath):
    """The two namespaces and the delay line (tests/e2e/path/delaypath.py),
    and the processes started in them."""

    def __init__(self, work, delayline):
        self.work, self.procs = work, []
        super().__init__(delayline, "seam-rtt", A_IP, B_IP)

    def start(self, ns, cpus, args, name, env=None):
        logf = open(os.path.join(self.work, name + ".log"), "w")
        p = subprocess.Popen(["ip", "netns", "exec", ns, "taskset", "-c", cpus] + args,
                             stdout=logf, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
        logf.close()
        p.log_path = os.path.join(self.work, name + ".log")
        self.procs.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if p in self.procs:
            self.procs.remove(p)

    def close(self):
        try:
            for p in list(self.procs):
                self.stop(p)
        finally:
            super().close()


def wait_port(ns, port, secs=15):
    """Until something listens on |port| in |ns|. It looks (ss), not connects:
    a probe connection through the pair would reach iperf3 -s, which takes
    an empty connection as a failed test and may then drop the next one."""
    end = time.monotonic() + secs
    while time.monotonic() < end:
        r = subprocess.run(["ip", "netns", "exec", ns, "ss", "-Htln", f"sport = :{port}"],
                           capture_output=True, text=True, timeout=10)
        if r.stdout.strip():
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} in {ns}")


def start_pair(lab, a, peer, seam_bin):
    """The outbound proxy in A and the inbound in B for |peer|: their processes."""
    fn = {"nginx": "peer_nginx", "haproxy": "peer_haproxy_l4"}.get(peer, "peer_seam")
    pki = os.path.join(lab.work, "pki")
    procs = []
    for ns, role in ((lab.b, "inbound"), (lab.a, "outbound")):
        wd = os.path.join(lab.work, "peers", peer, role)
        os.makedirs(wd, exist_ok=True)
        who = "server" if role == "inbound" else "client"
        env = dict(os.environ, ROLE=role, WORKDIR=wd, TLS_RESUME="1",
                   TLS_CIPHERSUITE="TLS_AES_128_GCM_SHA256",
                   ALLOW_ID="spiffe://cluster.local/ns/default/*",
                   CERT=f"{pki}/{who}.crt", KEY=f"{pki}/{who}.key",
                   CERT_KEY_PEM=f"{pki}/{who}.pem", CA=f"{pki}/ca.crt", SEAM_BIN=seam_bin,
                   MUX="0" if peer == "seam-1to1" else "1")
        if role == "inbound":
            env.update(LISTEN_ADDR="0.0.0.0", LISTEN_PORT=str(IN_PORT), UPSTREAM_ADDR="127.0.0.1",
                       UPSTREAM_PORT=str(BACK_PORT), PEER_ID=CLIENT_ID,
                       PEER_DNS="client.default.svc")
        else:
            env.update(LISTEN_ADDR="127.0.0.1", LISTEN_PORT=str(OUT_PORT), UPSTREAM_ADDR=B_IP,
                       UPSTREAM_PORT=str(IN_PORT), PEER_ID=SERVER_ID,
                       PEER_DNS="server.default.svc")
        procs.append(lab.start(ns, a.proxy_cpus,
                               ["bash", "-c", f'. "{HERE}/peers.sh" && {fn}'],
                               f"{peer}-{role}", env=env))
    wait_port(lab.b, IN_PORT)
    wait_port(lab.a, OUT_PORT)
    return procs


def iperf(lab, a, host, port, reverse):
    """(Gbit/s, bytes) of one iperf3 run from A."""
    r = subprocess.run(["ip", "netns", "exec", lab.a, "taskset", "-c", a.loadgen_cpus, "iperf3",
                        "-c", host, "-p", str(port), "-t", str(a.dur), "-J"]
                       + (["-R"] if reverse else []),
                       capture_output=True, text=True, timeout=a.dur + 60)
    try:
        b = json.loads(r.stdout)["end"]["sum_received"]["bytes"]
    except (ValueError, KeyError):
        raise RuntimeError(f"iperf3 failed: {r.stdout[-500:]} {r.stderr[-500:]}") from None
    return b * 8 / a.dur / 1e9, b


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rtt-ms", default="1,10,40")
    ap.add_argument("--dur", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="direct,seam-1to1,seam,nginx,haproxy")
    ap.add_argument("--seam-bin", action="append", default=[],
                    help="NAME=BIN: also seam --mux from BIN, reported as NAME")
    ap.add_argument("--build-dir")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--proxy-cpus", default="1")
    ap.add_argument("--loadgen-cpus", default="0")
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.smoke:
        a.rtt_ms, a.dur, a.reps, a.only = "5", 1, 1, "direct,seam-1to1,seam,nginx"
    if a.build_dir is None:
        dirs = [os.path.join(REPO, d) for d in (("build", "build-bench") if a.smoke
                                                 else ("build-bench", "build"))]
        if os.environ.get("SEAM_BUILD_DIR"):
            dirs.insert(0, os.environ["SEAM_BUILD_DIR"])
        a.build_dir = next((d for d in dirs if os.access(os.path.join(d, "sidecar", "seam-sidecar"),
                                                          os.X_OK)), dirs[0])
    if os.geteuid() != 0:
        sys.exit("rtt.py needs root (network namespaces, tun devices)")
    rtts = [float(x) for x in a.rtt_ms.split(",")]
    if not all(0 <= r <= 1000 for r in rtts) or not 1 <= a.dur <= 600 or not 1 <= a.reps <= 20:
        sys.exit("rtt.py: --rtt-ms in 0..1000, --dur in 1..600, --reps in 1..20")
    peers = [p for p in a.only.split(",") if p]
    bins = {}
    for p in peers:
        if p not in ("direct", "seam-1to1", "seam", "nginx", "haproxy"):
            sys.exit(f"rtt.py: unknown peer {p}")
    seam = os.path.join(a.build_dir, "sidecar", "seam-sidecar")
    for p in peers:
        bins[p] = seam
    for nb in a.seam_bin:
        name, _, b = nb.partition("=")
        if not name or not os.access(b, os.X_OK):
            sys.exit(f"rtt.py: --seam-bin {nb}: not NAME=executable")
        peers.append(name)
        bins[name] = b
    if any(p in ("seam", "seam-1to1") for p in peers) and not os.access(seam, os.X_OK):
        sys.exit(f"rtt.py: {seam} is not built (cmake --build {a.build_dir})")
    for t in ["iperf3", "ip", "taskset", "gcc"] + [p for p in ("nginx", "haproxy") if p in peers]:
        if not shutil.which(t):
            sys.exit(f"rtt.py needs {t} (bash scripts/deps.sh)")

    work = os.path.join(HERE, "work", "rtt")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    delayline = os.path.join(work, "delayline")
    for cmd in (["gcc", "-O2", "-Wall", "-o", delayline,
                 os.path.join(REPO, "tests", "tools", "delayline.c")],
                ["bash", "-c", f'WORK="{work}" REPO="{REPO}"; . "{HERE}/peers.sh" && make_pki']):
        subprocess.run(cmd, check=True, timeout=120)

    # A CI timeout or ^C ends us with a signal: leave through the finally
    # below, which stops what we started and deletes the namespaces.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    lab = Lab(work, delayline)
    res = {}
    try:
        back = lab.start(lab.b, a.loadgen_cpus, ["iperf3", "-s", "-p", str(BACK_PORT)], "iperf3-s")
        for rtt in rtts:
            lab.connect(rtt * 500, a.loadgen_cpus)  # RTT/2 each way
            wait_port(lab.b, BACK_PORT)
            for rep in range(a.reps):
                for peer in peers:
                    procs = [] if peer == "direct" else start_pair(lab, a, peer, bins[peer])
                    host, port = (B_IP, BACK_PORT) if peer == "direct" else ("127.0.0.1", OUT_PORT)
                    for d in ("up", "down"):
                        pids = set()
                        for p in procs:
                            pids |= tree_pids(p.pid)
                        c0 = cpu_ticks(pids)
                        gbps, nbytes = iperf(lab, a, host, port, d == "down")
                        cpu = (cpu_ticks(pids) - c0) / HZ
                        res.setdefault((rtt, peer, d), []).append(
                            (gbps, cpu / (nbytes / 1e9) if procs and nbytes else None))
                    for p in procs:
                        lab.stop(p)
                    log(f"rtt {rtt:g} ms round {rep + 1} {peer}: "
                        + " ".join(f"{d} {res[(rtt, peer, d)][-1][0]:.2f} Gbit/s"
                                   for d in ("up", "down")))
        lab.stop(back)
    finally:
        lab.close()

    def cell(xs, nd):
        xs = [x for x in xs if x is not None]
        if not xs:
            return "-"
        m = statistics.median(xs)
        return f"{m:.{nd}f}" + (f" ({min(xs):.{nd}f}-{max(xs):.{nd}f})" if len(xs) > 1 else "")

    lines = ["# One bulk connection across a round trip (bench/rtt.py), "
             + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
             "",
             f"Machine: {os.cpu_count()} CPUs, kernel {os.uname().release}; path: tests/tools/delayline.c "
             f"(tun, MTU 9000, RTT/2 each way); iperf3 -t {a.dur}, {a.reps} rounds; "
             f"proxies on CPU {a.proxy_cpus}, iperf3 and the delay line on CPU {a.loadgen_cpus}.",
             f"Command: python3 bench/rtt.py {' '.join(sys.argv[1:])}",
             "",
             "| RTT | peer | up Gbit/s | up / direct | down Gbit/s | down / direct | CPU s/GB up | CPU s/GB down |",
             "|---|---|---|---|---|---|---|---|"]
    for rtt in rtts:
        for peer in peers:
            row = [f"{rtt:g} ms", peer]
            cpu = []
            for d in ("up", "down"):
                g = [x[0] for x in res.get((rtt, peer, d), [])]
                ref = [x[0] for x in res.get((rtt, "direct", d), [])]
                row.append(cell(g, 2))
                row.append(f"{statistics.median(g) / statistics.median(ref):.2f}"
                           if g and ref and statistics.median(ref) > 0 else "-")
                cpu.append(cell([x[1] for x in res.get((rtt, peer, d), [])], 2))
            lines.append("| " + " | ".join(row + cpu) + " |")
    lines += ["", "median (min-max) of the rounds; CPU = both proxies' user+system seconds per GB moved"]
    refs = [p for p in ("nginx", "haproxy") if p in peers]
    if refs:
        mine_peers = [p for p in peers if p not in ("direct", *refs)]
        lines += ["", f"seam / best peer ({', '.join(refs)}): Gbit/s up / down", "",
                  "| RTT | " + " | ".join(mine_peers) + " |",
                  "|---" * (1 + len(mine_peers)) + "|"]
        for rtt in rtts:
            cells = []
            for peer in mine_peers:
                r = []
                for d in ("up", "down"):
                    best = max(statistics.median([x[0] for x in res[(rtt, q, d)]]) for q in refs)
                    mine = statistics.median([x[0] for x in res[(rtt, peer, d)]])
                    r.append(f"{mine / best:.2f}" if best > 0 else "-")
                cells.append(" / ".join(r))
            lines.append(f"| {rtt:g} ms | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    stuck = [f"{p} {d} at {r:g} ms" for (r, p, d), xs in res.items() if not all(x[0] > 0 for x in xs)]
    if stuck:
        log("no bytes moved: " + ", ".join(stuck))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
