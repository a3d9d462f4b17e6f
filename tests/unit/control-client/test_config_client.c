// Unit tests for the snapshot decoder/validator (control-client/src/snapshot.c)
// and the CA client's CSR and chain validation (ca_client.c), with
// certificates made here in memory.
//
// Doubles as the driver the grpc integration tests use while seam-sidecar's
// main does not dispatch the subcommands yet:
//   test_config_client certify ARGS...       == seam-sidecar certify ARGS...
//   test_config_client config-watch ARGS...  == seam-sidecar config-watch ARGS...
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/bytestring.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "cc/ca_client.h"
#include "cc/config_client.h"
#include "sc/certify.h"
#include "sc/pem.h"

static EVP_PKEY *g_ca_key;
static X509 *g_ca;
static char *g_ca_pem;

static void add_ext(X509 *x, int nid, const char *val)
{
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, NULL, nid, val);
    assert_non_null(ext);
    assert_true(X509_add_ext(x, ext, -1));
    X509_EXTENSION_free(ext);
}

// make_cert_ext issues a certificate for |pub| signed by |signer_key|
// (self-signed CA when |issuer| is NULL), valid from now+|from_s| to
// now+|to_s|, with the given basicConstraints and keyUsage values and, when
// |uri| is not NULL, one critical URI SAN.
static X509 *make_cert_ext(EVP_PKEY *pub, EVP_PKEY *signer_key, X509 *issuer, const char *uri,
                           long from_s, long to_s, bool ca, const char *bc, const char *ku)
{
    X509 *x = X509_new();
    assert_non_null(x);
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 4242);
    X509_gmtime_adj(X509_getm_notBefore(x), from_s);
    X509_gmtime_adj(X509_getm_notAfter(x), to_s);
    X509_NAME *name = X509_NAME_new();
    if (ca) {
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const uint8_t *)"test root", -1, -1,
                                   0);
    }
    X509_set_subject_name(x, name);
    X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name);
    X509_NAME_free(name);
    X509_set_pubkey(x, pub);
    add_ext(x, NID_basic_constraints, bc);
    add_ext(x, NID_key_usage, ku);
    if (uri != NULL) {
        char san[512];
        snprintf(san, sizeof(san), "critical,URI:%s", uri);
        add_ext(x, NID_subject_alt_name, san);
    }
    assert_true(X509_sign(x, signer_key, EVP_sha256()) > 0);
    return x;
}

// make_cert issues a CA (keyCertSign, cRLSign) or a leaf (digitalSignature
// with one URI SAN) certificate; see make_cert_ext.
static X509 *make_cert(EVP_PKEY *pub, EVP_PKEY *signer_key, X509 *issuer, const char *uri,
                       long from_s, long to_s, bool ca)
{
    if (ca) {
        return make_cert_ext(pub, signer_key, issuer, NULL, from_s, to_s, true, "critical,CA:TRUE",
                             "critical,keyCertSign,cRLSign");
    }
    return make_cert_ext(pub, signer_key, issuer, uri, from_s, to_s, false, "critical,CA:FALSE",
                         "critical,digitalSignature");
}

static char *pem_of(X509 *x)
{
    char *out = sc_pem_cert(x);
    assert_non_null(out);
    return out;
}

static int setup(void **state)
{
    g_ca_key = cc_ca_new_key();
    g_ca = make_cert(g_ca_key, g_ca_key, NULL, NULL, -60, 3600, true);
    g_ca_pem = pem_of(g_ca);
    return 0;
}

static int teardown(void **state)
{
    EVP_PKEY_free(g_ca_key);
    X509_free(g_ca);
    free(g_ca_pem);
    return 0;
}

/* ---- snapshot ---- */

