"""seam-mux across a path with a round trip (root only).

Two network namespaces joined by tests/tools/delayline.c: a tun device in
each, every IP packet passed to the other side DELAY_US later, one by one
(this kernel has no netem). The inbound sidecar runs in namespace B; a raw
seam-mux client (tests/integration/tunnel/test_mux.py's RawMux) connects from
namespace A, so the session's TCP connection has a round trip of 2 DELAY_US
while both proxies' CPU time stays a fraction of it - a cross-zone or
cross-region hop. There a stream window that is the bulk limit grows past
1 MiB, and a session keeps more than 16 KiB unsent in the kernel (docs/MUX.md
"Flow control per stream"); on loopback neither happens
(test_mux.py::test_window_grows_when_the_window_limits_the_stream).

Addresses exist only in the namespaces created here (10.89.0.1, 10.89.0.2 and
each one's loopback); both are deleted afterwards, and every process started
is ended by its PID.
"""
import contextlib
import ctypes
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "integration", "tunnel"))
import seamtest  # noqa: E402
import test_mux as tm  # noqa: E402  (RawMux, _Windowed, _app, _draining_app)
from delaypath import DelayPath  # noqa: E402
from seamtest import wait_for  # noqa: E402
from test_admin import _http, _metric  # noqa: E402
from tunnelkit import ALLOW_DEFAULT_NS, LOOP, addr, events, start_tunnel, tunnel_args  # noqa: E402

BUILD_DIR = os.environ.get("SEAM_BUILD_DIR") or os.path.join(HERE, "..", "..", "..", "build")
DELAYLINE = os.path.join(BUILD_DIR, "tests", "seam-test-delayline")
DELAY_US = 10000  # each way: a 20 ms round trip
A_ADDR, B_ADDR = "10.89.0.1", "10.89.0.2"
IN_PORT, ADMIN_PORT = 15443, 15444  # in namespace B, which holds nothing else

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, tun devices"),
    pytest.mark.skipif(not shutil.which("ip"), reason="needs ip (iproute2)"),
    pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="needs /dev/net/tun"),
]

_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


def _setns(fd):
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


