"""seam-control-plane under abrupt disconnects and slow readers (issue 4)."""
import os
import queue
import socket
import ssl
import time

import pytest

import seamtest
from cphelp import CFG_PATH, ID_A, MESH, pb, ConfigStream, ControlPlane, create_cert, make_csr, new_key


def tls_ctx(root):
    ctx = ssl.create_default_context(cafile=root)
    ctx.set_alpn_protocols(["h2"])
    return ctx


def test_abrupt_disconnects_leave_server_serving(procs, tmp_path):
    cp = ControlPlane(procs, tmp_path)
    ctx = tls_ctx(cp.root)
    for i in range(40):
        s = socket.create_connection(("127.0.0.1", cp.port), timeout=5)
        kind = i % 5
        if kind == 0:
            s.close()  # TCP only
            continue
        if kind == 1:
            s.sendall(b"\x16\x03\x01\x02\x00garbage-not-tls" * 10)
            s.close()
            continue
        t = ctx.wrap_socket(s, server_hostname="localhost")
        assert t.selected_alpn_protocol() == "h2"
        if kind == 2:
            t.close()
        elif kind == 3:
            t.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[:12])  # half a preface
            t.close()
        else:
            t.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
                      + b"\xff" * 100)  # SETTINGS then a broken frame
            t.close()
    # Clients that vanish mid-stream.
    for _ in range(5):
        ch = cp.channel()
        st = ConfigStream(ch, "gone")
        st.next()
        ch.close()
    seamtest.wait_for(lambda: cp.metric("seam_cp_connections") == 0, 10, what="connections freed")
    assert cp.metric("seam_cp_config_streams") == 0
    ch = cp.channel()
    assert create_cert(ch, "tok-a", make_csr(new_key(), uri=ID_A)).cert_chain
    ch.close()
    assert cp.proc.alive()


def test_handshake_timeout_closes_silent_clients(procs, tmp_path):
    cp = ControlPlane(procs, tmp_path)
    s = socket.create_connection(("127.0.0.1", cp.port), timeout=15)
    t0 = time.monotonic()
    assert s.recv(1) == b""  # closed by the server (10 s handshake timeout)
    assert time.monotonic() - t0 < 14
    s.close()


def test_slow_reader_gets_latest_version_not_a_queue(procs, tmp_path):
    """A stream that stops reading while 15 big versions are published gets
    the newest one when it reads again, and far fewer than 15 in between."""
    _, cfg = pb()
    cp = ControlPlane(procs, tmp_path)
    ch = cp.channel(**{"grpc.http2.bdp_probe": 0})
    call = ch.stream_stream(CFG_PATH, request_serializer=cfg.ConfigRequest.SerializeToString,
                            response_deserializer=cfg.ConfigResponse.FromString)
    reqs = queue.Queue()
    reqs.put(cfg.ConfigRequest(node=cfg.Node(id="slow")))
    it = call(iter(reqs.get, None))
    first = next(it)
    # Stop the reader: grpcio keeps reading into its queue, so hold the queue
    # small by not consuming and let HTTP/2 flow control push back.
    big_services = "".join(
        f"  - name: svc{i}.example\n    endpoints:\n" +
        "".join(f"      - address: 10.{i % 250}.{j}.1\n        port: 8080\n"
                f"        spiffe_id: spiffe://cluster.local/ns/n{i}/sa/s{j}\n" for j in range(40))
        for i in range(120))
    base = MESH.replace("services:\n", "services:\n" + big_services)
    seq0 = cp.metric("seam_cp_config_version")
    for n in range(15):
        text = base.replace("cert_ttl: 30m", f"cert_ttl: {n + 1}m")
        with open(cp.mesh + ".new", "w") as f:
            f.write(text)
        os.replace(cp.mesh + ".new", cp.mesh)
        seamtest.wait_for(lambda n=n: cp.metric("seam_cp_config_version") >= seq0 + n + 1, 10,
                          what=f"version {n + 1} published")
    final = cp.metric("seam_cp_config_version")
    got = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r = next(it)
        got.append(r)
        if r.snapshot.cert_ttl_seconds == 15 * 60:
            break
    assert got and got[-1].snapshot.cert_ttl_seconds == 15 * 60
    assert got[-1].version_info.startswith(f"{int(final)}-")
    assert len(got) < 15, f"{len(got)} versions were queued for a slow reader"
    assert first.version_info != got[-1].version_info
    it.cancel()
    ch.close()


def test_max_concurrent_streams_is_enforced(procs, tmp_path):
    """--max-streams 2: a third stream on the same connection waits (grpcio
    honours SETTINGS_MAX_CONCURRENT_STREAMS) until one of the two ends."""
    cp = ControlPlane(procs, tmp_path, extra=["--max-streams", "2"])
    ch = cp.channel()
    s1 = ConfigStream(ch, "one")
    s2 = ConfigStream(ch, "two")
    s1.next()
    s2.next()
    s3 = ConfigStream(ch, "three")
    with pytest.raises(queue.Empty):
        s3.next(timeout=1.5)
    assert cp.metric("seam_cp_config_streams") == 2
    s1.close()
    assert s3.next(timeout=10).version_info
    s2.close()
    s3.close()
    ch.close()


def test_admin_closes_silent_clients_and_exits_cleanly_with_one_open(procs, tmp_path):
    cp = ControlPlane(procs, tmp_path)
    silent = socket.create_connection(("127.0.0.1", cp.admin_port), timeout=15)
    t0 = time.monotonic()
    assert silent.recv(1) == b""  # closed after the 10 s admin deadline
    assert 8 < time.monotonic() - t0 < 14
    silent.close()
    partial = socket.create_connection(("127.0.0.1", cp.admin_port), timeout=5)
    partial.sendall(b"GET /metr")
    assert cp.metric("seam_cp_config_streams") == 0  # admin still answers others
    assert cp.proc.stop() == 0  # SIGTERM with an admin connection open: exit 0
    partial.close()
