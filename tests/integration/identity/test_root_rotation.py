"""Root rotation (issue 5): the control plane adds a new root and issues from
it (POST /ca/rotate), later the old root is retired (POST /ca/retire) and
removed from the trust bundle file the sidecars read (--trust; the bundle is
replaced as a whole when the file changes). Long-lived and new connections
keep working throughout: zero failures, no restart.

The sidecars hold a leaf issued by a root new to their bundle back for a few
seconds (new-root grace), so that every peer reading the same bundle trusts
the new root before anyone presents a leaf chaining to it."""
import os
import time

from cryptography import x509

import idkit
import seamtest


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def roots_in(path):
    with open(path, "rb") as f:
        data = f.read()
    end = b"-----END CERTIFICATE-----"
    return [x509.load_pem_x509_certificate(block + end)
            for block in data.split(end) if b"-----BEGIN CERTIFICATE-----" in block]


def rfc4514(name):
    # /certs renders subjects OpenSSL-style: "/O=cluster.local/CN=seam root 1 xyz".
    return "".join(f"/{a.rfc4514_attribute_name}={a.value}" for a in name)


def test_root_rotation(procs, tmp_path):
    cp = idkit.ControlPlane(procs, tmp_path, ttl="10s")
    trust = os.path.join(str(tmp_path), "trust.pem")
    with open(cp.root, "rb") as f:
        write_atomic(trust, f.read())
    (old_root,) = roots_in(trust)
    app = idkit.EchoApp()
    try:
        tin, tout = idkit.tunnel_pair(procs, cp, app.port, trust=trust)
        for t in (tin, tout):
            assert t.certs()["leaf"]["issuer"] == rfc4514(old_root.subject)
        tr = idkit.Traffic(tout.port, long_lived=20, new_conn_interval=0.05).start()
        time.sleep(2)

        # 1. A new root: the control plane issues from it; the bundle holds both.
        print("\n" + cp.post("/ca/rotate").strip())
        both = roots_in(cp.root)
        assert len(both) == 2
        (new_root,) = [r for r in both if r.subject != old_root.subject]
        with open(cp.root, "rb") as f:
            write_atomic(trust, f.read())
        for t in (tin, tout):
            seamtest.wait_for(lambda t=t: idkit.metric(t.metrics(), "seam_trust_bundle_roots") == 2,
                              10, what="both roots in the bundle")
        for t in (tin, tout):
            seamtest.wait_for(
                lambda t=t: t.certs()["leaf"]["issuer"] == rfc4514(new_root.subject), 30,
                what="a leaf issued by the new root")

        # 2. Retire the old root: the bundle holds only the new one.
        print(cp.post("/ca/retire").strip())
        from cryptography.hazmat.primitives.serialization import Encoding
        write_atomic(trust, new_root.public_bytes(Encoding.PEM))
        for t in (tin, tout):
            seamtest.wait_for(lambda t=t: idkit.metric(t.metrics(), "seam_trust_bundle_roots") == 1,
                              10, what="only the new root in the bundle")
        # At least one more rotation on each side with the new bundle alone.
        marks = [len(t.installed_serials()) for t in (tin, tout)]
        for t, n in zip((tin, tout), marks):
            seamtest.wait_for(lambda t=t, n=n: len(t.installed_serials()) > n, 15,
                              what="a renewal under the new bundle")
        time.sleep(1)
        tr.stop()
        untrusted = [idkit.metric(t.metrics(), "seam_cert_renewals_total",
                                  'result="untrusted_chain"') for t in (tin, tout)]
        print(f"ROOT-ROTATION {tr.summary()} refused_renewals_untrusted(in,out)={untrusted}")
        assert not tr.failures, "\n".join(tr.failures[:20])
        assert tr.long_done == 20
        for t in (tin, tout):
            assert "tls.handshake_failed" not in t.proc.log()
            assert t.ready_status() == 200
    finally:
        app.close()
