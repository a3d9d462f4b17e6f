"""seam-control-plane closes idle connections (--idle-timeout): a client that
completes TLS and then says nothing gets GOAWAY and EOF instead of holding a
descriptor for ever, while a connection with an open config stream stays."""
import socket
import ssl
import struct
import time

import seamtest
from cphelp import MESH, ConfigStream, ControlPlane
from test_cp_config import write_mesh

GOAWAY = 0x7


def silent_h2_client(cp):
    """A TLS connection with ALPN h2 that never sends a byte after the
    handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cp.root)
    ctx.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", cp.port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    assert s.selected_alpn_protocol() == "h2"
    return s


def read_until_eof(s, limit_s):
    """Reads until EOF or |limit_s|; returns (frame types seen, seconds, eof)."""
    t0 = time.monotonic()
    data = b""
    eof = False
    while time.monotonic() - t0 < limit_s:
        s.settimeout(max(0.1, limit_s - (time.monotonic() - t0)))
        try:
            chunk = s.recv(65536)
        except (socket.timeout, TimeoutError):
            break
        except (ssl.SSLError, OSError):
            eof = True
            break
        if not chunk:
            eof = True
            break
        data += chunk
    types, off = [], 0
    while off + 9 <= len(data):
        length = struct.unpack(">I", b"\0" + data[off:off + 3])[0]
        types.append(data[off + 3])
        off += 9 + length
    return types, time.monotonic() - t0, eof


def test_silent_connection_gets_goaway_and_is_closed(procs, tmp_path):
    cp = ControlPlane(procs, tmp_path, extra=["--idle-timeout", "1s"])
    s = silent_h2_client(cp)
    types, took, eof = read_until_eof(s, 10)
    s.close()
    assert eof, f"still open after {took:.1f}s; frames {types}"
    assert GOAWAY in types, types
    assert 0.9 <= took < 6, took


def test_default_timeout_keeps_a_quiet_connection_for_now(procs, tmp_path):
    # The default (5m) does not close a connection after a couple of seconds.
    cp = ControlPlane(procs, tmp_path)
    s = silent_h2_client(cp)
    types, took, eof = read_until_eof(s, 2.5)
    s.close()
    assert not eof and GOAWAY not in types, (types, took)


def test_open_config_stream_is_not_idle(procs, tmp_path):
    cp = ControlPlane(procs, tmp_path, extra=["--idle-timeout", "1s"])
    st = ConfigStream(cp.channel(), "spiffe://cluster.local/ns/default/sa/web", token="tok-a")
    r1 = st.next()
    st.ack(r1)
    # A silent connection opened now is closed by the idle sweep: once it is,
    # the stream's connection has been quiet past the timeout too.
    s = silent_h2_client(cp)
    _, took, eof = read_until_eof(s, 10)
    s.close()
    assert eof and took >= 0.9
    # The stream is still served on its connection: a mesh change reaches it.
    write_mesh(cp.mesh, MESH.replace("cert_ttl: 30m", "cert_ttl: 10m"))
    r2 = st.next(timeout=15)
    assert r2.version_info != r1.version_info and r2.snapshot.cert_ttl_seconds == 600
    assert st.error is None
    st.close()
