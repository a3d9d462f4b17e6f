"""Helpers for the control-plane integration tests: generated protobuf
modules (protoc --python_out into a temp dir), a control-plane process,
CSRs built with python3-cryptography, and a grpcio channel."""
import atexit
import base64
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.request

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

import seamtest

TD = "cluster.local"
ID_A = "spiffe://cluster.local/ns/default/sa/a"
ID_B = "spiffe://cluster.local/ns/default/sa/b"
CA_PATH = "/istio.v1.auth.IstioCertificateService/CreateCertificate"
CFG_PATH = "/seam.v1.ConfigDiscovery/StreamConfig"

_pb = None


def pb():
    """(ca_pb2, config_pb2), generated once per process from proto/."""
    global _pb
    if _pb is None:
        out = tempfile.mkdtemp(prefix="seam-pb-")
        atexit.register(shutil.rmtree, out, True)
        proto = os.path.join(seamtest.SOURCE_DIR, "proto")
        subprocess.run(["protoc", f"-I{proto}", f"--python_out={out}",
                        "istio/v1/auth/ca.proto", "seam/v1/config.proto"],
                       check=True, cwd=proto)
        sys.path.insert(0, out)
        from istio.v1.auth import ca_pb2  # noqa: E402
        from seam.v1 import config_pb2  # noqa: E402
        _pb = (ca_pb2, config_pb2)
    return _pb


MESH = """\
trust_domain: cluster.local
cert_ttl: 30m
outbound_policy: REGISTRY_ONLY
services:
  - name: web.default.svc.cluster.local
    port: 8080
    endpoints:
      - address: 127.0.0.1
        port: 8080
        spiffe_id: spiffe://cluster.local/ns/default/sa/web
inbound:
  - port: 8080
    mode: STRICT
    allow:
      - spiffe://cluster.local/ns/default/sa/a
"""


class ControlPlane:
    def __init__(self, procs, tmp, extra=(), tokens=None, mesh=MESH, auth="tokens",
                 listen_host="127.0.0.1"):
        self.tmp = str(tmp)
        self.port = seamtest.free_port(listen_host)
        self.admin_port = seamtest.free_port()
        self.root = os.path.join(self.tmp, "root.pem")
        self.mesh = os.path.join(self.tmp, "mesh.yaml")
        with open(self.mesh, "w") as f:
            f.write(mesh)
        args = [seamtest.binary("seam-control-plane"),
                "--listen", (f"[{listen_host}]:{self.port}" if ":" in listen_host
                             else f"{listen_host}:{self.port}"),
                "--admin", f"127.0.0.1:{self.admin_port}",
                "--mesh", self.mesh, "--root-out", self.root]
        if auth == "tokens":
            self.tokens = os.path.join(self.tmp, "tokens.yaml")
            with open(self.tokens, "w") as f:
                f.write(tokens or f"tok-a: {ID_A}\ntok-b: {ID_B}\n")
            args += ["--tokens", self.tokens]
        args += list(extra)
        self.proc = procs.start(args)
        self.proc.wait_log("cp.ready", timeout=15)
        self._chan = None

    def channel(self, **opts):
        with open(self.root, "rb") as f:
            creds = grpc.ssl_channel_credentials(f.read())
        options = [("grpc.max_send_message_length", 64 << 20),
                   ("grpc.max_receive_message_length", 64 << 20)]
        options += list(opts.items())
        return grpc.secure_channel(f"localhost:{self.port}", creds, options=options)

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def metric(self, name):
        for line in self.metrics().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                if line.split(" ")[0] == name or name.endswith("}"):
                    return float(line.rsplit(" ", 1)[1])
        return None

    def post(self, path):
        req = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}{path}", method="POST",
                                     data=b"")
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read().decode()


def new_key():
    return ec.generate_private_key(ec.SECP256R1())


