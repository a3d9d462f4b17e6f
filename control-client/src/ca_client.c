// ca_client.c — CSR, CreateCertificate call and validation of the issued
// chain (DESIGN.md §2, PROTOCOLS.md §2.1). The private key never leaves
// memory here; cc_ca_key_pem exists only for `certify --out-dir`.
#include "cc/ca_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/bytestring.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "istio/v1/auth/ca.pb-c.h"
#include "sc/err.h"
#include "sc/pem.h"
#include "sc/spiffe.h"

const char *cc_ca_error_name(enum cc_ca_error e)
{
    switch (e) {
    case CC_CA_OK:
        return "ok";
    case CC_CA_RPC:
        return "rpc_failed";
    case CC_CA_BAD_RESPONSE:
        return "bad_response";
    case CC_CA_UNTRUSTED:
        return "untrusted_chain";
    case CC_CA_WRONG_ID:
        return "wrong_identity";
    case CC_CA_WRONG_KEY:
        return "wrong_key";
    case CC_CA_EXPIRED:
        return "expired";
    case CC_CA_NOT_YET_VALID:
        return "not_yet_valid";
    case CC_CA_NOT_LEAF:
        return "not_a_leaf";
    case CC_CA_LOCAL:
        return "local_error";
    }
    return "unknown";
}

EVP_PKEY *cc_ca_new_key(void)
{
    return sc_pem_new_p256_key();
}

char *cc_ca_make_csr(EVP_PKEY *key, const char *spiffe_id)
{
    char *out = NULL;
    X509_REQ *req = X509_REQ_new();
    STACK_OF(X509_EXTENSION) *exts = NULL;
    GENERAL_NAMES *gens = GENERAL_NAMES_new();
    GENERAL_NAME *gen = GENERAL_NAME_new();
    ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
    BIO *mem = BIO_new(BIO_s_mem());
    if (req == NULL || gens == NULL || gen == NULL || ia5 == NULL || mem == NULL) {
        goto out_free;
    }
    if (!ASN1_STRING_set(ia5, spiffe_id, (int)strlen(spiffe_id))) {
        goto out_free;
    }
    GENERAL_NAME_set0_value(gen, GEN_URI, ia5);
    ia5 = NULL;
    if (!sk_GENERAL_NAME_push(gens, gen)) {
        goto out_free;
    }
    gen = NULL;
    // Empty subject, one critical URI SAN (istio-csr's rule), ECDSA-SHA256.
    if (!X509_REQ_set_version(req, X509_REQ_VERSION_1) || !X509_REQ_set_pubkey(req, key) ||
        X509V3_add1_i2d(&exts, NID_subject_alt_name, gens, 1, X509V3_ADD_DEFAULT) != 1 ||
        !X509_REQ_add_extensions(req, exts) || X509_REQ_sign(req, key, EVP_sha256()) <= 0 ||
        !PEM_write_bio_X509_REQ(mem, req)) {
        goto out_free;
    }
    out = sc_pem_bio_string(mem);

out_free:
    BIO_free(mem);
    ASN1_IA5STRING_free(ia5);
    GENERAL_NAME_free(gen);
    GENERAL_NAMES_free(gens);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    ERR_clear_error();
    return out;
}

char *cc_ca_key_pem(EVP_PKEY *key)
{
    BIO *mem = BIO_new(BIO_s_mem());
    if (mem == NULL) {
        return NULL;
    }
    char *out = NULL;
    if (PEM_write_bio_PKCS8PrivateKey(mem, key, NULL, NULL, 0, NULL, NULL)) {
        out = sc_pem_bio_string(mem);
    }
    // Wipe the BIO's copy of the key before freeing it.
    const uint8_t *data;
    size_t len;
    if (BIO_mem_contents(mem, &data, &len) && len > 0) {
        OPENSSL_cleanse((void *)data, len);
    }
    BIO_free(mem);
    return out;
}

X509_STORE *cc_ca_load_trust(const char *file, char *err, size_t err_len)
{
    X509_STORE *store = X509_STORE_new();
    int count = store != NULL ? sc_pem_add_trust_file(store, file) : 0;
    if (count < 0) {
        snprintf(err, err_len, "cannot read trust file %s: %s", file, strerror(-count));
        X509_STORE_free(store);
        return NULL;
    }
    if (count == 0) {
        snprintf(err, err_len, "trust file %s holds no PEM certificate", file);
        X509_STORE_free(store);
        return NULL;
    }
    return store;
}