static void fill_valid(Seam__V1__Snapshot *s, Seam__V1__TrustBundle *tb, char **roots,
                       Seam__V1__InboundPort *port, Seam__V1__InboundPort **ports, char **allow,
                       Seam__V1__Service *svc, Seam__V1__Service **svcs, Seam__V1__Endpoint *ep,
                       Seam__V1__Endpoint **eps)
{
    seam__v1__snapshot__init(s);
    seam__v1__trust_bundle__init(tb);
    seam__v1__inbound_port__init(port);
    seam__v1__service__init(svc);
    seam__v1__endpoint__init(ep);
    roots[0] = g_ca_pem;
    tb->n_roots = 1;
    tb->roots = roots;
    s->trust_bundle = tb;
    allow[0] = (char *)"spiffe://cluster.local/ns/default/*";
    port->port = 8080;
    port->mode = SEAM__V1__INBOUND_MODE__STRICT;
    port->n_allow = 1;
    port->allow = allow;
    ports[0] = port;
    s->n_inbound_ports = 1;
    s->inbound_ports = ports;
    ep->address = (char *)"10.0.0.1";
    ep->port = 8080;
    ep->spiffe_id = (char *)"spiffe://cluster.local/ns/default/sa/web";
    eps[0] = ep;
    svc->name = (char *)"web";
    svc->n_endpoints = 1;
    svc->endpoints = eps;
    svcs[0] = svc;
    s->n_services = 1;
    s->services = svcs;
    s->outbound_policy = SEAM__V1__OUTBOUND_POLICY__REGISTRY_ONLY;
    s->cert_ttl_seconds = 3600;
}

#define SNAP_LOCALS                                                                                \
    Seam__V1__Snapshot s;                                                                          \
    Seam__V1__TrustBundle tb;                                                                      \
    char *roots[1];                                                                                \
    Seam__V1__InboundPort port, *ports[2];                                                         \
    char *allow[1];                                                                                \
    Seam__V1__Service svc, *svcs[1];                                                               \
    Seam__V1__Endpoint ep, *eps[1];                                                                \
    char err[512];                                                                                 \
    fill_valid(&s, &tb, roots, &port, ports, allow, &svc, svcs, &ep, eps)

static void test_snapshot_valid_roundtrip(void **state)
{
    SNAP_LOCALS;
    assert_int_equal(cc_snapshot_validate(&s, err, sizeof(err)), 0);
    Seam__V1__ConfigResponse r = SEAM__V1__CONFIG_RESPONSE__INIT;
    r.version_info = (char *)"v1";
    r.nonce = (char *)"n1";
    r.snapshot = &s;
    size_t n = seam__v1__config_response__get_packed_size(&r);
    uint8_t *buf = malloc(n);
    seam__v1__config_response__pack(&r, buf);
    char nonce[64];
    Seam__V1__ConfigResponse *d =
        cc_snapshot_decode(buf, n, err, sizeof(err), nonce, sizeof(nonce));
    assert_non_null(d);
    assert_string_equal(d->version_info, "v1");
    assert_string_equal(nonce, "n1");
    assert_int_equal(d->snapshot->inbound_ports[0]->port, 8080);
    seam__v1__config_response__free_unpacked(d, NULL);
    // Garbage does not parse; the error says so and no nonce is invented.
    assert_null(cc_snapshot_decode((const uint8_t *)"\xff\xff\xff", 3, err, sizeof(err), nonce,
                                   sizeof(nonce)));
    assert_non_null(strstr(err, "does not parse"));
    assert_string_equal(nonce, "");
    free(buf);
}

