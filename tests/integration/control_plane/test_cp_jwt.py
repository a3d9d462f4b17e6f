"""Kubernetes mode: projected service-account JWTs verified offline (issue 4)."""
import json
import os
import subprocess
import time

import grpc
import pytest
from cryptography.hazmat.primitives import serialization

import seamtest
from cphelp import ControlPlane, b64u, create_cert, jwt_sign, make_csr, new_key, uri_sans
from cryptography import x509

AUD = "seam-ca"


def openssl(*a, cwd):
    subprocess.run(["openssl", *a], check=True, capture_output=True, cwd=cwd)


def pubkey(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), None).public_key()


@pytest.fixture(scope="module")
def cp(tmp_path_factory):
    d = tmp_path_factory.mktemp("jwt")
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa.key",
            cwd=d)
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "evil.key",
            cwd=d)
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ec.sec1", cwd=d)
    openssl("pkcs8", "-topk8", "-nocrypt", "-in", "ec.sec1", "-out", "ec.key", cwd=d)
    rsa = pubkey(d / "rsa.key").public_numbers()
    ec = pubkey(d / "ec.key").public_numbers()
    jwks = {"keys": [
        {"kty": "RSA", "kid": "r1", "use": "sig", "alg": "RS256",
         "n": b64u(rsa.n.to_bytes((rsa.n.bit_length() + 7) // 8, "big")),
         "e": b64u(rsa.e.to_bytes(3, "big"))},
        {"kty": "EC", "kid": "e1", "crv": "P-256",
         "x": b64u(ec.x.to_bytes(32, "big")), "y": b64u(ec.y.to_bytes(32, "big"))},
    ]}
    (d / "jwks.json").write_text(json.dumps(jwks))
    procs = seamtest.Procs()
    c = ControlPlane(procs, d, auth="jwks",
                     extra=["--jwks", str(d / "jwks.json"), "--audience", AUD,
                            "--trust-domain", "cluster.local"])
    c.dir = d
    c.chan = c.channel()
    yield c
    c.chan.close()
    procs.stop_all()


def claims(**kw):
    now = int(time.time())
    c = {"aud": [AUD], "exp": now + 600, "iat": now, "nbf": now - 5, "iss": "https://k8s",
         "sub": "system:serviceaccount:shop:cart",
         "kubernetes.io": {"namespace": "shop", "serviceaccount": {"name": "cart", "uid": "u"}}}
    c.update(kw)
    return c


def issue(cp, token):
    return create_cert(cp.chan, token, make_csr(new_key()))


def leaf_id(resp):
    return uri_sans(x509.load_pem_x509_certificate(resp.cert_chain[0].encode()))[1]


def test_rs256_good_token(cp):
    tok = jwt_sign(str(cp.dir / "rsa.key"), "RS256", claims(), kid="r1")
    assert leaf_id(issue(cp, tok)) == ["spiffe://cluster.local/ns/shop/sa/cart"]


def test_es256_good_token_with_sub_only(cp):
    c = claims(aud=AUD)
    del c["kubernetes.io"]
    c["sub"] = "system:serviceaccount:default:web"
    tok = jwt_sign(str(cp.dir / "ec.key"), "ES256", c)
    assert leaf_id(issue(cp, tok)) == ["spiffe://cluster.local/ns/default/sa/web"]


@pytest.mark.parametrize("name,mk", [
    ("wrong audience", lambda d: jwt_sign(str(d / "rsa.key"), "RS256", claims(aud=["other"]))),
    ("expired", lambda d: jwt_sign(str(d / "rsa.key"), "RS256",
                                   claims(exp=int(time.time()) - 60))),
    ("not yet valid", lambda d: jwt_sign(str(d / "rsa.key"), "RS256",
                                         claims(nbf=int(time.time()) + 600))),
    ("bad signature", lambda d: jwt_sign(str(d / "evil.key"), "RS256", claims(), kid="r1")),
    ("tampered payload", lambda d: (lambda t: t.split(".")[0] + "." + b64u(json.dumps(
        claims(**{"kubernetes.io": {"namespace": "kube-system",
                                    "serviceaccount": {"name": "admin"}}})).encode())
        + "." + t.split(".")[2])(jwt_sign(str(d / "rsa.key"), "RS256", claims()))),
    ("alg none", lambda d: b64u(b'{"alg":"none"}') + "." + b64u(json.dumps(claims()).encode())
     + "."),
    ("no exp", lambda d: jwt_sign(str(d / "rsa.key"), "RS256",
                                  {k: v for k, v in claims().items() if k != "exp"})),
    ("garbage", lambda d: "abc.def"),
])
def test_bad_tokens_are_unauthenticated(cp, name, mk):
    with pytest.raises(grpc.RpcError) as e:
        issue(cp, mk(cp.dir))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
    why = {"tampered payload": "bad signature", "alg none": "unsupported alg",
           "no exp": "missing exp", "garbage": "not a JWS"}.get(name, name)
    cp.proc.wait_log(f'reason="{why}', timeout=5)


def test_jwks_file_reload_adds_a_key(cp):
    d = cp.dir
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ec2.sec1", cwd=d)
    openssl("pkcs8", "-topk8", "-nocrypt", "-in", "ec2.sec1", "-out", "ec2.key", cwd=d)
    tok = jwt_sign(str(d / "ec2.key"), "ES256", claims(), kid="e2")
    with pytest.raises(grpc.RpcError):
        issue(cp, tok)
    pub = pubkey(d / "ec2.key").public_numbers()
    jwks = json.loads((d / "jwks.json").read_text())
    jwks["keys"].append({"kty": "EC", "kid": "e2", "crv": "P-256",
                         "x": b64u(pub.x.to_bytes(32, "big")), "y": b64u(pub.y.to_bytes(32, "big"))})
    (d / "jwks.new").write_text(json.dumps(jwks))
    os.replace(d / "jwks.new", d / "jwks.json")
    resp = seamtest.wait_for(lambda: issue(cp, tok), timeout=10, what="new JWKS key accepted")
    assert leaf_id(resp) == ["spiffe://cluster.local/ns/shop/sa/cart"]
    # A broken JWKS file is refused and the loaded keys stay.
    (d / "jwks.new").write_text("{not json")
    os.replace(d / "jwks.new", d / "jwks.json")
    cp.proc.wait_log("cp.auth_reload_failed", timeout=10)
    assert leaf_id(issue(cp, tok)) == ["spiffe://cluster.local/ns/shop/sa/cart"]