@contextlib.contextmanager
def netns(name):
    """This thread in network namespace |name| meanwhile: sockets it makes
    there stay there (Python 3.11 has no os.setns)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(fd)
        finally:
            os.close(fd)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


# Autouse and defined before sidecars_end_cleanly, so it is set up before the
# procs fixture and torn down after it: the sidecar ends while its network is
# still there.
@pytest.fixture(autouse=True)
def path():
    """(namespace A, namespace B) joined by the delay line."""
    if not os.path.exists(DELAYLINE):
        pytest.skip(f"{DELAYLINE} is not built")
    try:
        p = DelayPath(DELAYLINE, "seam-path", A_ADDR, B_ADDR)
    except subprocess.CalledProcessError as e:
        if e.first_namespace:
            pytest.skip(f"cannot create a network namespace: {e.stderr.decode().strip()}")
        raise
    try:
        p.connect(DELAY_US)
        yield p.a, p.b
    finally:
        p.close()


# `ip netns exec` execs the sidecar: same PID, so SIGTERM and the exit code are its own.
sidecars_end_cleanly = seamtest.sidecars_end_cleanly_fixture(wrapped=True)


def _inbound(procs, pki, ns, app, log_level="info"):
    """The inbound sidecar in namespace |ns| in front of |app| (a listener made there)."""
    args = ["ip", "netns", "exec", ns] + tunnel_args(
        "inbound", addr(B_ADDR, IN_PORT), addr(LOOP, app.getsockname()[1]), pki, "server",
        allow=[ALLOW_DEFAULT_NS],
        extra=["--admin", addr(LOOP, ADMIN_PORT), "--drain-timeout", "5s",
               "--log-level", log_level])
    return start_tunnel(procs, "inbound", None, pki, args=args, host=B_ADDR, port=IN_PORT)


def test_window_grows_past_1mib_when_the_round_trip_limits_the_stream(pki, procs, path):
    """A sender that always has its whole window out, across a 20 ms round
    trip, to an app that reads at once: the window is what limits the
    stream, and the round trip (the session's TCP RTT), not the proxies, is
    what it waits for, so the window grows past the 1 MiB that is the most it
    grows on loopback - to at most 8 MiB - and every byte arrives."""
    a, b = path
    with netns(b):
        app, st = tm._draining_app()
    m = None
    try:
        _inbound(procs, pki, b, app)
        with netns(a):
            m = tm.RawMux(pki, IN_PORT, alpn="seam-mux/2", host=B_ADDR)
        m.send(1, 1)  # OPEN 1
        w = tm._Windowed(m, 1, blocked=True)

        def window():
            """The window, once every byte sent was given back: the credit
            left then (less what the receiver has not acknowledged yet, under
            the 64 KiB it gives back at a time)."""
            last, quiet = w.granted, 0
            while quiet < 4:  # 200 ms without a WINDOW: ten round trips
                time.sleep(0.05)
                m.poll(w._take)
                quiet = quiet + 1 if w.granted == last else 0
                last = w.granted
            return w.granted - w.sent

        # 8 MiB at a time, the window always out, then the window measured.
        # Windows are multiples of 256 KiB, so more than 1 MiB of credit back
        # means at least 1.25 MiB. Bounded: 30 s, 512 MiB.
        deadline, room = time.monotonic() + 30, 0
        while room <= (1 << 20) and time.monotonic() < deadline and w.sent < (512 << 20):
            w.send(8 << 20)
            room = window()
        assert (1 << 20) < room <= (8 << 20), (room, w.sent)
        m.send(0, 1, flags=1)  # FIN
        wait_for(lambda: st["n"] == w.sent, 60, what="every byte at the app")
        assert st["hash"].digest() == hashlib.sha256(b"w" * w.sent).digest()
        with netns(b):
            status, text = _http(ADMIN_PORT, "GET", "/metrics")
        assert status == 200
        # 256 KiB to past 1 MiB: at least four steps of 256 KiB.
        assert _metric(text, "seam_mux_window_grows_total", direction="inbound") >= 4
    finally:
        if m is not None:
            m.s.close()
        app.close()


def test_session_keeps_more_unsent_across_a_round_trip(pki, procs, path):
    """A session that sends a download across the 20 ms round trip raises the
    bytes its socket keeps unsent in the kernel (TCP_NOTSENT_LOWAT) from 16 KiB
    to half of what it sends per round trip: 16 KiB would last tens of
    microseconds at the rate the kernel paces them out, and the socket would
    run dry between two turns of the sidecar's loop. Every byte arrives."""
    a, b = path
    total = 32 << 20

    def serve(c, _):
        with c:
            c.sendall(b"d" * total)

    with netns(b):
        app = tm._app(serve)
    m = None
    try:
        in_t = _inbound(procs, pki, b, app, log_level="debug")
        with netns(a):
            m = tm.RawMux(pki, IN_PORT, alpn="seam-mux/2", host=B_ADDR)
        m.send(1, 1)  # OPEN 1
        m.send(3, 1, struct.pack(">I", (8 << 20) - (256 << 10)))  # an 8 MiB window
        got = {"n": 0, "fin": False, "hash": hashlib.sha256()}
        acked = 0

        def take(t, f, sid, p):
            if t == 0 and sid == 1:
                got["n"] += len(p)
                got["hash"].update(p)
                got["fin"] = bool(f & 1)
            return got["fin"] or got["n"] - acked >= (1 << 20)

        deadline = time.monotonic() + 60
        while not got["fin"]:
            assert time.monotonic() < deadline, got["n"]
            m.frames(take, timeout=20)
            if got["n"] > acked:
                m.send(3, 1, struct.pack(">I", got["n"] - acked))  # credit back
                acked = got["n"]
        assert got["n"] == total
        assert got["hash"].digest() == hashlib.sha256(b"d" * total).digest()
        raised = [int(e["bytes"]) for e in events(in_t.proc, "mux.notsent_lowat")]
        assert raised and max(raised) > (32 << 10), raised
        assert events(in_t.proc, "mux.notsent_lowat_failed") == []  # and the kernel took it
    finally:
        if m is not None:
            m.s.close()
        app.close()
