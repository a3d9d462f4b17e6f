"""--loopback-cc: the congestion control of seam's sockets whose other end is
on this host (bench/NOTES.md §10: BBR's pacing timers on loopback hops).

A tunnel pair on 127.0.0.1 holds one connection client -> outbound -> inbound
-> echo app; `ss -tinp` then shows each of the pair's four sockets (accepted
from the client, to the inbound, accepted from the outbound, to the app) and
its congestion control. The client's and the app's sockets are not seam's
and keep the system default. (The non-loopback side — a pod-to-pod hop keeps
the system default — is in tests/e2e/mesh/test_loopback_cc.py.)"""
import os
import socket
import subprocess

import pytest

import seamtest
from seamtest import tcp_cc_default, tcp_sockets, wait_for
from tunnelkit import LOOP, Echo, addr, recv_exact, start_tunnel

SYSTEM_CC = tcp_cc_default()


def held_pair(procs, pki, extra=(), env=None):
    """The pair with one connection through it; returns (pair, client socket,
    {pid: [seam's sockets of that process]}) once all four are established."""
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki, workers=1, extra=extra, env=env)
    out_t = start_tunnel(procs, "outbound", addr(LOOP, in_t.port), pki, workers=1,
                         extra=extra, env=env)
    c = socket.create_connection((LOOP, out_t.port), timeout=10)
    c.sendall(b"ping\n")
    assert recv_exact(c, 5) == b"ping\n"
    pids = {in_t.proc.p.pid, out_t.proc.p.pid}
    ports = {str(in_t.port), str(out_t.port), str(echo.port)}

    def ours():
        socks = [s for s in tcp_sockets() if s["pid"] in pids and
                 (s["local"].rsplit(":", 1)[1] in ports or s["peer"].rsplit(":", 1)[1] in ports)]
        return socks if len(socks) == 4 else None

    socks = wait_for(ours, 10, what="the pair's four established sockets")
    # The client's socket by its whole address pair: another test's connection
    # may use the same ephemeral port towards another destination.
    client = (addr(LOOP, c.getsockname()[1]), addr(LOOP, out_t.port))
    apps = [s for s in tcp_sockets()
            if (s["local"], s["peer"]) == client or
            (s["local"].endswith(":%d" % echo.port) and s["pid"] not in pids)]
    return (in_t, out_t), c, socks, apps


def test_an_explicit_name_goes_on_every_loopback_socket_of_the_pair(pki, procs):
    (in_t, out_t), c, socks, apps = held_pair(procs, pki, extra=["--loopback-cc", "reno"])
    with c:
        assert sorted(s["cc"] for s in socks) == ["reno"] * 4, socks
        # Both kinds of seam socket: accepted (inherited from the listener)
        # and connected (set after connect).
        assert {s["pid"] for s in socks} == {in_t.proc.p.pid, out_t.proc.p.pid}
        # The client's and the app's own sockets are theirs.
        assert len(apps) == 2 and all(s["cc"] == SYSTEM_CC for s in apps), apps
        c.sendall(b"still\n")
        assert recv_exact(c, 6) == b"still\n"
    for t in (in_t, out_t):
        assert "tcp.loopback_cc cc=reno system=%s reason=flag" % SYSTEM_CC in t.proc.log()


def test_off_leaves_the_system_default(pki, procs):
    if SYSTEM_CC == "reno":
        pytest.skip("the system default is reno: off and reno look the same")
    (in_t, out_t), c, socks, _ = held_pair(procs, pki, extra=["--loopback-cc", "off"])
    with c:
        assert sorted(s["cc"] for s in socks) == [SYSTEM_CC] * 4, socks
    assert "tcp.loopback_cc cc=- system=%s reason=off" % SYSTEM_CC in in_t.proc.log()


def test_auto_replaces_only_a_pacing_default(pki, procs):
    """The default (auto): reno where the system default is BBR, which paces
    every flow; any other default stays. (Both outcomes are pinned by the
    unit test; here the one this machine has, end to end.)"""
    paces = SYSTEM_CC.startswith("bbr")
    want = "reno" if paces else SYSTEM_CC
    (in_t, _), c, socks, _ = held_pair(procs, pki, env={"SEAM_LOG_LEVEL": "info"})
    with c:
        assert sorted(s["cc"] for s in socks) == [want] * 4, socks
    line = "tcp.loopback_cc cc=%s system=%s reason=%s" % (
        "reno" if paces else "-", SYSTEM_CC,
        "system_default_paces" if paces else "system_default_does_not_pace")
    assert line in in_t.proc.log(), in_t.proc.log()


def test_env_sets_it_too(pki, procs):
    (in_t, _), c, socks, _ = held_pair(procs, pki, env={"SEAM_LOOPBACK_CC": "reno"})
    with c:
        assert sorted(s["cc"] for s in socks) == ["reno"] * 4, socks


@pytest.mark.parametrize("bad,why", [
    ("x y", "not auto, off or a congestion control name"),
    ("abcdefghijklmnop", "not auto, off or a congestion control name"),
    ("no_such_cc", "this kernel has no such congestion control"),
])
def test_bad_values_are_refused_before_anything_starts(pki, bad, why):
    port = seamtest.free_port()
    r = subprocess.run([seamtest.binary("seam-sidecar"), "tunnel", "inbound", "--listen",
                        addr(LOOP, port), "--target", "127.0.0.1:1",
                        "--cert", os.path.join(pki, "server.pem"),
                        "--key", os.path.join(pki, "server.key"),
                        "--trust", os.path.join(pki, "ca.pem"),
                        "--allow", "spiffe://cluster.local/ns/default/*",
                        "--loopback-cc", bad],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert '--loopback-cc "%s": %s' % (bad, why) in r.stderr, r.stderr
    assert not seamtest.port_open(LOOP, port)
