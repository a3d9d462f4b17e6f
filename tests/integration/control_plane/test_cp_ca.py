"""seam-control-plane CA against a real grpcio client (issue 4)."""
import concurrent.futures
import datetime
import os
import subprocess

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import seamtest
from cphelp import (ID_A, ID_B, ControlPlane, create_cert, make_csr, new_key, openssl_verify,
                    uri_sans)


@pytest.fixture(scope="module")
def cp(tmp_path_factory):
    procs = seamtest.Procs()
    c = ControlPlane(procs, tmp_path_factory.mktemp("cp"), extra=["--cert-ttl", "1h"])
    c.chan = c.channel()
    yield c
    c.chan.close()
    assert procs.items[0].stop() == 0, "SIGTERM must exit 0"
    procs.stop_all()


def load_chain(resp):
    return [x509.load_pem_x509_certificate(p.encode()) for p in resp.cert_chain]


def test_issue_leaf_with_token_identity(cp, tmp_path):
    key = new_key()
    resp = create_cert(cp.chan, "tok-a", make_csr(key, uri=ID_A), ttl=120)
    assert len(resp.cert_chain) == 2
    assert all(p.endswith("\n") for p in resp.cert_chain)
    leaf, root = load_chain(resp)
    san, uris = uri_sans(leaf)
    assert uris == [ID_A] and san.critical
    assert leaf.subject == x509.Name([])
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert (leaf.not_valid_after - leaf.not_valid_before) == datetime.timedelta(seconds=120)
    with open(cp.root) as f:
        roots = f.read()
    assert root.public_bytes(serialization.Encoding.PEM).decode() in roots
    ok, out = openssl_verify(tmp_path, list(resp.cert_chain), roots)
    assert ok, out
    assert list(resp.root_cert.ca_cert) and resp.root_cert.ca_cert[-1] == resp.cert_chain[-1]


def test_csr_without_san_gets_caller_identity_and_ttl_is_clamped(cp):
    resp = create_cert(cp.chan, "tok-b", make_csr(new_key()), ttl=10 * 24 * 3600)
    leaf = load_chain(resp)[0]
    assert uri_sans(leaf)[1] == [ID_B]
    assert (leaf.not_valid_after - leaf.not_valid_before) == datetime.timedelta(hours=1)
    resp = create_cert(cp.chan, "tok-b", make_csr(new_key()), ttl=0)
    leaf = load_chain(resp)[0]
    assert (leaf.not_valid_after - leaf.not_valid_before) == datetime.timedelta(hours=1)


def test_serials_are_random_and_distinct(cp):
    serials = {load_chain(create_cert(cp.chan, "tok-a", make_csr(new_key())))[0].serial_number
               for _ in range(5)}
    assert len(serials) == 5


@pytest.mark.parametrize("token", ["nope", "", None])
def test_unknown_or_missing_token_is_unauthenticated(cp, token):
    with pytest.raises(grpc.RpcError) as e:
        create_cert(cp.chan, token, make_csr(new_key(), uri=ID_A))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_foreign_identity_csr_is_permission_denied(cp):
    with pytest.raises(grpc.RpcError) as e:
        create_cert(cp.chan, "tok-a", make_csr(new_key(), uri=ID_B))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert ID_B in e.value.details()


def test_two_uri_sans_is_invalid_argument(cp):
    with pytest.raises(grpc.RpcError) as e:
        create_cert(cp.chan, "tok-a", make_csr(new_key(), uri=[ID_A, ID_B]))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("csr", ["not a csr", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                                 "-----END CERTIFICATE REQUEST-----\n", ""])
def test_malformed_csr_is_invalid_argument(cp, csr):
    with pytest.raises(grpc.RpcError) as e:
        create_cert(cp.chan, "tok-a", csr)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_tampered_csr_signature_is_invalid_argument(cp):
    from cryptography.hazmat.primitives.serialization import Encoding
    csr = x509.load_pem_x509_csr(make_csr(new_key(), uri=ID_A).encode())
    der = bytearray(csr.public_bytes(Encoding.DER))
    der[-3] ^= 0x55  # inside the signature
    import base64
    pem = "-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(bytes(der)).decode() + \
          "-----END CERTIFICATE REQUEST-----\n"
    with pytest.raises(grpc.RpcError) as e:
        create_cert(cp.chan, "tok-a", pem)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_10mib_request_is_resource_exhausted_and_server_keeps_serving(cp):
    big = "x" * (10 << 20)
    with pytest.raises(grpc.RpcError) as e:
        create_cert(cp.chan, "tok-a", big, timeout=30)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Same channel, and a fresh one, still work.
    assert create_cert(cp.chan, "tok-a", make_csr(new_key(), uri=ID_A)).cert_chain
    ch = cp.channel()
    assert create_cert(ch, "tok-a", make_csr(new_key(), uri=ID_A)).cert_chain
    ch.close()
    m = cp.metrics()
    assert 'seam_cp_certificates_issued_total{result="RESOURCE_EXHAUSTED"} 1' in m


