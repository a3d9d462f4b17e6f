"""Hot reload of certificate/key files (issue 2 "What must be shown" #5).

Files are replaced atomically (write a new file, os.replace over the old
name), as Kubernetes secret volumes and cert-manager do. A connection opened
before the change keeps moving bytes; new connections present the new
certificate; a corrupt file is reported and the previous certificate stays
in force. No signal is sent: the sidecar notices the change itself.
"""
import os
import shutil
import ssl

from seamtest import wait_for
from tunnelkit import (LOOP, SERVER_ID, Echo, cert_serial, client_ctx, der_of, echo_roundtrip,
                       events, hs_failures, start_tls_echo, start_tunnel, tls_connect)


def _replace(src, dst):
    """Atomic replace of dst with a copy of src."""
    tmp = dst + ".new"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _swap_identity(pki, name, d, base):
    # Key first, then cert: in between the pair does not match, and the sidecar
    # must keep the old pair until a matching one appears.
    _replace(os.path.join(pki, name + ".key"), os.path.join(d, base + ".key"))
    _replace(os.path.join(pki, name + ".pem"), os.path.join(d, base + ".pem"))


def _inbound_on_copied_server_identity(pki, procs, d):
    """An inbound tunnel in front of an echo app whose cert/key are copies of
    server.pem/server.key at d/id.pem and d/id.key (for the test to swap)."""
    shutil.copyfile(os.path.join(pki, "server.pem"), os.path.join(d, "id.pem"))
    shutil.copyfile(os.path.join(pki, "server.key"), os.path.join(d, "id.key"))
    echo = Echo(procs)
    return start_tunnel(procs, "inbound", echo.target, pki, cert=os.path.join(d, "id"))


def _served_cert(pki, port):
    s = tls_connect(client_ctx(pki, "client"), LOOP, port)
    der = s.getpeercert(binary_form=True)
    ok = echo_roundtrip(s, b"probe") == b"probe"
    s.close()
    return der if ok else None


def _reload_problems(proc):
    return [e for e in events(proc) if e["level"] in ("WARN", "ERROR")
            and e["event"] not in ("tls.handshake_failed", "conn.close")]


def test_inbound_reload_keeps_open_connections(pki, procs, tmp_path):
    d = str(tmp_path)
    in_t = _inbound_on_copied_server_identity(pki, procs, d)

    old = tls_connect(client_ctx(pki, "client"), LOOP, in_t.port)
    assert old.getpeercert(binary_form=True) == der_of(os.path.join(pki, "server.pem"))
    assert echo_roundtrip(old, b"before") == b"before"

    # 1. Atomic replacement with server2 (same ID, new key and serial).
    _swap_identity(pki, "server2", d, "id")
    new_der = der_of(os.path.join(pki, "server2.pem"))
    wait_for(lambda: _served_cert(pki, in_t.port) == new_der, 15,
             what=f"new connections to present serial {cert_serial(os.path.join(pki, 'server2.pem'))}")
    # The connection opened before the change still moves bytes.
    assert echo_roundtrip(old, b"after-reload-1") == b"after-reload-1"

    # 2. A corrupt certificate file: reported, and server2 stays in force.
    before = len(_reload_problems(in_t.proc))
    tmp = os.path.join(d, "id.pem.new")
    with open(tmp, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    os.replace(tmp, os.path.join(d, "id.pem"))
    wait_for(lambda: len(_reload_problems(in_t.proc)) > before, 15,
             what="a warning/error about the corrupt certificate file")
    assert in_t.proc.alive()
    for _ in range(3):
        assert _served_cert(pki, in_t.port) == new_der
    assert echo_roundtrip(old, b"after-corrupt") == b"after-corrupt"

    # 3. Back to a good pair: picked up again.
    _swap_identity(pki, "server", d, "id")
    wait_for(lambda: _served_cert(pki, in_t.port) == der_of(os.path.join(pki, "server.pem")), 15,
             what="reload after a corrupt file")
    assert echo_roundtrip(old, b"after-reload-2") == b"after-reload-2"
    old.close()

    # Nothing in the log may contain key material.
    log = in_t.log()
    assert "PRIVATE KEY" not in log


def test_outbound_reload_client_cert(pki, procs, tmp_path):
    """Outbound presents the new client certificate on new connections; an
    mTLS server behind it records what each connection presented."""
    d = str(tmp_path)
    shutil.copyfile(os.path.join(pki, "client.pem"), os.path.join(d, "me.pem"))
    shutil.copyfile(os.path.join(pki, "client.key"), os.path.join(d, "me.key"))
    srv = start_tls_echo(procs, pki, "server")
    out_t = start_tunnel(procs, "outbound", srv.target, pki, cert=os.path.join(d, "me"),
                         peer_id=SERVER_ID)

    old = out_t.connect()
    assert echo_roundtrip(old, b"before") == b"before"
    assert srv.peer_certs[-1] == der_of(os.path.join(pki, "client.pem"))

    _swap_identity(pki, "client2", d, "me")
    new_der = der_of(os.path.join(pki, "client2.pem"))

    def new_conn_presents_new():
        s = out_t.connect()
        try:
            ok = echo_roundtrip(s, b"probe") == b"probe"
        finally:
            s.close()
        return ok and srv.peer_certs[-1] == new_der

    wait_for(new_conn_presents_new, 15, what="outbound to present client2")
    assert echo_roundtrip(old, b"after") == b"after"
    old.close()


def test_trust_bundle_reload(pki, procs, tmp_path):
    """Trust file ca.pem -> ca+ca2 -> ca2 only: a ca2 client is accepted after
    the first change, a ca client is refused (unknown_ca) after the second, and
    a connection opened at the start keeps moving bytes throughout."""
    d = str(tmp_path)
    trust = os.path.join(d, "trust.pem")
    shutil.copyfile(os.path.join(pki, "ca.pem"), trust)
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki, cert="server", trust=trust)

    old = tls_connect(client_ctx(pki, "client"), LOOP, in_t.port)
    assert echo_roundtrip(old, b"a") == b"a"

    def accepted(cert):
        try:
            s = tls_connect(client_ctx(pki, cert), LOOP, in_t.port, timeout=3)
        except (ssl.SSLError, OSError):
            return False
        try:
            return echo_roundtrip(s, b"b", 3) == b"b"
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError):
            return False
        finally:
            s.close()

    assert not accepted("client-ca2")
    _replace(os.path.join(pki, "bundle-both.pem"), trust)
    wait_for(lambda: accepted("client-ca2"), 15, what="a ca2 client accepted after the reload")
    assert accepted("client")
    assert echo_roundtrip(old, b"c") == b"c"

    def unknown_ca_count():
        return sum(e["reason"] == "unknown_ca" for e in hs_failures(in_t.proc))

    n_unknown = unknown_ca_count()
    _replace(os.path.join(pki, "ca2.pem"), trust)
    wait_for(lambda: not accepted("client"), 15, what="a ca client refused after dropping ca")
    # The client sees the alert before the sidecar's log line is written.
    wait_for(lambda: unknown_ca_count() > n_unknown, 5, what="the refusal logged as unknown_ca")
    assert accepted("client-ca2")
    assert echo_roundtrip(old, b"d") == b"d"
    old.close()


