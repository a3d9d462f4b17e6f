#!/usr/bin/env python3
"""Control-plane fan-out scale check (issue 4): N concurrent StreamConfig
streams from one process (grpc.aio), a mesh change, time until every stream
has the new version, and the server's RSS. Not a timed test; results go to
bench/CP_SCALE.md.

usage: python3 bench/cp_scale.py [--streams 1000] [--channels 8] [--build-dir build]
"""
import argparse
import asyncio
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "integration", "control_plane"))
sys.path.insert(0, os.path.join(SRC, "tests", "lib"))

import grpc  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def gen_pb(tmp):
    proto = os.path.join(SRC, "proto")
    subprocess.run(["protoc", f"-I{proto}", f"--python_out={tmp}", "seam/v1/config.proto"],
                   check=True, cwd=proto)
    sys.path.insert(0, tmp)
    from seam.v1 import config_pb2
    return config_pb2


MESH = """trust_domain: cluster.local
cert_ttl: {ttl}
services:
{services}inbound:
  - port: 8080
    mode: STRICT
    allow: [spiffe://cluster.local/ns/default/*]
"""


def mesh_text(ttl, num_services):
    svcs = "".join(
        f"  - name: svc{i}.default.svc.cluster.local\n    port: 8080\n    endpoints:\n"
        f"      - address: 10.1.{i // 250}.{i % 250 + 1}\n        port: 8080\n"
        f"        spiffe_id: spiffe://cluster.local/ns/default/sa/svc{i}\n"
        for i in range(num_services))
    return MESH.format(ttl=ttl, services=svcs)


async def run(args):
    tmp = tempfile.mkdtemp(prefix="seam-cp-scale-")
    cfg = gen_pb(tmp)
    mesh = os.path.join(tmp, "mesh.yaml")
    with open(mesh, "w") as f:
        f.write(mesh_text("1h", args.services))
    port = free_port()
    root = os.path.join(tmp, "root.pem")
    binary = os.path.join(args.build_dir, "control-plane", "seam-control-plane")
    log = open(os.path.join(tmp, "cp.log"), "wb")
    env = dict(os.environ)
    proc = subprocess.Popen([binary, "--listen", f"127.0.0.1:{port}", "--mesh", mesh,
                             "--root-out", root, "--log-level", "warn"], stdout=log, stderr=log, env=env)
    try:
        for _ in range(200):
            if os.path.exists(root):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    pass
            await asyncio.sleep(0.05)
        rss_idle = rss_kib(proc.pid)
        creds = grpc.ssl_channel_credentials(open(root, "rb").read())
        chans = [grpc.aio.secure_channel(f"localhost:{port}", creds,
                                         options=[("grpc.use_local_subchannel_pool", 1),
                                                  ("grpc.max_receive_message_length", 64 << 20)])
                 for _ in range(args.channels)]
        want = {"v": None}
        got_first = asyncio.Event()
        first_count = [0]
        snap_bytes = [0]
        second_at = []
        t_change = [0.0]

        async def one(i):
            ch = chans[i % len(chans)]
            call = ch.stream_stream("/seam.v1.ConfigDiscovery/StreamConfig",
                                    request_serializer=cfg.ConfigRequest.SerializeToString,
                                    response_deserializer=cfg.ConfigResponse.FromString)
            q = asyncio.Queue()
            await q.put(cfg.ConfigRequest(node=cfg.Node(id=f"sim-{i}")))

            async def reqs():
                while True:
                    r = await q.get()
                    if r is None:
                        return
                    yield r
            stream = call(reqs())
            n = 0
            async for resp in stream:
                n += 1
                await q.put(cfg.ConfigRequest(version_info=resp.version_info,
                                              response_nonce=resp.nonce))
                if n == 1:
                    snap_bytes[0] = resp.ByteSize()
                    first_count[0] += 1
                    if first_count[0] == args.streams:
                        got_first.set()
                elif want["v"] is not None and resp.version_info.startswith(want["v"]):
                    second_at.append(time.monotonic() - t_change[0])
                    break
            await q.put(None)
            stream.cancel()

        t0 = time.monotonic()
        tasks = [asyncio.create_task(one(i)) for i in range(args.streams)]
        await asyncio.wait_for(got_first.wait(), timeout=120)
        t_open = time.monotonic() - t0
        await asyncio.sleep(1.5)  # let ACKs settle
        rss_streams = rss_kib(proc.pid)
        # Change the mesh; the control plane polls every second.
        with open(mesh + ".new", "w") as f:
            f.write(mesh_text("30m", args.services))
        t_change[0] = time.monotonic()
        os.replace(mesh + ".new", mesh)
        # Versions are "<sequence>-<digest>": the change is sequence 2.
        want["v"] = "2-"
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
        rss_after = rss_kib(proc.pid)
        second_at.sort()
        n = len(second_at)
        print(f"streams={args.streams} channels={args.channels} services={args.services}")
        print(f"snapshot_bytes={snap_bytes[0]} open_all_s={t_open:.2f}")
        print(f"push_all_s={second_at[-1]:.3f} (includes up to 1 s mesh poll) "
              f"p50={second_at[n // 2]:.3f} first={second_at[0]:.3f} received={n}")
        print(f"server_rss_kib idle={rss_idle} with_streams={rss_streams} after_push={rss_after}")
        print(f"client_maxrss_kib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")
        for ch in chans:
            await ch.close()
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--services", type=int, default=200)
    ap.add_argument("--build-dir", default=os.path.join(SRC, "build"))
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
