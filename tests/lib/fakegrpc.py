"""Scaffolding shared by the fake gRPC servers of the integration tests
(Debian python3-grpcio with generic handlers, messages from `protoc
--python_out`): tests/integration/grpc/grpc_server.py,
tests/integration/reliability/fake_cp.py and
tests/integration/identity/fake_ca.py; and the test-side helpers that set
them up (a python with grpcio, generated modules, a TLS server certificate).

grpc, cryptography and pytest are imported where they are used: fake_cp.py
runs on a python that need not have cryptography, and the servers run
outside pytest. The servers are run as scripts; they put this directory on
sys.path themselves."""
import argparse
import json
import os
import subprocess
import sys
import threading
from concurrent import futures

import seamtest

LOOP = "127.0.0.1"


# --- test side -----------------------------------------------------------

def grpc_python(modules=("grpc", "google.protobuf"),
                skip_reason="python3-grpcio / python3-protobuf not installed"):
    """A python that can import |modules| (Debian's packages); skips the test if none can."""
    import pytest
    for py in (sys.executable, "/usr/bin/python3"):
        r = subprocess.run([py, "-c", "import " + ", ".join(modules)], capture_output=True)
        if r.returncode == 0:
            return py
    pytest.skip(skip_reason)


def protoc_python(out, *protos):
    """Runs protoc --python_out=out for |protos| (paths under proto/)."""
    proto = os.path.join(seamtest.SOURCE_DIR, "proto")
    subprocess.run(["protoc", f"-I{proto}", f"--python_out={out}", *protos], check=True, cwd=proto)


def server_cert(d, pki, days=30):
    """A TLS server certificate for 127.0.0.1/localhost signed by the gen.sh root
    in |pki|, written to d/srv.{pem,key}. Returns (cert path, key path)."""
    d = str(d)
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
                    f"{pki}/ca.key", "-CAcreateserial", "-days", str(days), "-sha256",
                    "-extfile", ext, "-out", crt], check=True, capture_output=True)
    return crt, key


# --- server side ---------------------------------------------------------

def arg_parser():
    """The command line every fake control-plane script takes: --port, --cert,
    --key (its TLS server certificate), --ca-cert (the trust root it hands
    out), --events (the JSON-lines file it writes) and --config (the JSON
    file it follows); a script adds its own flags."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--ca-cert", required=True)
    ap.add_argument("--events", required=True)
    ap.add_argument("--config", required=True)
    return ap


def passthrough(x):
    """Response serializer: the handlers return serialized bytes themselves."""
    return x


def unary_service(service, method, fn, request_cls):
    import grpc
    return grpc.method_handlers_generic_handler(service, {
        method: grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=request_cls.FromString, response_serializer=passthrough),
    })


def stream_service(service, method, fn, request_cls):
    import grpc
    return grpc.method_handlers_generic_handler(service, {
        method: grpc.stream_stream_rpc_method_handler(
            fn, request_deserializer=request_cls.FromString, response_serializer=passthrough),
    })


def serve_tls(handlers, cert, key, port=0, workers=8, options=()):
    """Starts a grpc server on 127.0.0.1:port (0: any) with TLS from the
    cert/key files; returns (server, port)."""
    import grpc
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                         options=[("grpc.so_reuseport", 0)] + list(options))
    server.add_generic_rpc_handlers(tuple(handlers))
    with open(key, "rb") as f:
        k = f.read()
    with open(cert, "rb") as f:
        c = f.read()
    port = server.add_secure_port(f"{LOOP}:{port}", grpc.ssl_server_credentials([(k, c)]))
    server.start()
    return server, port


class EventLog:
    """Appends one JSON object a line to |path| (thread-safe); with stamp=True
    each gets "t" (time.time())."""

    def __init__(self, path, stamp=False):
        self.path = path
        self.stamp = stamp
        self.lock = threading.Lock()

    def __call__(self, **kw):
        if self.stamp:
            import time
            kw["t"] = time.time()
        with self.lock, open(self.path, "a") as f:
            f.write(json.dumps(kw) + "\n")


def read_json(path):
    """The JSON in |path|, or None while it is missing or half written."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def config_snapshot(config_pb2, root, cfg, nonce):
    """The ConfigResponse the fakes push for |cfg| ({"version", "bad"}): the
    trust bundle |root|, inbound 8080 STRICT allowing ns/default (plus an
    invalid pattern if cfg["bad"]), one service web.default."""
    r = config_pb2.ConfigResponse(version_info=cfg["version"], nonce=nonce)
    s = r.snapshot
    s.trust_bundle.roots.append(root)
    s.trust_bundle.trust_domain = "cluster.local"
    p = s.inbound_ports.add(port=8080, mode=config_pb2.STRICT)
    p.allow.append("spiffe://cluster.local/ns/default/*")
    if cfg.get("bad"):
        p.allow.append("spiffe://cluster.local/*/broken")
    svc = s.services.add(name="web.default", port=80)
    svc.endpoints.add(address="127.0.0.1", port=8080,
                      spiffe_id="spiffe://cluster.local/ns/default/sa/web")
    s.outbound_policy = config_pb2.REGISTRY_ONLY
    s.cert_ttl_seconds = 3600
    return r


def read_acks(request_iterator, event):
    """Starts a thread that logs each later ConfigRequest of a stream as an
    "ack" or "nack" event; returns an Event set when the stream ends."""
    done = threading.Event()

    def reader():
        try:
            for r in request_iterator:
                if r.error_detail.message:
                    event(type="nack", version=r.version_info, nonce=r.response_nonce,
                          error=r.error_detail.message)
                else:
                    event(type="ack", version=r.version_info, nonce=r.response_nonce)
        except Exception:  # noqa: BLE001 - stream cancelled
            pass
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    return done


def load_ca(cert_path, key_path):
    """(certificate, private key) from PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    return cert, key


def issue_cert(pub, identity, ca_cert, ca_key, not_before, not_after, ca=False):
    """A certificate for |pub| with one URI SAN |identity| (empty subject,
    critical BasicConstraints CA=|ca|) signed by ca_key. Returns
    (cert PEM, CA cert PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(ca_cert.subject)
            .public_key(pub)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]),
                           critical=True)
            .sign(ca_key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            ca_cert.public_bytes(serialization.Encoding.PEM).decode())
