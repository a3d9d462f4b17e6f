#!/usr/bin/env python3
"""bench/impaired.py - what one session per destination costs on a worse network.

seam's mesh mode carries a pod's connections to one destination as streams of
one mTLS session (seam-mux/1, docs/MUX.md). The price named there: the streams
share one TCP connection, so a small request can wait behind a bulk stream's
bytes (head-of-line), and parallel bulk flows share one congestion window,
which a lost segment halves for all of them. This measures both, seam's
default (`seam`) against `--mux=false` (`seam-1to1`), `--mux-sessions 1`
(`seam-1sess`: one session per destination whatever it carries) and nginx, in the pods of
bench/mesh.py (same sidecars, same rules, same pinning), on a link made worse
inside the pods' namespaces:

  rate   tbf on both pods' eth0 (default 1gbit): a bottleneck with a queue
  loss   iptables `statistic --mode random` DROP of TCP segments arriving on
         each pod's eth0 (default 0.001 = 0.1 % each way)
(No added delay: this kernel has no netem.)

Per peer, REPS rounds:
  small alone  ratebench 200 rps on 4 connections: p50 / p90 / p99 us
  small + bulk the same while one curl downloads the big file from the same
               destination, started 1 s before: p50 / p90 / p99 and the
               download's Gbit/s (seam puts connections opened beside a bulk
               stream on a second session: `--mux-sessions`, default 2)
  bulk joins   the same, the download starting 1 s after the small requests'
               connections (seam: on their session): p50 / p90 / p99
  4 bulk       four parallel downloads: their total Gbit/s

Root only. Addresses exist only in the namespaces created here and removed at
the end; every process is stopped by its PID; every load is bounded in time.

  python3 bench/impaired.py [--only seam,seam-1sess,seam-1to1,nginx] [--dur 10] [--reps 3]
                            [--rate 1gbit] [--loss 0.001] [--out FILE]
"""
import argparse
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mesh  # noqa: E402  (bench/mesh.py: the pods, the sidecars, the tools)
from mesh import log, fmt  # noqa: E402

SMALL_RPS, SMALL_CONNS = 200, 4


