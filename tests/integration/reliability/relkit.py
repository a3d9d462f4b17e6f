"""Helpers for the reliability tests (issue 10): process sampling from /proc,
admin endpoint readers, and the tunnel helpers of tests/integration/tunnel/
(tunnelkit: tunnel pairs, the echo app, TLS clients) re-exported.

Everything listens on loopback (or inside a network namespace a test creates
and removes) with ports picked at run time; processes are started through the
`procs` fixture and ended by PID."""
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tunnel"))

import seamtest  # noqa: E402
import tunnelkit  # noqa: E402,F401
from tunnelkit import (LOOP, SERVER_ID, CLIENT_ID, Echo, addr, client_ctx, closed_by_peer,  # noqa: E402,F401
                       echo_roundtrip, events, recv_exact, start_tunnel, tls_connect)

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid):
    """utime + stime of pid (all threads), in seconds, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # fields after the comm: state is [0]; utime is field 14 -> rest[11], stime rest[12]
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def rss_bytes(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def http(port, path, method="GET", host=LOOP, timeout=5):
    """(status, body) of an HTTP request to the admin server."""
    req = urllib.request.Request(f"http://{addr(host, port)}{path}", method=method,
                                 data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def metric(text, name, labels=None):
    """Sum of the samples of metric `name` whose labels include `labels`."""
    total = 0.0
    found = False
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$", line)
        if not m or m.group(1) != name:
            continue
        if labels:
            lab = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            if any(lab.get(k) != v for k, v in labels.items()):
                continue
        total += float(m.group(3))
        found = True
    return total if found else None


def admin_metric(port, name, labels=None):
    status, body = http(port, "/metrics")
    assert status == 200, body
    return metric(body, name, labels)


def try_roundtrip(port, payload=b"ping", timeout=5.0):
    """True if one new connection through a tunnel echoes payload back."""
    try:
        with socket.create_connection((LOOP, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return echo_roundtrip(s, payload, timeout) == payload
    except (OSError, TimeoutError, ConnectionError):
        return False


def pair(procs, pki, in_extra=(), out_extra=(), echo=None, env=None):
    """echo app <- inbound tunnel <- outbound tunnel; returns (echo, in_t, out_t)."""
    echo = echo or Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki, extra=list(in_extra), env=env)
    out_t = start_tunnel(procs, "outbound", addr(LOOP, in_t.port), pki, extra=list(out_extra),
                         env=env)
    return echo, in_t, out_t


def small_quarantine_env():
    """In ASan builds freed memory sits in a 256 MiB quarantine and shows up as
    RSS; tests that bound RSS shrink it (no effect on other builds)."""
    opts = os.environ.get("ASAN_OPTIONS", "")
    return {"ASAN_OPTIONS": (opts + ":" if opts else "") + "quarantine_size_mb=4"}


def sample_max(fn, secs, interval=0.2):
    """Calls fn every interval for secs seconds; returns the largest value seen."""
    best = fn()
    end = time.monotonic() + secs
    while time.monotonic() < end:
        time.sleep(interval)
        best = max(best, fn())
    return best


def free_port_str(host=LOOP):
    return addr(host, seamtest.free_port(host))


# A mesh with one service and one inbound port, for tests that run
# `seam-sidecar run`.
MESH = """trust_domain: cluster.local
services:
  - name: web.default.svc.cluster.local
    port: 8080
    endpoints:
      - address: 127.0.0.1
        port: 8080
        spiffe_id: spiffe://cluster.local/ns/default/sa/in
inbound:
  - port: 8080
    mode: STRICT
    allow:
      - spiffe://cluster.local/ns/default/*
"""


def use_mesh_with_a_port(cp):
    """Gives an idkit.ControlPlane MESH and restarts it (same port, same CA)."""
    with open(cp.mesh + ".tmp", "w") as f:
        f.write(MESH)
    os.replace(cp.mesh + ".tmp", cp.mesh)
    cp.proc.stop()
    cp.start()