def test_sighup_rereads_files(pki, procs, tmp_path):
    """SIGHUP re-reads cert/key/trust (contract) and does not end the process."""
    import signal
    d = str(tmp_path)
    in_t = _inbound_on_copied_server_identity(pki, procs, d)
    old = tls_connect(client_ctx(pki, "client"), LOOP, in_t.port)
    assert echo_roundtrip(old, b"1") == b"1"
    _swap_identity(pki, "server2", d, "id")
    in_t.proc.send_signal(signal.SIGHUP)
    new_der = der_of(os.path.join(pki, "server2.pem"))
    wait_for(lambda: _served_cert(pki, in_t.port) == new_der, 15, what="server2 after SIGHUP")
    # A SIGHUP with nothing changed is harmless too.
    in_t.proc.send_signal(signal.SIGHUP)
    assert _served_cert(pki, in_t.port) == new_der
    assert in_t.proc.alive()
    assert echo_roundtrip(old, b"2") == b"2"
    old.close()


def test_kubernetes_secret_volume_swap(pki, procs, tmp_path):
    """Kubernetes updates a mounted Secret by writing a new timestamped dir and
    atomically renaming the `..data` symlink; the files the sidecar was given
    are symlinks through `..data`. The change must be noticed without a signal."""
    vol = str(tmp_path / "secret")
    os.makedirs(vol)

    def publish(name, stamp):
        ts = os.path.join(vol, f"..{stamp}")
        os.makedirs(ts)
        shutil.copyfile(os.path.join(pki, name + ".pem"), os.path.join(ts, "tls.crt"))
        shutil.copyfile(os.path.join(pki, name + ".key"), os.path.join(ts, "tls.key"))
        tmp_link = os.path.join(vol, "..data_tmp")
        os.symlink(f"..{stamp}", tmp_link)
        os.replace(tmp_link, os.path.join(vol, "..data"))

    publish("server", "2026_01_01_00_00_00.1")
    os.symlink("..data/tls.crt", os.path.join(vol, "tls.crt"))
    os.symlink("..data/tls.key", os.path.join(vol, "tls.key"))
    echo = Echo(procs)
    from tunnelkit import tunnel_args, free_port, addr
    port = free_port()
    args = tunnel_args("inbound", addr(LOOP, port), echo.target, pki, "server",
                       allow=["spiffe://cluster.local/ns/default/*"],
                       extra=["--drain-timeout", "5s"])
    args[args.index("--cert") + 1] = os.path.join(vol, "tls.crt")
    args[args.index("--key") + 1] = os.path.join(vol, "tls.key")
    in_t = start_tunnel(procs, "inbound", echo.target, pki, args=args, port=port)
    old = tls_connect(client_ctx(pki, "client"), LOOP, in_t.port)
    assert old.getpeercert(binary_form=True) == der_of(os.path.join(pki, "server.pem"))
    assert echo_roundtrip(old, b"1") == b"1"

    publish("server2", "2026_01_01_00_10_00.2")
    new_der = der_of(os.path.join(pki, "server2.pem"))
    wait_for(lambda: _served_cert(pki, in_t.port) == new_der, 15,
             what="the new Secret contents after the ..data symlink swap")
    assert echo_roundtrip(old, b"2") == b"2"
    old.close()