def test_50_concurrent_requests_succeed(cp):
    keys = [new_key() for _ in range(50)]
    csrs = [make_csr(k, uri=ID_A) for k in keys]
    chans = [cp.channel(**{"grpc.use_local_subchannel_pool": 1}) for _ in range(5)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as ex:
        futs = [ex.submit(create_cert, chans[i % 5], "tok-a", csrs[i], 300, 30)
                for i in range(50)]
        results = [f.result(timeout=60) for f in futs]
    for ch in chans:
        ch.close()
    for k, r in zip(keys, results):
        leaf = load_chain(r)[0]
        assert leaf.public_key().public_numbers() == k.public_key().public_numbers()
        assert uri_sans(leaf)[1] == [ID_A]


def test_unknown_method_is_unimplemented(cp):
    call = cp.chan.unary_unary("/istio.v1.auth.IstioCertificateService/Nope",
                               request_serializer=lambda b: b, response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as e:
        call(b"", timeout=10)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_request_that_does_not_parse_is_invalid_argument(cp):
    call = cp.chan.unary_unary("/istio.v1.auth.IstioCertificateService/CreateCertificate",
                               request_serializer=lambda b: b, response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as e:
        call(b"\xff\xff\xff\xff", metadata=[("authorization", "Bearer tok-a")], timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_tokens_file_reload(cp):
    with open(cp.tokens, "a") as f:
        f.write("tok-c: spiffe://cluster.local/ns/other/sa/c\n")
    resp = seamtest.wait_for(lambda: create_cert(cp.chan, "tok-c", make_csr(new_key())),
                             timeout=10, what="new token accepted")
    assert uri_sans(load_chain(resp)[0])[1] == ["spiffe://cluster.local/ns/other/sa/c"]


def test_metrics_count_issued(cp):
    m = cp.metrics()
    ok = [l for l in m.splitlines() if l.startswith('seam_cp_certificates_issued_total{result="OK"}')]
    assert ok and float(ok[0].split()[-1]) >= 50
    assert 'seam_cp_certificates_issued_total{result="UNAUTHENTICATED"}' in m


def test_loaded_intermediate_ca_chain(procs, tmp_path):
    """--ca-cert with an intermediate: the chain is leaf, intermediate, root."""
    d = str(tmp_path)
    def run(*a):
        subprocess.run(a, check=True, capture_output=True, cwd=d)
    run("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "root.key")
    run("openssl", "req", "-x509", "-new", "-key", "root.key", "-subj", "/O=t/CN=t root",
        "-days", "30", "-out", "root.pem", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "int.key")
    run("openssl", "req", "-new", "-key", "int.key", "-subj", "/O=t/CN=t int", "-out", "int.csr")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
    run("openssl", "x509", "-req", "-in", "int.csr", "-CA", "root.pem", "-CAkey", "root.key",
        "-CAcreateserial", "-days", "20", "-extfile", "ext.cnf", "-out", "int.pem")
    with open(os.path.join(d, "bundle.pem"), "w") as f:
        f.write(open(os.path.join(d, "int.pem")).read() + open(os.path.join(d, "root.pem")).read())
    c = ControlPlane(procs, tmp_path, extra=["--ca-cert", os.path.join(d, "bundle.pem"),
                                             "--ca-key", os.path.join(d, "int.key")])
    ch = c.channel()
    resp = create_cert(ch, "tok-a", make_csr(new_key(), uri=ID_A))
    ch.close()
    assert len(resp.cert_chain) == 3
    ok, out = openssl_verify(tmp_path, list(resp.cert_chain), open(os.path.join(d, "root.pem")).read(), "i")
    assert ok, out
    assert resp.cert_chain[2] == open(os.path.join(d, "root.pem")).read()


def test_ipv6_listener_with_ip_san(procs, tmp_path):
    c = ControlPlane(procs, tmp_path, listen_host="::1")
    with open(c.root, "rb") as f:
        creds = grpc.ssl_channel_credentials(f.read())
    ch = grpc.secure_channel(f"[::1]:{c.port}", creds)  # verified against the ::1 IP SAN
    resp = create_cert(ch, "tok-a", make_csr(new_key(), uri=ID_A))
    ch.close()
    assert uri_sans(load_chain(resp)[0])[1] == [ID_A]
