"""An in-process grpcio CA (istio.v1.auth.IstioCertificateService/
CreateCertificate) whose answers a test switches at run time, to feed the
identity manager bad certificates. Like tests/integration/grpc/grpc_server.py
(whose modes are fixed per run) it is built on tests/lib/fakegrpc.py.

Modes: normal | wrong_id | wrong_key | expired | untrusted (signed by
another root) | not_leaf (CA:TRUE) | unavailable (gRPC UNAVAILABLE)."""
import datetime
import os
import sys
import threading

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

import fakegrpc

_pb = None


def ca_pb2(tmp):
    """istio.v1.auth ca_pb2, generated with protoc once per process."""
    global _pb
    if _pb is None:
        out = os.path.join(str(tmp), "pb")
        os.makedirs(out, exist_ok=True)
        fakegrpc.protoc_python(out, "istio/v1/auth/ca.proto")
        sys.path.insert(0, out)
        from istio.v1.auth import ca_pb2 as m  # noqa: E402
        _pb = m
    return _pb


class FakeCA:
    def __init__(self, tmp, pki, tokens):
        self.pb = ca_pb2(tmp)
        self.mode = "normal"
        self.calls = []
        self.lock = threading.Lock()
        self.tokens = dict(tokens)  # token -> SPIFFE ID
        self.ca = fakegrpc.load_ca(f"{pki}/ca.pem", f"{pki}/ca.key")
        self.rogue = fakegrpc.load_ca(f"{pki}/rogue-ca.pem", f"{pki}/rogue-ca.key")
        crt, key = fakegrpc.server_cert(tmp, pki, days=2)
        handler = fakegrpc.unary_service("istio.v1.auth.IstioCertificateService",
                                         "CreateCertificate", self._create,
                                         self.pb.IstioCertificateRequest)
        self.server, self.port = fakegrpc.serve_tls((handler,), crt, key, workers=4)

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
        chain = list(fakegrpc.issue_cert(pub, identity, ca_cert, ca_key, nb, na, ca=ca_flag))
        return self.pb.IstioCertificateResponse(cert_chain=chain).SerializeToString()