static void test_snapshot_invalid(void **state)
{
    {
        SNAP_LOCALS;
        tb.n_roots = 0;
        assert_int_equal(cc_snapshot_validate(&s, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "trust bundle"));
    }
    {
        SNAP_LOCALS;
        roots[0] = (char *)"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n";
        assert_int_equal(cc_snapshot_validate(&s, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "roots[0]"));
    }
    {
        SNAP_LOCALS;
        allow[0] = (char *)"spiffe://cluster.local/ns/*/sa/x";
        assert_int_equal(cc_snapshot_validate(&s, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "allow[0]"));
    }
    {
        SNAP_LOCALS;
        port.port = 70000;
        assert_int_equal(cc_snapshot_validate(&s, err, sizeof(err)), -1);
    }
    {
        SNAP_LOCALS;
        ports[1] = &port;
        s.n_inbound_ports = 2;
        assert_int_equal(cc_snapshot_validate(&s, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "twice"));
    }
    {
        SNAP_LOCALS;
        ep.spiffe_id = (char *)"http://not-spiffe";
        assert_int_equal(cc_snapshot_validate(&s, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "spiffe_id"));
    }
    {
        SNAP_LOCALS;
        svc.name = (char *)"";
        assert_int_equal(cc_snapshot_validate(&s, err, sizeof(err)), -1);
    }
    {
        SNAP_LOCALS;
        s.outbound_policy = 9;
        assert_int_equal(cc_snapshot_validate(&s, err, sizeof(err)), -1);
    }
    {
        SNAP_LOCALS;
        s.cert_ttl_seconds = -1;
        assert_int_equal(cc_snapshot_validate(&s, err, sizeof(err)), -1);
    }
    char err[64];
    assert_int_equal(cc_snapshot_validate(NULL, err, sizeof(err)), -1);
}

/* ---- CA client: CSR and chain validation ---- */

static void test_csr_shape(void **state)
{
    EVP_PKEY *key = cc_ca_new_key();
    const char *id = (char *)"spiffe://cluster.local/ns/default/sa/web";
    char *pem = cc_ca_make_csr(key, id);
    assert_non_null(pem);
    BIO *b = BIO_new_mem_buf(pem, (int)strlen(pem));
    X509_REQ *req = PEM_read_bio_X509_REQ(b, NULL, NULL, NULL);
    assert_non_null(req);
    assert_int_equal(X509_REQ_verify(req, key), 1);
    // Empty subject.
    assert_int_equal(X509_NAME_entry_count(X509_REQ_get_subject_name(req)), 0);
    // Exactly one extension: a critical SAN with exactly our URI.
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    assert_int_equal(sk_X509_EXTENSION_num(exts), 1);
    X509_EXTENSION *ext = sk_X509_EXTENSION_value(exts, 0);
    assert_int_equal(OBJ_obj2nid(X509_EXTENSION_get_object(ext)), NID_subject_alt_name);
    assert_true(X509_EXTENSION_get_critical(ext));
    GENERAL_NAMES *gens = X509V3_EXT_d2i(ext);
    assert_int_equal(sk_GENERAL_NAME_num(gens), 1);
    const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, 0);
    assert_int_equal(g->type, GEN_URI);
    assert_memory_equal(ASN1_STRING_get0_data(g->d.uniformResourceIdentifier), id, strlen(id));
    assert_int_equal(X509_REQ_get_signature_nid(req), NID_ecdsa_with_SHA256);
    GENERAL_NAMES_free(gens);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    BIO_free(b);
    free(pem);
    // The key PEM is PKCS#8.
    char *kp = cc_ca_key_pem(key);
    assert_non_null(strstr(kp, "BEGIN PRIVATE KEY"));
    free(kp);
    EVP_PKEY_free(key);
}

static enum cc_ca_error check(X509 *leaf, EVP_PKEY *key, const char *id, X509_STORE *store,
                              char *msg)
{
    STACK_OF(X509) *chain = sk_X509_new_null();
    sk_X509_push(chain, leaf);
    sk_X509_push(chain, g_ca);
    enum cc_ca_error e = cc_ca_validate_chain(chain, store, id, key, 0, msg, 256);
    sk_X509_free(chain);
    return e;
}

