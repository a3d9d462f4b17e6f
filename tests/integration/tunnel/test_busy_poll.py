"""--busy-poll-us: a worker that forwarded a request polls (spends CPU)
instead of sleeping while the answer is due, for at most that long, and
sleeps again as soon as every answer arrived or the window closed; a worker
whose recent answers mostly came after the window does not poll.

CPU time is read from /proc/PID/schedstat (nanoseconds on a CPU, all the
process's threads), so the checks do not depend on the 10 ms tick."""
import os
import socket
import struct
import subprocess
import threading
import time

import pytest

import seamtest
from seamtest import wait_for
from tunnelkit import LOOP, addr, recv_exact, start_tunnel

WINDOW_US = 100_000  # the busy-poll window under test: 100 ms (the flag's maximum)


class DelayServer(seamtest.LoopServer):
    """Answers each 8-byte request "wNNNNNNN" (a delay in ms) with "ok" after
    that delay; "x" as the first byte closes the connection."""

    def __init__(self):
        self._listen(64)

    def _serve(self, c):
        with c:
            c.settimeout(30)
            try:
                while True:
                    req = b""
                    while len(req) < 8:
                        d = c.recv(8 - len(req))
                        if not d or d[:1] == b"x":
                            return
                        req += d
                    time.sleep(int(req[1:]) / 1000)
                    c.sendall(b"ok")
            except OSError:
                return

    @property
    def target(self):
        return addr(LOOP, self.port)


