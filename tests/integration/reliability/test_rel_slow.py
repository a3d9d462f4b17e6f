"""Slow clients (issue 10): 1,000 connections that never finish a TLS
handshake are closed by the handshake timeout and do not block a good
connection meanwhile; a client that stops reading does not grow the
sidecars' memory without bound (backpressure)."""
import selectors
import socket
import threading
import time

from relkit import (LOOP, addr, admin_metric, echo_roundtrip, pair, rss_bytes, sample_max,
                    small_quarantine_env)
from seamtest import free_port, wait_for

N_SLOW = 1000


def test_1000_stalled_handshakes_time_out_without_blocking_others(pki, procs):
    admin = free_port()
    echo, in_t, out_t = pair(procs, pki, in_extra=["--handshake-timeout", "2s",
                                                   "--admin", addr(LOOP, admin)])
    sel = selectors.DefaultSelector()
    socks = []
    try:
        t0 = time.monotonic()
        for i in range(N_SLOW):
            s = socket.socket()
            s.settimeout(5)
            s.connect((LOOP, in_t.port))
            if i % 2:
                # Half of them start a TLS record (a handshake header) and stall.
                s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
            socks.append(s)
        # A good connection (through the outbound sidecar) works meanwhile, quickly.
        g0 = time.monotonic()
        with out_t.connect(timeout=5) as g:
            assert echo_roundtrip(g, b"not blocked" * 100, 5) == b"not blocked" * 100
        assert time.monotonic() - g0 < 2.0, "a good handshake waited behind the stalled ones"

        # Every stalled connection is closed by the sidecar (EOF or reset).
        closed = set()
        deadline = time.monotonic() + 20
        while len(closed) < N_SLOW and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                s = key.fileobj
                try:
                    d = s.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    d = b""
                if not d:
                    closed.add(s.fileno())
                    sel.unregister(s)
        elapsed = time.monotonic() - t0
        assert len(closed) == N_SLOW, f"{N_SLOW - len(closed)} stalled connections still open"
        assert elapsed >= 1.5, f"closed after {elapsed:.1f}s, before the 2 s handshake timeout"
    finally:
        for s in socks:
            s.close()
        sel.close()
    wait_for(lambda: admin_metric(admin, "seam_tls_handshake_failures_total",
                                  {"reason": "handshake_timeout"}) >= N_SLOW, 10,
             what="handshake_timeout failures counted")
    assert in_t.proc.alive()


def test_client_that_stops_reading_is_bounded(pki, procs):
    """The app echoes everything; the client sends but never reads. Backpressure
    must stop the client's writes instead of seam buffering them."""
    echo, in_t, out_t = pair(procs, pki, env=small_quarantine_env())
    base = rss_bytes(in_t.proc.pid) + rss_bytes(out_t.proc.pid)
    s = out_t.connect(timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sent = [0]
    stop = threading.Event()
    chunk = b"x" * 65536

    def writer():
        s.settimeout(0.5)
        while not stop.is_set() and sent[0] < 1 << 30:
            try:
                sent[0] += s.send(chunk)
            except socket.timeout:
                continue
            except OSError:
                return

    th = threading.Thread(target=writer, daemon=True)
    th.start()
    try:
        # Writes stall: after a first burst the count stops growing.
        def stalled():
            a = sent[0]
            time.sleep(1.0)
            return a > 0 and sent[0] == a
        wait_for(stalled, 20, interval=0.1, what="the writer to be held back")
        peak = sample_max(lambda: rss_bytes(in_t.proc.pid) + rss_bytes(out_t.proc.pid), 3)
        growth = peak - base
        # Kernel socket buffers hold most of what was sent; seam holds a few
        # 32 KiB buffers per direction. 32 MiB leaves room for allocator noise.
        assert growth < 32 << 20, f"RSS grew {growth >> 20} MiB with {sent[0] >> 20} MiB sent"
        assert sent[0] < 256 << 20, f"{sent[0] >> 20} MiB accepted from a client that never reads"
    finally:
        stop.set()
        th.join(5)
        s.close()
    assert in_t.proc.alive() and out_t.proc.alive()