static void test_chain_validation(void **state)
{
    const char *id = (char *)"spiffe://cluster.local/ns/default/sa/web";
    EVP_PKEY *key = cc_ca_new_key();
    EVP_PKEY *other = cc_ca_new_key();
    X509_STORE *store = X509_STORE_new();
    X509_STORE_add_cert(store, g_ca);
    char msg[256];

    X509 *good = make_cert(key, g_ca_key, g_ca, id, -10, 600, false);
    assert_int_equal(check(good, key, id, store, msg), CC_CA_OK);

    X509 *wrong_id =
        make_cert(key, g_ca_key, g_ca, "spiffe://cluster.local/ns/evil/sa/x", -10, 600, false);
    assert_int_equal(check(wrong_id, key, id, store, msg), CC_CA_WRONG_ID);
    assert_non_null(strstr(msg, "ns/evil"));

    X509 *wrong_key = make_cert(other, g_ca_key, g_ca, id, -10, 600, false);
    assert_int_equal(check(wrong_key, key, id, store, msg), CC_CA_WRONG_KEY);

    X509 *expired = make_cert(key, g_ca_key, g_ca, id, -600, -60, false);
    assert_int_equal(check(expired, key, id, store, msg), CC_CA_EXPIRED);

    X509 *notyet = make_cert(key, g_ca_key, g_ca, id, 600, 1200, false);
    assert_int_equal(check(notyet, key, id, store, msg), CC_CA_NOT_YET_VALID);

    // Signed by a different CA than the one we trust.
    EVP_PKEY *rogue_key = cc_ca_new_key();
    X509 *rogue_ca = make_cert(rogue_key, rogue_key, NULL, NULL, -60, 3600, true);
    X509 *rogue = make_cert(key, rogue_key, rogue_ca, id, -10, 600, false);
    assert_int_equal(check(rogue, key, id, store, msg), CC_CA_UNTRUSTED);

    // A CA:TRUE certificate is never a leaf, even without keyCertSign
    // (X509_check_ca alone would let it through), and neither is a CA:FALSE
    // one that may sign certificates or CRLs.
    X509 *ca_no_kcs = make_cert_ext(key, g_ca_key, g_ca, id, -10, 600, false, "critical,CA:TRUE",
                                    "critical,digitalSignature");
    assert_int_equal(check(ca_no_kcs, key, id, store, msg), CC_CA_NOT_LEAF);
    X509 *kcs = make_cert_ext(key, g_ca_key, g_ca, id, -10, 600, false, "critical,CA:FALSE",
                              "critical,digitalSignature,keyCertSign");
    assert_int_equal(check(kcs, key, id, store, msg), CC_CA_NOT_LEAF);
    X509 *crl = make_cert_ext(key, g_ca_key, g_ca, id, -10, 600, false, "critical,CA:FALSE",
                              "critical,digitalSignature,cRLSign");
    assert_int_equal(check(crl, key, id, store, msg), CC_CA_NOT_LEAF);
    X509_free(ca_no_kcs);
    X509_free(kcs);
    X509_free(crl);

    STACK_OF(X509) *empty = sk_X509_new_null();
    assert_int_equal(cc_ca_validate_chain(empty, store, id, key, 0, msg, sizeof(msg)),
                     CC_CA_BAD_RESPONSE);
    sk_X509_free(empty);

    assert_string_equal(cc_ca_error_name(CC_CA_WRONG_ID), "wrong_identity");
    X509_free(good);
    X509_free(wrong_id);
    X509_free(wrong_key);
    X509_free(expired);
    X509_free(notyet);
    X509_free(rogue);
    X509_free(rogue_ca);
    EVP_PKEY_free(rogue_key);
    X509_STORE_free(store);
    EVP_PKEY_free(key);
    EVP_PKEY_free(other);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "certify") == 0) {
        return sc_cmd_certify(argc - 1, argv + 1);
    }
    if (argc > 1 && strcmp(argv[1], "config-watch") == 0) {
        return sc_cmd_config_watch(argc - 1, argv + 1);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_valid_roundtrip),
        cmocka_unit_test(test_snapshot_invalid),
        cmocka_unit_test(test_csr_shape),
        cmocka_unit_test(test_chain_validation),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