def cpu_ns(proc):
    """Nanoseconds the process's threads spent on a CPU so far."""
    total = 0
    for tid in os.listdir(f"/proc/{proc.p.pid}/task"):
        try:
            with open(f"/proc/{proc.p.pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that just ended
    return total


def cpu_ms_during(procs_, seconds):
    """CPU ms each process used while we sleep |seconds|."""
    before = [cpu_ns(p) for p in procs_]
    time.sleep(seconds)
    return [(cpu_ns(p) - b) / 1e6 for p, b in zip(procs_, before)]


def request(delay_ms):
    return b"w%07d" % delay_ms


def start_pair(procs, pki, target, busy_poll_us, out_extra=()):
    extra = ["--busy-poll-us", str(busy_poll_us)] if busy_poll_us else []
    in_t = start_tunnel(procs, "inbound", target, pki, workers=1, extra=extra)
    out_t = start_tunnel(procs, "outbound", addr(LOOP, in_t.port), pki, workers=1,
                         extra=extra + list(out_extra))
    return in_t, out_t


def settled(pair, limit_ms=25, seconds=0.3, timeout=10):
    """Waits until the pair uses under |limit_ms| of CPU per |seconds| (the
    start-up and the last exchange are over); returns that reading."""
    procs_ = [t.proc for t in pair]
    return wait_for(lambda: (lambda ms: ms if max(ms) < limit_ms else None)(
        cpu_ms_during(procs_, seconds)), timeout, what=f"the pair idle (<{limit_ms} ms CPU)")


@pytest.mark.parametrize("out_extra", [[], ["--mux"]], ids=["1to1", "mux"])
def test_busy_poll_spends_the_wait_for_an_answer_and_no_more(pki, procs, out_extra):
    """With --mux the streams do the bookkeeping a 1:1 connection does."""
    backend = DelayServer()
    procs.items.append(backend)
    pair = start_pair(procs, pki, backend.target, WINDOW_US, out_extra)
    in_t, out_t = pair
    s = out_t.connect()
    s.sendall(request(0))  # the TLS connection and the backend connection exist
    assert recv_exact(s, 2) == b"ok"
    settled(pair)

    # A request whose answer takes 1.2 s: for the first 100 ms both workers
    # poll (each forwarded the request and waits for the answer) ...
    s.sendall(request(1200))
    spent = cpu_ms_during([in_t.proc, out_t.proc], 0.1)
    assert min(spent) >= 10, f"no polling while the answer was due: {spent} ms CPU in 100 ms"
    # ... then the window is over and they sleep although the answer is still due.
    time.sleep(0.1)
    late = cpu_ms_during([in_t.proc, out_t.proc], 0.4)
    assert max(late) < 40, f"still polling after the {WINDOW_US} us window: {late} ms in 400 ms"
    assert recv_exact(s, 2, timeout=5) == b"ok"

    # A quick answer ends the polling at once: after a burst of quick
    # request/answer rounds the pair is idle again.
    for _ in range(200):
        s.sendall(request(0))
        assert recv_exact(s, 2) == b"ok"
    idle = cpu_ms_during([in_t.proc, out_t.proc], 0.4)
    assert max(idle) < 40, f"polling after every answer arrived: {idle} ms in 400 ms"
    s.close()


@pytest.mark.parametrize("out_extra", [[], ["--mux"]], ids=["1to1", "mux"])
def test_late_answers_turn_polling_off_until_quick_ones_return(pki, procs, out_extra):
    """An upstream whose answers come after the window: polling would burn the
    whole window for every request. After a few late answers the workers
    sleep while they wait; quick answers turn polling back on."""
    backend = DelayServer()
    procs.items.append(backend)
    pair = start_pair(procs, pki, backend.target, WINDOW_US, out_extra)
    in_t, out_t = pair
    procs_ = [in_t.proc, out_t.proc]
    s = out_t.connect()
    s.sendall(request(0))
    assert recv_exact(s, 2) == b"ok"
    settled(pair)
    # Answers after 150 ms with a 100 ms window: the first ones are polled
    # for (the workers cannot know yet) ...
    for _ in range(8):
        s.sendall(request(150))
        assert recv_exact(s, 2, timeout=5) == b"ok"
    # ... then no longer: four more cost no polling (100 ms each per proxy if
    # they were polled for, 400 ms in all).
    before = [cpu_ns(p) for p in procs_]
    for _ in range(4):
        s.sendall(request(150))
        assert recv_exact(s, 2, timeout=5) == b"ok"
    spent = [(cpu_ns(p) - b) / 1e6 for p, b in zip(procs_, before)]
    print(f"\nBUSY-POLL late answers: inbound/outbound {spent[0]:.1f}/{spent[1]:.1f} ms CPU "
          "for 4 requests")
    assert max(spent) < 100, f"still polling for late answers: {spent} ms CPU for 4 requests"
    # Quick answers again: the next request is polled for.
    for _ in range(20):
        s.sendall(request(0))
        assert recv_exact(s, 2) == b"ok"
    s.sendall(request(1200))
    spent = cpu_ms_during(procs_, 0.1)
    assert min(spent) >= 10, f"polling did not come back with quick answers: {spent} ms in 100 ms"
    assert recv_exact(s, 2, timeout=5) == b"ok"
    s.close()


def test_without_busy_poll_the_wait_costs_nothing(pki, procs):
    """The same wait as above without the flag: the measurement above can tell
    polling from sleeping."""
    backend = DelayServer()
    procs.items.append(backend)
    pair = start_pair(procs, pki, backend.target, 0)
    s = pair[1].connect()
    s.sendall(request(0))
    assert recv_exact(s, 2) == b"ok"
    settled(pair)
    s.sendall(request(600))
    spent = cpu_ms_during([t.proc for t in pair], 0.3)
    assert max(spent) < 15, f"CPU while waiting without --busy-poll-us: {spent} ms"
    assert recv_exact(s, 2, timeout=5) == b"ok"
    s.close()


def test_connections_closed_while_waiting_do_not_keep_it_polling(pki, procs):
    """Connections that end while an answer is due, many at once on one
    worker: reset by the client (the outbound sidecar finalizes them at once)
    or closed by the backend without an answer (both sidecars see the end
    instead of an answer). The worker's count of waiting connections returns
    to zero -- a leak would make it poll for the whole window after every later
    request -- and every connection gets its answers right until then."""
    backend = DelayServer()
    procs.items.append(backend)
    pair = start_pair(procs, pki, backend.target, WINDOW_US)
    out_t = pair[1]
    n_conns = 24
    socks = [out_t.connect() for _ in range(n_conns)]
    errors = []

    def exchange(i, s):
        try:
            for n in range(20):
                s.sendall(request(n % 3))
                if recv_exact(s, 2) != b"ok":
                    errors.append(f"conn {i}: wrong answer")
                    return
            if i % 2:
                s.sendall(request(800))  # then reset while this answer is due
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                s.sendall(b"x")  # the backend closes without answering
                if s.recv(16) != b"":
                    errors.append(f"conn {i}: an answer where the backend closed")
            s.close()
        except OSError as e:
            errors.append(f"conn {i}: {e}")

    threads = [threading.Thread(target=exchange, args=(i, s)) for i, s in enumerate(socks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    # Every connection has ended on both sidecars ...
    wait_for(lambda: all(t.log().count("conn.close") >= n_conns for t in pair), 15,
             what=f"{n_conns} conn.close lines per sidecar")
    # ... and nothing is left waiting: a quick exchange on a new connection
    # does not leave the pair polling for the rest of the window.
    settled(pair)
    s = out_t.connect()
    s.sendall(request(0))
    assert recv_exact(s, 2) == b"ok"
    idle = cpu_ms_during([t.proc for t in pair], 0.4)
    assert max(idle) < 40, f"a connection that ended left the worker polling: {idle} ms in 400 ms"
    s.sendall(b"x")
    s.close()


def test_busy_poll_flag_is_checked(pki):
    """Out-of-range or non-numeric values are refused before anything starts."""
    for bad in ("-1", "100001", "abc", "5ms"):
        r = subprocess.run([seamtest.binary("seam-sidecar"), "tunnel", "inbound", "--listen",
                            addr(LOOP, seamtest.free_port()), "--target", "127.0.0.1:1",
                            "--cert", os.path.join(pki, "server.pem"),
                            "--key", os.path.join(pki, "server.key"),
                            "--trust", os.path.join(pki, "ca.pem"),
                            "--busy-poll-us", bad],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 2, (bad, r.returncode, r.stderr)
        assert "--busy-poll-us" in r.stderr and bad in r.stderr, r.stderr
