"""POST /drain and SIGTERM drain through the admin endpoint; POST /quitquitquit."""
import signal
import socket
import time

from adminkit import start_with_admin, wait_for
from tunnelkit import LOOP, Echo, addr, closed_by_peer, echo_roundtrip


def _refused(port):
    try:
        with socket.create_connection((LOOP, port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def _drain_test(pki, procs, trigger):
    echo = Echo(procs)
    in_t, in_a = start_with_admin(procs, "inbound", echo.target, pki)
    out_t, a = start_with_admin(procs, "outbound", addr(LOOP, in_t.port), pki,
                                extra=["--drain-timeout", "20s"])
    s = out_t.connect()
    assert echo_roundtrip(s, b"before") == b"before"
    t0 = time.monotonic()
    trigger(out_t, a)
    wait_for(lambda: _refused(out_t.port), 5, what="proxy listener closed on drain")
    assert out_t.proc.alive(), "exited with a connection still open"
    # The admin endpoint stays up while draining and reports not ready, so
    # Kubernetes takes the pod out of rotation; liveness is unaffected.
    assert a.get("/healthz/ready")[0] == 503
    assert a.get("/healthz/live")[0] == 200
    for i in range(3):
        assert echo_roundtrip(s, b"during %d" % i) == b"during %d" % i
    s.shutdown(socket.SHUT_WR)
    closed, _ = closed_by_peer(s, 5)
    s.close()
    assert closed
    rc = out_t.proc.p.wait(15)
    assert rc == 0, f"exit {rc}\n{out_t.log()}"
    assert time.monotonic() - t0 < 15, "did not exit before the drain timeout"


def test_post_drain_from_loopback(pki, procs):
    def trigger(t, a):
        st, _, body = a.request("POST", "/drain")
        assert st == 200, body
    _drain_test(pki, procs, trigger)


def test_sigterm_drain_with_admin(pki, procs):
    def trigger(t, a):
        t.proc.send_signal(signal.SIGTERM)
    _drain_test(pki, procs, trigger)


def test_quitquitquit_exits_promptly(pki, procs):
    echo = Echo(procs)
    in_t, a = start_with_admin(procs, "inbound", echo.target, pki)
    st, _, body = a.request("POST", "/quitquitquit")
    assert st == 200, body
    t0 = time.monotonic()
    rc = in_t.proc.p.wait(5)
    assert time.monotonic() - t0 < 5
    assert rc == 0, in_t.log()
