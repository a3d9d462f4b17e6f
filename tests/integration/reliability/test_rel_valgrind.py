"""valgrind memcheck on a short run (issue 10): a tunnel pair, both sidecars
under `valgrind --leak-check=full --error-exitcode=99`, serves a few
connections (and one refused handshake), then SIGTERM: each must exit 0 with
no memcheck error and no definite/indirect leak. Skipped if valgrind is missing
or the build is sanitizer-instrumented (ASan and valgrind do not mix)."""
import os
import re
import shutil
import signal
import socket

import pytest

import seamtest
from relkit import LOOP, Echo, addr, client_ctx, closed_by_peer, echo_roundtrip, tls_connect
from seamtest import free_port
from tunnelkit import tmpfile


def _asan_build():
    cache = os.path.join(seamtest.BUILD_DIR, "CMakeCache.txt")
    try:
        with open(cache) as f:
            text = f.read()
    except OSError:
        return False
    return re.search(r"^SC_(ASAN|FUZZ):BOOL=ON", text, re.M) is not None


def _valgrind(procs, direction, sidecar_args):
    vlog = tmpfile(f"valgrind-{direction}-", ".txt")
    args = ["valgrind", "--error-exitcode=99", "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect", "--show-leak-kinds=definite,indirect",
            f"--log-file={vlog}", seamtest.binary("seam-sidecar"), "tunnel", direction]
    p = procs.start(args + sidecar_args + ["--workers", "2", "--drain-timeout", "5s"],
                    log_path=tmpfile(f"sidecar-valgrind-{direction}-"))
    p.wait_log("sidecar.ready", timeout=40)
    return p, vlog


def _check(p, vlog):
    p.send_signal(signal.SIGTERM)
    rc = p.p.wait(40)
    with open(vlog) as f:
        report = f.read()
    os.unlink(vlog)
    assert "HEAP SUMMARY" in report, report[-2000:]  # valgrind really ran and reported
    assert rc == 0, f"exit {rc}\n{report[-4000:]}"
    m = re.search(r"ERROR SUMMARY: (\d+) errors", report)
    assert m and m.group(1) == "0", report[-4000:]


@pytest.mark.skipif(not shutil.which("valgrind"), reason="valgrind not installed")
def test_valgrind_memcheck_clean_short_run(pki, procs):
    """Both sidecars of a pair under valgrind: 5 connections through them,
    one refused client at the inbound one, then SIGTERM (outbound first)."""
    if _asan_build():
        pytest.skip("sanitizer build: valgrind cannot run ASan binaries")
    echo = Echo(procs)
    in_port, out_port = free_port(), free_port()
    inb, vin = _valgrind(procs, "inbound", [
        "--listen", addr(LOOP, in_port), "--target", echo.target,
        "--cert", os.path.join(pki, "server.pem"), "--key", os.path.join(pki, "server.key"),
        "--trust", os.path.join(pki, "ca.pem"), "--allow", "spiffe://cluster.local/ns/default/*"])
    outb, vout = _valgrind(procs, "outbound", [
        "--listen", addr(LOOP, out_port), "--target", addr(LOOP, in_port),
        "--cert", os.path.join(pki, "client.pem"), "--key", os.path.join(pki, "client.key"),
        "--trust", os.path.join(pki, "ca.pem"),
        "--peer-id", "spiffe://cluster.local/ns/default/sa/server"])
    for i in range(5):
        with socket.create_connection((LOOP, out_port), timeout=20) as s:
            msg = b"under valgrind %d " % i * 100
            assert echo_roundtrip(s, msg, 20) == msg
    with tls_connect(client_ctx(pki, "denied"), LOOP, in_port, timeout=20) as s:
        closed_by_peer(s, 10)
    _check(outb, vout)
    _check(inb, vin)
