"""SIGTERM drains (log/CLI contract): stop accepting, finish open connections
up to --drain-timeout, exit 0."""
import signal
import socket
import time

import pytest

from seamtest import wait_for
from tunnelkit import (LOOP, Echo, addr, client_ctx, closed_by_peer, echo_roundtrip, start_tunnel,
                       tls_connect)


def _refused(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


@pytest.mark.parametrize("direction", ["inbound", "outbound"])
def test_sigterm_drains_open_connection(pki, procs, direction):
    echo = Echo(procs)
    # The default drain timeout (25 s) is far longer than this test.
    drain = ["--drain-timeout", "25s"]
    in_t = start_tunnel(procs, "inbound", echo.target, pki, extra=drain)
    out_t = start_tunnel(procs, "outbound", addr(LOOP, in_t.port), pki, extra=drain)
    victim = in_t if direction == "inbound" else out_t

    s = out_t.connect()
    assert echo_roundtrip(s, b"before") == b"before"

    victim.proc.send_signal(signal.SIGTERM)
    # New connections are refused (listeners closed) ...
    wait_for(lambda: _refused(LOOP, victim.port), 5, what="listener closed after SIGTERM")
    assert victim.proc.alive(), "exited with a connection still open (no drain)"
    # ... while the open one keeps working, in both directions, for a while.
    for i in range(3):
        msg = b"during drain %d" % i
        assert echo_roundtrip(s, msg) == msg
    assert victim.proc.alive()

    # The last connection finishes: the sidecar exits 0 promptly.
    s.shutdown(socket.SHUT_WR)
    closed, _ = closed_by_peer(s, 5)
    s.close()
    assert closed
    t0 = time.monotonic()
    rc = victim.proc.p.wait(10)
    assert rc == 0, f"exit code {rc}\n{victim.log()}"
    assert time.monotonic() - t0 < 10
    want = len(b"before") + 3 * len(b"during drain 0")
    # (the app's stats file lags by up to 100 ms while bytes flow)
    wait_for(lambda: echo.stats()["bytes"] == want, 5, what=f"{want} bytes at the app")


def test_drain_timeout_closes_stragglers(pki, procs):
    """An idle connection that never finishes is closed at --drain-timeout; exit 0."""
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki, extra=["--drain-timeout", "2s"])
    s = tls_connect(client_ctx(pki, "client"), LOOP, in_t.port)
    assert echo_roundtrip(s, b"x") == b"x"
    t0 = time.monotonic()
    in_t.proc.send_signal(signal.SIGTERM)
    closed, _ = closed_by_peer(s, 8)
    s.close()
    assert closed, "open connection not closed at the drain timeout"
    elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed < 8, elapsed
    rc = in_t.proc.p.wait(10)
    assert rc == 0, f"exit code {rc}\n{in_t.log()}"


def test_sigterm_idle_exits_0(pki, procs):
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki)
    in_t.proc.send_signal(signal.SIGTERM)
    assert in_t.proc.p.wait(10) == 0