// leaf_uri_sans counts the URI SANs of |leaf| and copies the first into |out|.
static int leaf_uri_sans(X509 *leaf, char *out, size_t cap)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    int n = 0;
    out[0] = '\0';
    for (size_t i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_URI) {
            continue;
        }
        const ASN1_STRING *s = g->d.uniformResourceIdentifier;
        if (n == 0) {
            size_t len = (size_t)ASN1_STRING_length(s);
            if (len >= cap || memchr(ASN1_STRING_get0_data(s), 0, len) != NULL) {
                len = 0; // too long or embedded NUL: never equals an ID
            }
            memcpy(out, ASN1_STRING_get0_data(s), len);
            out[len] = '\0';
        }
        n++;
    }
    GENERAL_NAMES_free(gens);
    return n;
}

enum cc_ca_error cc_ca_validate_chain(STACK_OF(X509) * chain, X509_STORE *trust,
                                      const char *spiffe_id, EVP_PKEY *key, time_t now, char *msg,
                                      size_t msg_len)
{
    if (chain == NULL || sk_X509_num(chain) == 0) {
        snprintf(msg, msg_len, "empty certificate chain");
        return CC_CA_BAD_RESPONSE;
    }
    X509 *leaf = sk_X509_value(chain, 0);
    char id[2048];
    int n = leaf_uri_sans(leaf, id, sizeof(id));
    if (n != 1 || !sc_spiffe_id_equal(id, spiffe_id)) {
        snprintf(msg, msg_len, "issued certificate is for %s%s, not our identity %s",
                 n == 0 ? "no URI SAN" : id, n > 1 ? " (and more URI SANs)" : "", spiffe_id);
        return CC_CA_WRONG_ID;
    }
    EVP_PKEY *pub = X509_get_pubkey(leaf);
    int same = pub != NULL && EVP_PKEY_cmp(pub, key) == 1;
    EVP_PKEY_free(pub);
    if (!same) {
        ERR_clear_error();
        snprintf(msg, msg_len, "issued certificate does not carry our public key");
        return CC_CA_WRONG_KEY;
    }
    // The SVID leaf rules (PROTOCOLS.md §3), as the data-path verifier applies
    // them: X509_check_ca() alone misses a CA:TRUE certificate whose keyUsage
    // lacks keyCertSign, so test the basicConstraints flag and the key usage.
    uint32_t ku = X509_get_key_usage(leaf);
    if ((X509_get_extension_flags(leaf) & EXFLAG_CA) ||
        (ku != UINT32_MAX && (ku & (KU_KEY_CERT_SIGN | KU_CRL_SIGN)))) {
        snprintf(msg, msg_len, "issued certificate is a CA certificate or may sign, not a leaf");
        return CC_CA_NOT_LEAF;
    }
    // Intermediates come from the response; roots only from our trust store.
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    for (size_t i = 1; untrusted != NULL && i < sk_X509_num(chain); i++) {
        sk_X509_push(untrusted, sk_X509_value(chain, i));
    }
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    enum cc_ca_error rc = CC_CA_LOCAL;
    if (untrusted == NULL || ctx == NULL || !X509_STORE_CTX_init(ctx, trust, leaf, untrusted)) {
        snprintf(msg, msg_len, "cannot set up chain verification");
        goto out_free;
    }
    if (now != 0) {
        X509_STORE_CTX_set_time(ctx, 0, now);
    }
    if (X509_verify_cert(ctx) == 1) {
        rc = CC_CA_OK;
        msg[0] = '\0';
        goto out_free;
    }
    int err = X509_STORE_CTX_get_error(ctx);
    switch (err) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
        rc = CC_CA_EXPIRED;
        break;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        rc = CC_CA_NOT_YET_VALID;
        break;
    default:
        rc = CC_CA_UNTRUSTED;
        break;
    }
    snprintf(msg, msg_len, "issued chain failed verification at depth %d: %s",
             X509_STORE_CTX_get_error_depth(ctx), X509_verify_cert_error_string(err));

out_free:
    X509_STORE_CTX_free(ctx);
    sk_X509_free(untrusted);
    ERR_clear_error();
    return rc;
}

struct certify {
    cc_ca_done_cb cb;
    void *arg;
    char *spiffe_id;
    X509_STORE *trust;
    struct cc_ca_result res;
};

static time_t asn1_to_time(const ASN1_TIME *t)
{
    int days = 0, secs = 0;
    time_t now = time(NULL);
    if (!ASN1_TIME_diff(&days, &secs, NULL, t)) {
        return 0;
    }
    return now + (time_t)days * 86400 + secs;
}

