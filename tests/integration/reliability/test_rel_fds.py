"""File descriptors exhausted (issue 10): the sidecar's fd limit is lowered
(prlimit on its PID) so that more clients connect than it has fds for. It
must not crash; accept() failures are counted (seam_accept_errors_total) and
logged (proxy.accept_failed); once the clients go away and fds are free,
accept resumes and a good connection works."""
import socket
import subprocess

import pytest

import seamtest
from relkit import (LOOP, Echo, addr, admin_metric, client_ctx, echo_roundtrip, events, open_fds,
                    start_tunnel, tls_connect)
from seamtest import free_port, wait_for


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
    limit = base + 16
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
            wait_for(lambda: events(t.proc, "proxy.accept_failed"), 10,
                     what="proxy.accept_failed in the log")
        except TimeoutError:
            raise AssertionError(f"no accept failure logged; fds={open_fds(t.proc.pid)} "
                                 f"limit={limit}\n{t.log()}")
        ev = events(t.proc, "proxy.accept_failed")[0]
        assert "too many open files" in ev["line"].lower() or "emfile" in ev["line"].lower(), ev
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
