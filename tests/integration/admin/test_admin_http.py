"""The admin endpoint refuses malformed and oversized requests (400/413/431,
slow clients time out) and none of it disturbs the proxy."""
import socket
import threading

from adminkit import start_with_admin, wait_for
from tunnelkit import LOOP, Echo, addr, echo_roundtrip


def test_bad_requests_do_not_disturb_proxy(pki, procs):
    echo = Echo(procs)
    in_t, in_a = start_with_admin(procs, "inbound", echo.target, pki)
    out_t, a = start_with_admin(procs, "outbound", addr(LOOP, in_t.port), pki)

    # A proxied connection stays open through all of it.
    s = out_t.connect()
    assert echo_roundtrip(s, b"before") == b"before"

    # Slow clients hold admin connections open (slowloris) meanwhile.
    slow = []
    for _ in range(5):
        c = socket.create_connection((LOOP, a.port), timeout=10)
        c.sendall(b"GET /metrics HTTP/1.1\r\nHo")
        slow.append(c)

    cases = [
        (b"GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 400),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
        (b"POST /drain HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"z" * 5000, 413),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"A: b\r\n" * 200 + b"\r\n", 431),
        (b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"PUT /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"GET /drain HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"GET / HTTP/3.0\r\n\r\n", 505),
    ]
    for req, want in cases:
        st, _, body = a.raw(req)
        assert st == want, (req[:40], st, body[:200])
        assert echo_roundtrip(s, b"during") == b"during"

    # Many concurrent scrapes while traffic flows: all answered.
    results = []

    def scrape():
        results.append(a.get("/metrics")[0])
    ts = [threading.Thread(target=scrape) for _ in range(20)]
    for t in ts:
        t.start()
    for i in range(20):
        assert echo_roundtrip(s, b"m%d" % i) == b"m%d" % i
    for t in ts:
        t.join(15)
    assert results.count(200) + results.count(503) == 20 and results.count(200) >= 1, results

    # A proxied connection made now works as well, and the admin still answers.
    s2 = out_t.connect()
    assert echo_roundtrip(s2, b"after") == b"after"
    s2.close()
    s.close()
    assert a.get("/healthz/ready")[0] == 200
    # No drain was triggered by the oversized POST /drain.
    assert out_t.proc.alive()
    st, _, _ = a.get("/healthz/live")
    assert st == 200
    for c in slow:
        c.close()
    # Neither sidecar crashed or logged an error.
    for t in (in_t, out_t):
        assert t.proc.alive()
        assert " ERROR " not in t.log(), t.log()