def make_csr(key, uri=None, dns=None):
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    names = []
    if uri:
        names += [x509.UniformResourceIdentifier(u) for u in ([uri] if isinstance(uri, str) else uri)]
    if dns:
        names.append(x509.DNSName(dns))
    if names:
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=True)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def create_cert(chan, token, csr, ttl=0, timeout=10):
    ca_pb2, _ = pb()
    call = chan.unary_unary(CA_PATH, request_serializer=ca_pb2.IstioCertificateRequest.SerializeToString,
                            response_deserializer=ca_pb2.IstioCertificateResponse.FromString)
    md = [("authorization", f"Bearer {token}")] if token is not None else []
    return call(ca_pb2.IstioCertificateRequest(csr=csr, validity_duration=ttl), metadata=md,
                timeout=timeout)


def uri_sans(cert):
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return san, san.value.get_values_for_type(x509.UniformResourceIdentifier)


def openssl_verify(tmp, chain_pems, roots_pem, name="v"):
    """openssl verify of leaf (chain[0]) with intermediates chain[1:-1] against roots."""
    leaf = os.path.join(str(tmp), f"{name}-leaf.pem")
    inter = os.path.join(str(tmp), f"{name}-inter.pem")
    roots = os.path.join(str(tmp), f"{name}-roots.pem")
    with open(leaf, "w") as f:
        f.write(chain_pems[0])
    with open(inter, "w") as f:
        f.write("".join(chain_pems[1:]))
    with open(roots, "w") as f:
        f.write(roots_pem)
    r = subprocess.run(["openssl", "verify", "-purpose", "sslclient", "-CAfile", roots,
                        "-untrusted", inter, leaf], capture_output=True, text=True)
    return r.returncode == 0, r.stdout + r.stderr


class ConfigStream:
    """A bidi StreamConfig call driven from a request queue."""

    def __init__(self, chan, node_id, token=None):
        _, cfg = pb()
        self.cfg = cfg
        self.q = queue.Queue()
        call = chan.stream_stream(CFG_PATH, request_serializer=cfg.ConfigRequest.SerializeToString,
                                  response_deserializer=cfg.ConfigResponse.FromString)
        md = [("authorization", f"Bearer {token}")] if token else []
        self.q.put(cfg.ConfigRequest(node=cfg.Node(id=node_id)))
        self.responses = call(iter(self.q.get, None), metadata=md)
        self.got = queue.Queue()
        self.error = None
        self.t = threading.Thread(target=self._reader, daemon=True)
        self.t.start()

    def _reader(self):
        try:
            for r in self.responses:
                self.got.put(r)
        except grpc.RpcError as e:  # noqa: PERF203
            self.error = e
            self.got.put(e)

    def next(self, timeout=10):
        r = self.got.get(timeout=timeout)
        if isinstance(r, Exception):
            raise r
        return r

    def ack(self, resp):
        self.q.put(self.cfg.ConfigRequest(version_info=resp.version_info,
                                          response_nonce=resp.nonce))

    def nack(self, resp, prev_version, msg="bad config"):
        self.q.put(self.cfg.ConfigRequest(version_info=prev_version, response_nonce=resp.nonce,
                                          error_detail=self.cfg.ErrorDetail(code=3, message=msg)))

    def close(self):
        self.q.put(None)
        self.responses.cancel()


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt_sign(key_pem_path, alg, claims, kid=None):
    """Signs a JWT with the openssl CLI (RS256 or ES256)."""
    hdr = {"alg": alg, "typ": "JWT"}
    if kid:
        hdr["kid"] = kid
    signing_input = (b64u(json.dumps(hdr).encode()) + "." + b64u(json.dumps(claims).encode()))
    r = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key_pem_path],
                       input=signing_input.encode(), capture_output=True, check=True)
    sig = r.stdout
    if alg == "ES256":
        # DER ECDSA-Sig-Value -> r || s (32 bytes each), RFC 7518 §3.4.
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
        rr, ss = decode_dss_signature(sig)
        sig = rr.to_bytes(32, "big") + ss.to_bytes(32, "big")
    return signing_input + "." + b64u(sig)
