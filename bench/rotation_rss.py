#!/usr/bin/env python3
"""bench/rotation_rss.py — memory across certificate rotations (issue 5).

Two measurements, printed as lines for bench/ROTATION.md:

1. The in-process loop (tests/unit/sidecar/test_identity.c,
   test_rotation_loop): 10,000 validate + build + publish cycles through a
   running 2-worker inbound proxy while one connection stays open; prints
   RSS before/after and how many SSL_CTX snapshots were freed.
2. A live tunnel pair taking 10-second certificates from seam-control-plane
   (a rotation every ~5 s on each side) with --live-conns long-lived
   connections exchanging data, sampling each sidecar's
   seam_process_resident_memory_bytes every 10 s for --live-seconds.

  python3 bench/rotation_rss.py [--build build] [--live-seconds 300] [--live-conns 50]

Loopback only; ports picked at run time; every process is ended by PID.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "lib"))
sys.path.insert(0, os.path.join(SRC, "tests", "integration", "identity"))


def loop_bench(build):
    exe = os.path.join(build, "tests", "test_identity")
    env = dict(os.environ, SEAM_SOURCE_DIR=SRC)
    out = subprocess.run([exe], env=env, capture_output=True, text=True, timeout=600)
    m = re.search(r"^ROTATION-LOOP .*$", out.stdout, re.M)
    if out.returncode != 0 or not m:
        sys.exit(f"test_identity failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    print(m.group(0))


def live_bench(build, seconds, conns):
    os.environ["SEAM_BUILD_DIR"] = os.path.abspath(build)
    import seamtest  # noqa: E402
    seamtest.BUILD_DIR = os.path.abspath(build)
    import idkit  # noqa: E402

    tmp = tempfile.mkdtemp(prefix="seam-rotation-bench-")
    procs = seamtest.Procs()
    app = idkit.EchoApp()
    try:
        cp = idkit.ControlPlane(procs, tmp, ttl="10s")
        tin, tout = idkit.tunnel_pair(procs, cp, app.port)
        tr = idkit.Traffic(tout.port, long_lived=conns, new_conn_interval=0.2).start()
        t0 = time.monotonic()
        print("t_s  rss_in_kib  rss_out_kib  renewals_in  renewals_out")
        while True:
            el = time.monotonic() - t0
            row = [f"{el:4.0f}"]
            for t in (tin, tout):
                m = t.metrics()
                row.append(f"{idkit.metric(m, 'seam_process_resident_memory_bytes') / 1024:.0f}")
            for t in (tin, tout):
                ok = idkit.metric(t.metrics(), "seam_cert_renewals_total", 'result="success"')
                row.append(f"{ok:.0f}")
            print("  ".join(row), flush=True)
            if el >= seconds or tr.failures:
                break
            time.sleep(10)
        tr.stop()
        print(f"ROTATION-LIVE seconds={seconds} {tr.summary()}")
        if tr.failures:
            print("\n".join(tr.failures[:10]))
    finally:
        app.close()
        procs.stop_all()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--live-seconds", type=int, default=300)
    ap.add_argument("--live-conns", type=int, default=50)
    ap.add_argument("--skip-loop", action="store_true")
    a = ap.parse_args()
    if not a.skip_loop:
        loop_bench(a.build)
    if a.live_seconds > 0:
        live_bench(a.build, a.live_seconds, a.live_conns)


if __name__ == "__main__":
    main()
