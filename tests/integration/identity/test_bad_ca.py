"""A CA that hands out bad certificates (issue 5): wrong SPIFFE ID, a key
that is not ours, already expired, not chaining to our trust bundle, a CA
certificate instead of a leaf. Each is refused (counted by result in
seam_cert_renewals_total and logged), the certificate in force stays, the
sidecar stays ready and keeps serving, and the next good certificate is
installed. A fake grpcio CA (fake_ca.py) switches its answers at run time."""
import os
import signal
import socket
import ssl

import fake_ca
import idkit
import seamtest

BAD = [("wrong_id", "wrong_identity"), ("wrong_key", "wrong_key"), ("expired", "expired"),
       ("untrusted", "untrusted_chain"), ("not_leaf", "not_a_leaf")]


class CAInfo:
    """What idkit.Tunnel needs to know about the CA."""

    def __init__(self, tmp, port, root):
        self.tmp = str(tmp)
        self.port = port
        self.root = root
        self.token_files = {}
        for name in ("in", "out"):
            p = os.path.join(self.tmp, f"token-{name}")
            with open(p, "w") as f:
                f.write(f"tok-{name}\n")
            self.token_files[name] = p


def inbound_serves(port, pki):
    """A TLS client with the gen.sh client certificate completes a handshake
    with the inbound and sees its certificate's serial."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(os.path.join(pki, "ca.pem"))
    ctx.load_cert_chain(os.path.join(pki, "client.pem"), os.path.join(pki, "client.key"))
    ctx.verify_mode = ssl.CERT_NONE  # the SPIFFE leaf has no host name; we only read it
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with ctx.wrap_socket(s) as t:
            der = t.getpeercert(binary_form=True)
    from cryptography import x509
    return format(x509.load_der_x509_certificate(der).serial_number, "x")


def test_bad_certificates_refused(procs, tmp_path, pki):
    ca = fake_ca.FakeCA(tmp_path, pki, {"tok-in": idkit.ID_IN, "tok-out": idkit.ID_OUT})
    info = CAInfo(tmp_path, ca.port, os.path.join(pki, "ca.pem"))
    app = idkit.EchoApp()
    try:
        port = seamtest.free_port()
        tin = idkit.Tunnel(procs, "inbound", port, app.port, info, "in",
                           extra=("--cert-ttl", "60s"))
        tin.wait_ready()
        serial = tin.serial()
        assert inbound_serves(port, pki).lstrip("0") == serial.lower().lstrip("0")
        for mode, result in BAD:
            before = idkit.metric(tin.metrics(), "seam_cert_renewals_total", f'result="{result}"')
            ca.mode = mode
            tin.proc.send_signal(signal.SIGHUP)  # renew now
            seamtest.wait_for(
                lambda: idkit.metric(tin.metrics(), "seam_cert_renewals_total",
                                     f'result="{result}"') > before, 10,
                what=f"the {mode} certificate refused as {result}")
            # The certificate in force stays and keeps serving.
            assert tin.serial() == serial
            assert tin.ready_status() == 200
            assert inbound_serves(port, pki).lstrip("0") == serial.lower().lstrip("0")
            assert f"result={result}" in tin.proc.log()
            # Back to good answers: the retry installs a new certificate.
            ca.mode = "normal"
            seamtest.wait_for(lambda: tin.serial() != serial, 10,
                              what="a good certificate after the bad one")
            serial = tin.serial()
            seamtest.wait_for(lambda: inbound_serves(port, pki).lstrip("0") == serial.lower().lstrip("0"),
                              5, what="new handshakes use the new certificate")
        print(f"\nBAD-CA calls={len(ca.calls)} modes={sorted(set(ca.calls))}")
    finally:
        app.close()
        ca.stop()
