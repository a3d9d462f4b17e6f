"""Tunnel mode against real OpenSSL peers (issue 2, "What must be shown" #2).

- `openssl s_server -Verify 1 -tls1_3` behind `tunnel outbound` sees our client
  certificate with our SPIFFE ID over TLS 1.3; bytes flow both ways.
- `openssl s_client -tls1_3` with a client certificate through `tunnel inbound`
  reaches a plain echo app; bytes are echoed.
"""
import os
import re
import subprocess

from seamtest import wait_for
from tunnelkit import (CLIENT_ID, LOOP, SERVER_ID, Echo, cert_uris, client_ctx, echo_roundtrip,
                       events, pem_certs, recv_exact, start_s_server, start_tunnel, tls_connect)


def test_outbound_to_openssl_s_server(pki, procs):
    srv = start_s_server(procs, pki, "server")
    out_t = start_tunnel(procs, "outbound", srv.target, pki, cert="client", peer_id=SERVER_ID)

    up = b"ping-from-app-through-outbound\n"
    down = b"pong-from-openssl-s_server\n"
    s = out_t.connect()
    s.sendall(up)
    srv.wait_log(up.decode().strip())
    seen = srv.new_output()

    # The server verified our client certificate (-Verify 1) and printed it.
    assert "Client certificate" in seen, seen
    certs = pem_certs(seen.split("Client certificate", 1)[1])
    assert certs, seen
    assert cert_uris(certs[0]) == [CLIENT_ID]
    # TLS 1.3: only TLS 1.3 suites are named TLS_AES_* / TLS_CHACHA20_*.
    m = re.search(r"CIPHER is (\S+)", seen)
    assert m and re.match(r"TLS_(AES_\d+_GCM|CHACHA20_POLY1305)_SHA\d+$", m.group(1)), seen

    # Server -> app direction.
    srv.send(down)
    assert recv_exact(s, len(down)) == down
    s.close()

    ev = wait_for(lambda: events(out_t.proc, "conn.close"), 10, what="outbound conn.close")
    assert len(ev) == 1, ev
    e = ev[0]
    assert e["dir"] == "outbound"
    assert e["peer_id"] == SERVER_ID
    assert e["tls"] == "TLSv1.3"
    assert int(e["bytes_in"]) == len(up)
    assert int(e["bytes_out"]) == len(down)
    assert not events(out_t.proc, "tls.handshake_failed")


def test_openssl_s_client_through_inbound_to_echo(pki, procs, tmp_path):
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki, cert="server",
                        allow=["spiffe://cluster.local/ns/default/*"])

    msg = b"hello-from-openssl-s_client\n"
    out_path = tmp_path / "s_client.out"
    with open(out_path, "wb") as out:
        cl = subprocess.Popen(
            ["openssl", "s_client", "-connect", f"{LOOP}:{in_t.port}", "-tls1_3",
             "-cert", os.path.join(pki, "client.pem"), "-key", os.path.join(pki, "client.key"),
             "-CAfile", os.path.join(pki, "ca.pem"), "-verify_return_error"],
            stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT)
        procs.items.append(_PopenStopper(cl))

        def text():
            return out_path.read_bytes().decode(errors="replace")

        try:
            wait_for(lambda: "Verify return code" in text() or cl.poll() is not None, 10,
                     what="s_client handshake")
            cl.stdin.write(msg)
            cl.stdin.flush()
            # s_client prints the echoed line after its session summary.
            # (stdin is not echoed locally: the line in s_client's output
            # came back through inbound -> echo app -> inbound.)
            wait_for(lambda: msg.decode().strip() in text(), 10, what="echo through inbound")
        finally:
            cl.stdin.close()
            cl.wait(10)
    t = text()
    assert "Verify return code: 0 (ok)" in t, t
    assert re.search(r"TLSv1\.3", t), t
    assert cert_uris(pem_certs(t)[0]) == [SERVER_ID]

    wait_for(lambda: echo.stats()["bytes"] == len(msg), 5, what="echo byte count")
    ev = wait_for(lambda: events(in_t.proc, "conn.close"), 10, what="inbound conn.close")
    e = ev[0]
    assert e["dir"] == "inbound"
    assert e["peer_id"] == CLIENT_ID
    assert e["tls"] == "TLSv1.3"
    assert int(e["bytes_in"]) == len(msg)
    assert int(e["bytes_out"]) == len(msg)


def test_inbound_ipv6_loopback(pki, procs):
    """The tunnel listens on [::1] and logs IPv6 peers as [::1]:port."""
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki, host="::1")
    s = tls_connect(client_ctx(pki, "client"), "::1", in_t.port)
    assert echo_roundtrip(s, b"v6 data") == b"v6 data"
    port = s.getsockname()[1]
    s.close()
    ev = wait_for(lambda: events(in_t.proc, "conn.close"), 10, what="conn.close")
    assert ev[0]["peer"] == f"[::1]:{port}"
    assert ev[0]["peer_id"] == CLIENT_ID


class _PopenStopper:
    """Lets the procs fixture end a plain subprocess.Popen we started (by PID)."""

    def __init__(self, p):
        self.p = p

    def stop(self, *a, **kw):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        return self.p.returncode


def test_intermediate_chain_both_sides(pki, procs, tmp_path):
    """SVIDs issued by an intermediate: the leaf+intermediate chain file is
    sent by the outbound tunnel and accepted by the inbound one (trust = root only)."""
    import shutil
    d = str(tmp_path)
    shutil.copyfile(os.path.join(pki, "chained-chain.pem"), os.path.join(d, "id.pem"))
    shutil.copyfile(os.path.join(pki, "chained.key"), os.path.join(d, "id.key"))
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki)
    out_t = start_tunnel(procs, "outbound", f"{LOOP}:{in_t.port}", pki, cert=os.path.join(d, "id"))
    s = out_t.connect()
    assert echo_roundtrip(s, b"via intermediate") == b"via intermediate"
    s.close()
    ev = wait_for(lambda: events(in_t.proc, "conn.close"), 10, what="inbound conn.close")
    assert ev[0]["peer_id"] == CLIENT_ID
    assert not events(in_t.proc, "tls.handshake_failed")

    # And the other way: the inbound (server) side presents the chain.
    in2 = start_tunnel(procs, "inbound", echo.target, pki, cert=os.path.join(d, "id"))
    out2 = start_tunnel(procs, "outbound", f"{LOOP}:{in2.port}", pki, peer_id=CLIENT_ID)
    s = out2.connect()
    assert echo_roundtrip(s, b"server chain") == b"server chain"
    s.close()
    ev = wait_for(lambda: events(out2.proc, "conn.close"), 10, what="outbound conn.close")
    assert ev[0]["peer_id"] == CLIENT_ID


def test_ipv6_outbound_to_inbound(pki, procs):
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki, host="::1")
    out_t = start_tunnel(procs, "outbound", f"[::1]:{in_t.port}", pki, host="::1")
    s = out_t.connect()
    assert echo_roundtrip(s, b"v6 both hops") == b"v6 both hops"
    s.close()
    ev = wait_for(lambda: events(in_t.proc, "conn.close"), 10, what="conn.close")
    assert ev[0]["peer"].startswith("[::1]:")
    assert ev[0]["tls"] == "TLSv1.3"
