"""--max-connection-age (issue 5): a connection older than the limit ends
gracefully — seam stops taking bytes from the client, sends FIN to the
upstream, lets the answer drain back, then closes — so no connection runs for
long on a retired certificate. Off by default: without the flag a connection
outlives several certificate rotations."""
import socket
import time

import pytest

import idkit
import seamtest


def exchange(s, data):
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        d = s.recv(65536)
        if not d:
            break
        got += d
    return got


@pytest.mark.parametrize("mux", [False, True], ids=["1to1", "mux"])
def test_max_connection_age(procs, tmp_path, mux):
    """With --mux the client connection is a stream of a session: it ages and
    ends the same way, and says so in its conn.close."""
    cp = idkit.ControlPlane(procs, tmp_path, ttl="10s")
    app = idkit.EchoApp()
    try:
        tin, tout = idkit.tunnel_pair(procs, cp, app.port,
                                      extra=("--max-connection-age", "3s"),
                                      out_extra=("--mux",) if mux else ())
        s = socket.create_connection(("127.0.0.1", tout.port), timeout=10)
        t0 = time.monotonic()
        n = 0
        closed = False
        # Bounded: the close must come within age + one sweep tick + margin.
        while time.monotonic() - t0 < 12:
            try:
                got = exchange(s, b"x" * 1000)
            except OSError:
                got = b""
            if got != b"x" * 1000:
                assert got == b"", "a partial echo: bytes were lost"
                closed = True
                break
            n += 1
            time.sleep(0.05)
        age = time.monotonic() - t0
        s.close()
        print(f"\nMAX-AGE closed_after_s={age:.1f} exchanges={n}")
        assert closed, "the connection outlived --max-connection-age"
        assert 2.5 <= age <= 6.5
        seamtest.wait_for(lambda: "reason=max_connection_age" in tout.proc.log() + tin.proc.log(),
                          5, what="conn.close reason=max_connection_age")

        if mux:
            # Each side sweeps its streams once a second on its own clock, so
            # either may age the stream first: that side's conn.close says
            # max_connection_age; the other one's stream then ends on the FIN
            # it was sent (eof), as a 1:1 connection's other proxy does.
            log = tout.proc.log() + tin.proc.log()
            aged = [ln for ln in log.splitlines()
                    if "conn.close" in ln and "reason=max_connection_age" in ln]
            assert "mux.session_open" in tout.proc.log()
            assert aged and all("tls=mux" in ln for ln in aged), aged
            out_closed = seamtest.wait_for(
                lambda: [ln for ln in tout.proc.log().splitlines() if "conn.close" in ln], 5,
                what="the outbound's conn.close")
            assert all("tls=mux" in ln and ("reason=max_connection_age" in ln or "reason=eof" in ln)
                       for ln in out_closed), out_closed
        # New connections are not affected.
        assert idkit.connection_works(tout.port)
    finally:
        app.close()


def test_off_by_default(procs, tmp_path):
    cp = idkit.ControlPlane(procs, tmp_path, ttl="10s")
    app = idkit.EchoApp()
    try:
        tin, tout = idkit.tunnel_pair(procs, cp, app.port)
        marks = [len(t.installed_serials()) for t in (tin, tout)]
        with socket.create_connection(("127.0.0.1", tout.port), timeout=10) as s:
            t0 = time.monotonic()
            # Until each side rotated at least twice (bounded at 20 s).
            while time.monotonic() - t0 < 20:
                assert exchange(s, b"y" * 500) == b"y" * 500
                if all(len(t.installed_serials()) >= m + 2 for t, m in zip((tin, tout), marks)):
                    break
                time.sleep(0.1)
            assert all(len(t.installed_serials()) >= m + 2 for t, m in zip((tin, tout), marks))
            assert exchange(s, b"still here") == b"still here"
    finally:
        app.close()
