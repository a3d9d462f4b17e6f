"""valgrind memcheck on a short run (issue 10): an inbound sidecar under
`valgrind --leak-check=full --error-exitcode=99` serves a few mTLS
connections (and one refused handshake), then SIGTERM: it must exit 0 with no
memcheck error and no definite/indirect leak. Skipped if valgrind is missing
or the build is sanitizer-instrumented (ASan and valgrind do not mix)."""
import os
import re
import shutil
import signal

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


@pytest.mark.skipif(not shutil.which("valgrind"), reason="valgrind not installed")
def test_valgrind_memcheck_clean_short_run(pki, procs):
    if _asan_build():
        pytest.skip("sanitizer build: valgrind cannot run ASan binaries")
    echo = Echo(procs)
    port = free_port()
    vlog = tmpfile("valgrind-", ".txt")
    args = ["valgrind", "--error-exitcode=99", "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect", "--show-leak-kinds=definite,indirect",
            f"--log-file={vlog}",
            seamtest.binary("seam-sidecar"), "tunnel", "inbound", "--listen", addr(LOOP, port),
            "--target", echo.target, "--cert", os.path.join(pki, "server.pem"),
            "--key", os.path.join(pki, "server.key"), "--trust", os.path.join(pki, "ca.pem"),
            "--allow", "spiffe://cluster.local/ns/default/*", "--workers", "2",
            "--drain-timeout", "5s"]
    p = procs.start(args, log_path=tmpfile("sidecar-valgrind-"))
    p.wait_log("sidecar.ready", timeout=40)
    ctx = client_ctx(pki, "client")
    for i in range(5):
        with tls_connect(ctx, LOOP, port, timeout=20) as s:
            msg = b"under valgrind %d " % i * 100
            assert echo_roundtrip(s, msg, 20) == msg
    with tls_connect(client_ctx(pki, "denied"), LOOP, port, timeout=20) as s:
        closed_by_peer(s, 10)
    p.send_signal(signal.SIGTERM)
    rc = p.p.wait(40)
    with open(vlog) as f:
        report = f.read()
    os.unlink(vlog)
    assert "HEAP SUMMARY" in report, report[-2000:]  # valgrind really ran and reported
    assert rc == 0, f"exit {rc}\n{report[-4000:]}"
    m = re.search(r"ERROR SUMMARY: (\d+) errors", report)
    assert m and m.group(1) == "0", report[-4000:]