def downloads(pod, cpus, n, secs):
    """|n| downloads of the big file (mesh.bulk_cmd) started together, in the
    background: returns a function that waits for them and gives (total
    Gbit/s, errors)."""
    procs = [subprocess.Popen(
        [str(c) for c in mesh.meshlab.ns_prefix(pod.netns, None, cpus) + mesh.bulk_cmd(secs)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(n)]

    def done():
        total, errs = 0.0, 0
        for p in procs:
            try:
                out, _ = p.communicate(timeout=secs + 30)
            except subprocess.TimeoutExpired:
                p.kill()
                out, _ = p.communicate()
            r = mesh.bulk_result(out)
            errs += r["errs"]
            total += r["gbps"] or 0.0
        return total, errs
    return done


class Impaired(mesh.Bench):
    def prepare(self):
        """The rules, then the worse link (no direct path: seam is compared
        with itself and nginx here)."""
        self.install_rules()
        a = self.a
        for pod in (self.pa, self.pb):
            pod.exec(["tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", a.rate,
                      "burst", "256kb", "latency", "20ms"])
            if a.loss > 0:
                for ipt in ("iptables", "ip6tables"):
                    pod.exec([ipt, "-A", "INPUT", "-i", "eth0", "-p", "tcp", "-m", "statistic",
                              "--mode", "random", "--probability", str(a.loss), "-j", "DROP"])

    def run_peer(self, peer):
        a = self.a
        pod, cpus = self.pa, a.loadgen_cpus
        def small():
            r = mesh.rate(pod, cpus, a.dur, a.ratebench, SMALL_RPS, SMALL_CONNS)
            log(f"{peer}:   p50/p90/p99 {r['p50']}/{r['p90']}/{r['p99']} us, {r['errs']} errors")
            return r

        with self.running(peer):
            log(f"{peer}: small requests alone, {SMALL_RPS} rps on {SMALL_CONNS} conns {a.dur}s")
            r = small()
            for k in ("p50", "p90", "p99"):
                self.add(peer, "alone_" + k, r[k])
            self.add(peer, "errs", r["errs"])
            log(f"{peer}: the same beside one bulk download")
            wait = downloads(pod, cpus, 1, a.dur + 3)
            time.sleep(1)  # the download is under way
            r = small()
            gbps, errs = wait()
            for k in ("p50", "p90", "p99"):
                self.add(peer, "bulk_" + k, r[k])
            self.add(peer, "bulk_gbps", gbps)
            self.add(peer, "errs", r["errs"] + errs)
            log(f"{peer}: the same, the download joining 1 s after the small requests began")
            late = {}
            th = threading.Thread(target=lambda: late.update(small()), daemon=True)
            th.start()
            time.sleep(1)  # the small requests' connections are up
            wait = downloads(pod, cpus, 1, a.dur)
            th.join(a.dur + 60)
            gbps, errs = wait()
            for k in ("p50", "p90", "p99"):
                self.add(peer, "late_" + k, late.get(k))
            self.add(peer, "errs", late.get("errs", 1) + errs)
            log(f"{peer}: four parallel downloads {a.dur}s")
            gbps, errs = downloads(pod, cpus, 4, a.dur)()
            self.add(peer, "par_gbps", gbps)
            self.add(peer, "errs", errs)

    def report(self):
        a = self.a
        out = [f"Command: `{a.cmdline}`; {a.reps} round(s), {a.dur} s per measurement, medians "
               f"(min-max). Pods a and b of bench/mesh.py (sidecars on CPU {a.proxy_cpus}, client "
               f"and backend on CPU {a.loadgen_cpus}); both pods' eth0 behind tbf rate {a.rate}, "
               f"and {a.loss * 100:g} % of TCP segments arriving on each pod's eth0 dropped. "
               f"Small requests: ratebench {SMALL_RPS} rps on {SMALL_CONNS} connections (latency "
               f"from the intended send time).", "",
               "| sidecars | small alone p50 / p90 / p99 us | beside one download p50 / p90 / p99 us "
               "| that download Gbit/s | a download joins: p50 / p90 / p99 us "
               "| 4 parallel downloads Gbit/s | errors |",
               "|---|---|---|---|---|---|---|"]
        for p in self.a.peers:
            m = lambda k: self.m(p, k)  # noqa: E731
            out.append(
                f"| {p} | {fmt(m('alone_p50'))} / {fmt(m('alone_p90'))} / {fmt(m('alone_p99'))}"
                f"{self.r(p, 'alone_p99')} "
                f"| {fmt(m('bulk_p50'))} / {fmt(m('bulk_p90'))} / {fmt(m('bulk_p99'))}"
                f"{self.r(p, 'bulk_p99')} "
                f"| {fmt(m('bulk_gbps'), 2)}{self.r(p, 'bulk_gbps', 2)} "
                f"| {fmt(m('late_p50'))} / {fmt(m('late_p90'))} / {fmt(m('late_p99'))}"
                f"{self.r(p, 'late_p99')} "
                f"| {fmt(m('par_gbps'), 2)}{self.r(p, 'par_gbps', 2)} "
                f"| {sum(self.res.get((p, 'errs'), []))} |")
        return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="seam,seam-1sess,seam-1to1,nginx")
    ap.add_argument("--dur", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rate", default="1gbit")
    ap.add_argument("--loss", type=float, default=0.001)
    ap.add_argument("--out")
    ap.add_argument("--build-dir", default=os.environ.get("SEAM_BUILD_DIR"))
    ap.add_argument("--proxy-cpus", default="1")
    ap.add_argument("--loadgen-cpus", default="0")
    a = ap.parse_args()
    a.cmdline = "python3 bench/impaired.py" + "".join(
        f" {x}" for i, x in enumerate(sys.argv[1:])
        if x != "--out" and (i == 0 or sys.argv[i] != "--out"))
    a.peers = [p for p in a.only.split(",") if p]
    bad = [p for p in a.peers if p not in mesh.KNOWN]
    if bad:
        ap.error(f"unknown peer(s) {bad}; known: {', '.join(mesh.KNOWN)}")
    if os.geteuid() != 0:
        print("bench/impaired.py needs root (network namespaces, tc, iptables)", file=sys.stderr)
        return 2
    if a.build_dir is None:
        a.build_dir = mesh.find_build(("build-bench", "build"))
    a.bulk_secs = a.dur
    a.ratebench = mesh.build_ratebench()
    b = Impaired(a)
    clean = b.run()
    b.write_report()
    if not clean:
        print("network namespaces were left behind", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
