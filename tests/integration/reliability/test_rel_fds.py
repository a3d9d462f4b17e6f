"""File descriptors exhausted (issue 10): the sidecar's fd limit is lowered
(prlimit on its PID) so that more clients connect than it has fds for. It
must not crash; the connections it cannot serve are counted
(seam_accept_errors_total) and logged (limits.refused reason=fd_limit: a
connection accepted within 32 fds of the limit is closed at once, so open
connections keep fds for their upstream side; proxy.accept_failed for a
failed accept); once the clients go away and fds are free, accept resumes
and a good connection works."""
import socket
import subprocess

import pytest

import seamtest
from relkit import (LOOP, Echo, addr, admin_metric, client_ctx, echo_roundtrip, events, open_fds,
                    start_tunnel, tls_connect)
from seamtest import free_port, wait_for

HEADROOM = 32  # SC_LIMITS_FD_HEADROOM (sc/limits.h)


def _good_connection(pki, port):
    try:
        s = tls_connect(client_ctx(pki, "client"), LOOP, port, timeout=3)
    except OSError:
        return False
    try:
        return echo_roundtrip(s, b"fds are back", 3) == b"fds are back"
    except OSError:
        return False
    finally:
        s.close()


@pytest.mark.skipif(not seamtest.which("prlimit"), reason="prlimit (util-linux) not installed")
def test_fd_exhaustion_no_crash_and_accept_resumes(pki, procs):
    echo = Echo(procs)
    admin = free_port()
    t = start_tunnel(procs, "inbound", echo.target, pki,
                     extra=["--admin", addr(LOOP, admin), "--handshake-timeout", "60s"])
    assert _good_connection(pki, t.port)
    base = open_fds(t.proc.pid)
    limit = base + HEADROOM + 24
    subprocess.run(["prlimit", f"--pid={t.proc.pid}", f"--nofile={limit}:{limit}"], check=True)

    # Idle clients that never start TLS: each holds one fd in the sidecar
    # until the handshake timeout (60 s, longer than this test).
    clients = []
    try:
        for _ in range(limit + 40):
            c = socket.socket()
            c.settimeout(5)
            c.connect((LOOP, t.port))  # the kernel completes it from the backlog
            clients.append(c)
        try:
            wait_for(lambda: events(t.proc, "proxy.accept_failed") or
                     [e for e in events(t.proc, "limits.refused") if e.get("reason") == "fd_limit"],
                     10, what="the fd shortage in the log")
        except TimeoutError:
            raise AssertionError(f"no accept failure logged; fds={open_fds(t.proc.pid)} "
                                 f"limit={limit}\n{t.log()}")
        assert t.proc.alive(), t.log()
        assert open_fds(t.proc.pid) <= limit
    finally:
        for c in clients:
            c.close()

    # The sidecar sees the clients' EOFs, frees their fds, and accepts again.
    wait_for(lambda: _good_connection(pki, t.port), 15, interval=0.2,
             what="a good connection once fds are free")
    assert admin_metric(admin, "seam_accept_errors_total") >= 1
    assert t.proc.alive()
