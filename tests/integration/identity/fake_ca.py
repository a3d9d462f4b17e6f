"""An in-process grpcio CA (istio.v1.auth.IstioCertificateService/
CreateCertificate) whose answers a test switches at run time, to feed the
identity manager bad certificates. Adapted from tests/integration/grpc/
grpc_server.py (copied, not imported: that server's modes are fixed per run).

Modes: normal | wrong_id | wrong_key | expired | untrusted (signed by
another root) | not_leaf (CA:TRUE) | unavailable (gRPC UNAVAILABLE)."""
import datetime
import os
import subprocess
import sys
import threading
from concurrent import futures

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

import seamtest

_pb = None


def ca_pb2(tmp):
    """istio.v1.auth ca_pb2, generated with protoc once per process."""
    global _pb
    if _pb is None:
        out = os.path.join(str(tmp), "pb")
        os.makedirs(out, exist_ok=True)
        proto = os.path.join(seamtest.SOURCE_DIR, "proto")
        subprocess.run(["protoc", f"-I{proto}", f"--python_out={out}", "istio/v1/auth/ca.proto"],
                       check=True, cwd=proto)
        sys.path.insert(0, out)
        from istio.v1.auth import ca_pb2 as m  # noqa: E402
        _pb = m
    return _pb


def _load(cert_path, key_path):
    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    return cert, key


def server_cert(tmp, pki):
    """A TLS server certificate for 127.0.0.1/localhost signed by the gen.sh root."""
    d = str(tmp)
    ext = os.path.join(d, "srv.ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    key, csr, crt = (os.path.join(d, n) for n in ("srv.key", "srv.csr", "srv.pem"))
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", key], check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-new", "-key", key, "-subj", "/CN=localhost", "-out", csr],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", f"{pki}/ca.pem", "-CAkey",
                    f"{pki}/ca.key", "-CAcreateserial", "-days", "2", "-sha256", "-extfile", ext,
                    "-out", crt], check=True, capture_output=True)
    return crt, key


class FakeCA:
    def __init__(self, tmp, pki, tokens):
        self.pb = ca_pb2(tmp)
        self.mode = "normal"
        self.calls = []
        self.lock = threading.Lock()
        self.tokens = dict(tokens)  # token -> SPIFFE ID
        self.ca = _load(f"{pki}/ca.pem", f"{pki}/ca.key")
        self.rogue = _load(f"{pki}/rogue-ca.pem", f"{pki}/rogue-ca.key")
        crt, key = server_cert(tmp, pki)
        handler = grpc.method_handlers_generic_handler("istio.v1.auth.IstioCertificateService", {
            "CreateCertificate": grpc.unary_unary_rpc_method_handler(
                self._create,
                request_deserializer=self.pb.IstioCertificateRequest.FromString,
                response_serializer=lambda x: x),
        })
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                                  options=[("grpc.so_reuseport", 0)])
        self.server.add_generic_rpc_handlers((handler,))
        with open(key, "rb") as f:
            k = f.read()
        with open(crt, "rb") as f:
            c = f.read()
        self.port = self.server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(k, c)]))
        self.server.start()

    def stop(self):
        self.server.stop(grace=None)

    def _create(self, req, context):
        md = dict(context.invocation_metadata())
        auth = md.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown token")
        identity = self.tokens[auth[7:]]
        with self.lock:
            mode = self.mode
            self.calls.append(mode)
        if mode == "unavailable":
            context.abort(grpc.StatusCode.UNAVAILABLE, "CA is resting")
        csr = x509.load_pem_x509_csr(req.csr.encode())
        ca_cert, ca_key = self.ca
        pub = csr.public_key()
        now = datetime.datetime.utcnow()
        ttl = req.validity_duration if req.validity_duration > 0 else 60
        nb, na = now - datetime.timedelta(seconds=5), now + datetime.timedelta(seconds=ttl)
        ca_flag = False
        if mode == "wrong_id":
            identity = "spiffe://cluster.local/ns/evil/sa/mallory"
        elif mode == "wrong_key":
            pub = ec.generate_private_key(ec.SECP256R1()).public_key()
        elif mode == "expired":
            nb, na = now - datetime.timedelta(hours=2), now - datetime.timedelta(hours=1)
        elif mode == "untrusted":
            ca_cert, ca_key = self.rogue
        elif mode == "not_leaf":
            ca_flag = True
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([]))
                .issuer_name(ca_cert.subject)
                .public_key(pub)
                .serial_number(x509.random_serial_number())
                .not_valid_before(nb).not_valid_after(na)
                .add_extension(x509.BasicConstraints(ca=ca_flag, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(identity)]), critical=True)
                .sign(ca_key, hashes.SHA256()))
        chain = [cert.public_bytes(serialization.Encoding.PEM).decode(),
                 ca_cert.public_bytes(serialization.Encoding.PEM).decode()]
        return self.pb.IstioCertificateResponse(cert_chain=chain).SerializeToString()
