"""Control-plane faults (issue 10) on seam's config stream client, driven
through `seam-sidecar config-watch` (the same cc_config_client, channel and
backoff `run` and `tunnel --control-plane` use) against a misbehaving gRPC
control plane (fake_cp.py):

- a bad snapshot is NACKed and the version in force stays (the NACK carries
  the old version, and so does the node hello after a reconnect);
- garbage, oversized (8 MiB > the 4 MiB cap) and aborted streams end the
  stream with an error, the client reconnects and takes the next good one;
- the control plane dies mid-stream: no hot loop while it is down (CPU time
  from /proc/PID/stat over 10 s stays < 0.5 s), the retry delays grow with
  jitter up to the cap, and when it is back the stream resumes;
- a slow control plane (first message after 3 s) is waited for, not abandoned.

The data path while the control plane is away (certificate still valid) is
covered by tests/integration/identity/test_cp_outage.py (tunnel
--control-plane)."""
import json
import os
import re
import signal
import tempfile
import time

import pytest

import fakegrpc
import seamtest
from relkit import cpu_seconds
from seamtest import wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
ID = "spiffe://cluster.local/ns/default/sa/web"


@pytest.fixture(scope="module")
def env(tmp_path_factory, pki):
    d = str(tmp_path_factory.mktemp("cpfaults"))
    crt, key = fakegrpc.server_cert(d, pki, days=30)
    gen = os.path.join(d, "gen")
    os.makedirs(gen)
    fakegrpc.protoc_python(gen, "seam/v1/config.proto")
    tok = os.path.join(d, "token")
    with open(tok, "w") as f:
        f.write("any-token\n")
    return {"dir": d, "pki": pki, "key": key, "crt": crt, "gen": gen, "token": tok,
            "py": fakegrpc.grpc_python()}


class FakeCP:
    def __init__(self, env, procs, port=None):
        self.env = env
        self.procs = procs
        self.port = port or seamtest.free_port()
        self.dir = tempfile.mkdtemp(dir=env["dir"])
        self.events = os.path.join(self.dir, "events.jsonl")
        self.config = os.path.join(self.dir, "config.json")
        self.set(version="v1")
        self.start()

    def start(self):
        self.proc = self.procs.start(
            [self.env["py"], os.path.join(HERE, "fake_cp.py"), "--port", self.port,
             "--cert", self.env["crt"], "--key", self.env["key"],
             "--ca-cert", f"{self.env['pki']}/ca.pem", "--events", self.events,
             "--config", self.config], env={"PYTHONPATH": self.env["gen"]})
        self.proc.wait_log("listening", timeout=20)
        seamtest.wait_port("127.0.0.1", self.port)

    def set(self, **cfg):
        tmp = self.config + ".tmp"
        with open(tmp, "w") as f:
            json.dump(cfg, f)
        os.replace(tmp, self.config)

    def read_events(self, kind=None):
        if not os.path.exists(self.events):
            return []
        with open(self.events) as f:
            evs = [json.loads(line) for line in f if line.strip()]
        return [e for e in evs if kind is None or e["type"] == kind]


def watch(env, procs, port):
    return procs.start([
        seamtest.binary("seam-sidecar"), "config-watch", "--control-plane", f"localhost:{port}",
        "--control-plane-trust", f"{env['pki']}/ca.pem", "--token-file", env["token"],
        "--spiffe-id", ID, "--backoff-initial", "200ms", "--backoff-max", "2s"])


def retries(log):
    return [int(x) for x in re.findall(r"^RETRY ms=(\d+)", log, re.M)]


def test_config_stream_faults(env, procs):
    cp = FakeCP(env, procs)
    w = watch(env, procs, cp.port)
    w.wait_log("ACK version=v1", timeout=15)

    # Bad config: NACKed, and the client reports v1 as still in force.
    cp.set(version="v2", bad=True)
    w.wait_log("NACK version=", timeout=10)
    wait_for(lambda: cp.read_events("nack"), 10, what="server sees the NACK")
    assert cp.read_events("nack")[0]["version"] == "v1"

    # Garbage, oversized and aborted streams: each ends the stream; the next
    # good snapshot is taken after a reconnect.
    for i, fault in enumerate(({"garbage": True}, {"huge": 8}, {"abort": True})):
        ends = w.log().count("STREAM_END") + w.log().count("NACK")
        cp.set(version=f"bad{i}", **fault)
        wait_for(lambda: w.log().count("STREAM_END") + w.log().count("NACK") > ends, 15,
                 what=f"stream error on {fault}")
        assert w.alive(), w.log()
        good = f"v{3 + i}"
        cp.set(version=good)
        w.wait_log(f"ACK version={good}", timeout=15)
    assert "SNAPSHOT version=bad" not in w.log()

    # Slow: a reconnect whose first message comes 3 s late is waited for.
    cp.proc.stop(signal.SIGKILL)
    cp.set(version="v6", delay=3)
    cp.start()
    w.wait_log("ACK version=v6", timeout=25)
    nodes = cp.read_events("node")
    assert nodes[-1]["version"] == "v5", nodes[-3:]  # the version in force survived

    # The control plane dies mid-stream and stays away: no hot loop.
    cp.set(version="v7", die=True)
    wait_for(lambda: not cp.proc.alive(), 10, what="fake control plane exit")
    n0 = len(retries(w.log()))
    time.sleep(1)  # let the first fast retries pass
    c0 = cpu_seconds(w.pid)
    t0 = time.monotonic()
    wait_for(lambda: time.monotonic() - t0 >= 10, 12, interval=0.5, what="10 s outage")
    used = cpu_seconds(w.pid) - c0
    assert used < 0.5, f"{used:.2f} s CPU in 10 s with the control plane down (hot loop?)"
    delays = retries(w.log())[n0:]
    assert 3 <= len(delays) <= 60, delays
    assert max(delays) <= 2000 * 1.5, delays        # capped (with jitter)
    assert len(set(delays)) > 1, delays             # jittered / growing, not constant
    assert w.alive()

    # Back: the stream resumes and takes the new config.
    cp.set(version="v8")
    cp.start()
    w.wait_log("ACK version=v8", timeout=20)
    log = w.log()
    assert "Sanitizer" not in log and "runtime error" not in log, log
    assert w.stop() == 0