// parse_chain decodes the PEM elements of the response into |res|.
static int parse_chain(struct cc_ca_result *res, Istio__V1__Auth__IstioCertificateResponse *resp)
{
    res->chain = sk_X509_new_null();
    BIO *pem = BIO_new(BIO_s_mem());
    if (res->chain == NULL || pem == NULL) {
        BIO_free(pem);
        return -1;
    }
    for (size_t i = 0; i < resp->n_cert_chain; i++) {
        const char *s = resp->cert_chain[i];
        BIO *b = BIO_new_mem_buf(s, (int)strlen(s));
        X509 *x;
        int in_elem = 0;
        // One element normally holds one certificate; accept several.
        while (b != NULL && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
            if (!sk_X509_push(res->chain, x)) {
                X509_free(x);
                break;
            }
            PEM_write_bio_X509(pem, x);
            in_elem++;
        }
        BIO_free(b);
        ERR_clear_error();
        if (in_elem == 0) {
            snprintf(res->message, sizeof(res->message),
                     "cert_chain element %zu holds no PEM certificate", i);
            BIO_free(pem);
            return -1;
        }
    }
    res->chain_pem = sc_pem_bio_string(pem);
    BIO_free(pem);
    return 0;
}

static void certify_done(int status, const char *message, const uint8_t *resp, size_t len,
                         void *arg)
{
    struct certify *c = arg;
    struct cc_ca_result *res = &c->res;
    res->status = status;
    if (status != CC_GRPC_OK) {
        res->error = CC_CA_RPC;
        snprintf(res->message, sizeof(res->message), "CreateCertificate failed: %s: %s",
                 cc_grpc_status_name(status), message);
        goto out_report;
    }
    Istio__V1__Auth__IstioCertificateResponse *r =
        istio__v1__auth__istio_certificate_response__unpack(NULL, len, resp);
    if (r == NULL) {
        res->error = CC_CA_BAD_RESPONSE;
        snprintf(res->message, sizeof(res->message),
                 "CreateCertificate response (%zu bytes) does not parse", len);
        goto out_report;
    }
    if (r->n_cert_chain == 0) {
        res->error = CC_CA_BAD_RESPONSE;
        snprintf(res->message, sizeof(res->message), "CreateCertificate returned an empty chain");
    } else if (parse_chain(res, r) != 0) {
        res->error = CC_CA_BAD_RESPONSE;
        if (res->message[0] == '\0') {
            snprintf(res->message, sizeof(res->message), "cannot decode the returned chain");
        }
    } else {
        char why[400];
        res->error =
            cc_ca_validate_chain(res->chain, c->trust, c->spiffe_id, res->key, 0, why, sizeof(why));
        if (res->error != CC_CA_OK) {
            snprintf(res->message, sizeof(res->message), "%s", why);
        } else {
            X509 *leaf = sk_X509_value(res->chain, 0);
            snprintf(res->spiffe_id, sizeof(res->spiffe_id), "%s", c->spiffe_id);
            BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(leaf), NULL);
            char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;
            snprintf(res->serial, sizeof(res->serial), "%s", hex != NULL ? hex : "?");
            OPENSSL_free(hex);
            BN_free(bn);
            res->not_before = asn1_to_time(X509_get0_notBefore(leaf));
            res->not_after = asn1_to_time(X509_get0_notAfter(leaf));
        }
    }
    istio__v1__auth__istio_certificate_response__free_unpacked(r, NULL);

out_report:
    c->cb(res, c->arg);
    EVP_PKEY_free(res->key);
    sk_X509_pop_free(res->chain, X509_free);
    free(res->chain_pem);
    free(c->spiffe_id);
    free(c);
}

int cc_ca_certify(struct cc_channel *ch, const struct cc_ca_request *req, cc_ca_done_cb cb,
                  void *arg)
{
    struct certify *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return SC_ENOMEM;
    }
    c->cb = cb;
    c->arg = arg;
    c->trust = req->trust;
    c->spiffe_id = strdup(req->spiffe_id);
    c->res.key = cc_ca_new_key();
    char *csr = c->res.key != NULL ? cc_ca_make_csr(c->res.key, req->spiffe_id) : NULL;
    if (csr == NULL || c->spiffe_id == NULL) {
        EVP_PKEY_free(c->res.key);
        free(c->spiffe_id);
        free(c);
        free(csr);
        return SC_ENOMEM;
    }
    Istio__V1__Auth__IstioCertificateRequest r = ISTIO__V1__AUTH__ISTIO_CERTIFICATE_REQUEST__INIT;
    r.csr = csr;
    r.validity_duration = req->ttl_seconds > 0 ? req->ttl_seconds : 0;
    int rc = cc_unary(ch, CC_CA_PATH, &r.base, req->timeout_ms ? req->timeout_ms : 30000,
                      certify_done, c);
    free(csr);
    if (rc != 0) {
        EVP_PKEY_free(c->res.key);
        free(c->spiffe_id);
        free(c);
    }
    return rc;
}
