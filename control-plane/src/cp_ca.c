// cp_ca.c — CSR signing and root management for seam-control-plane.
//
// Leaves follow the X509-SVID rules (PROTOCOLS.md §3): exactly one URI SAN
// (critical, the subject is empty), keyUsage digitalSignature (critical), EKU
// serverAuth+clientAuth, CA:FALSE. The identity always comes from the caller's
// credential; a URI SAN in the CSR must equal it (istio-csr's rule).
#include "cp_ca.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sc/log.h"
#include "sc/pem.h"
#include "sc/spiffe.h"

#define CP_ROOT_DAYS 3650
#define CP_SERVER_TTL_S (365 * 24 * 3600)

struct cp_ca {
    char td[256];                // trust domain
    uint64_t max_ttl_s;          // --cert-ttl
    EVP_PKEY *sign_key;          // key of sign_cert
    X509 *sign_cert;             // issues leaves (root or intermediate)
    STACK_OF(X509) * sign_chain; // certificates above sign_cert, root last
    STACK_OF(X509) * roots;      // trust bundle
    char **root_pems;            // PEM of each bundle root, NULL-terminated
    X509 *server_root;           // root that issued the serving cert (kept in --root-out)
    uint64_t gen;                // bundle generation
    unsigned root_seq;           // names generated roots
};

static void rebuild_root_pems(struct cp_ca *ca)
{
    if (ca->root_pems != NULL) {
        for (size_t i = 0; ca->root_pems[i] != NULL; i++) {
            free(ca->root_pems[i]);
        }
        free(ca->root_pems);
    }
    size_t n = sk_X509_num(ca->roots);
    ca->root_pems = calloc(n + 1, sizeof(char *));
    if (ca->root_pems == NULL) {
        abort();
    }
    for (size_t i = 0; i < n; i++) {
        ca->root_pems[i] = sc_pem_cert(sk_X509_value(ca->roots, i));
        if (ca->root_pems[i] == NULL) {
            abort(); // out of memory: the list must stay complete
        }
    }
    ca->gen++;
}

static int set_random_serial(X509 *x)
{
    uint8_t b[16];
    int ok = 0;
    RAND_bytes(b, sizeof(b));
    b[0] &= 0x7f; // positive
    b[0] |= 0x01; // and 16 bytes long (no leading zero)
    BIGNUM *bn = BN_bin2bn(b, sizeof(b), NULL);
    ASN1_INTEGER *ai = bn != NULL ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
    if (ai != NULL && X509_set_serialNumber(x, ai)) {
        ok = 1;
    }
    ASN1_INTEGER_free(ai);
    BN_free(bn);
    return ok ? 0 : -1;
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *val)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &ctx, nid, val);
    if (ext == NULL) {
        return -1;
    }
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

static int add_san(X509 *x, int type, const char *const *names, size_t num, int critical)
{
    GENERAL_NAMES *gens = GENERAL_NAMES_new();
    int rc = -1;
    if (gens == NULL) {
        return -1;
    }
    for (size_t i = 0; i < num; i++) {
        GENERAL_NAME *gen = GENERAL_NAME_new();
        uint8_t ip[16];
        int iplen = 0;
        if (type == GEN_DNS && inet_pton(AF_INET, names[i], ip) == 1) {
            iplen = 4;
        } else if (type == GEN_DNS && inet_pton(AF_INET6, names[i], ip) == 1) {
            iplen = 16;
        }
        if (iplen > 0) {
            // A server name that is an IP literal becomes an iPAddress SAN.
            ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
            if (gen == NULL || os == NULL || !ASN1_OCTET_STRING_set(os, ip, iplen)) {
                GENERAL_NAME_free(gen);
                ASN1_OCTET_STRING_free(os);
                goto out;
            }
            GENERAL_NAME_set0_value(gen, GEN_IPADD, os);
            if (!sk_GENERAL_NAME_push(gens, gen)) {
                GENERAL_NAME_free(gen);
                goto out;
            }
            continue;
        }
        ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
        if (gen == NULL || ia5 == NULL || !ASN1_STRING_set(ia5, names[i], (int)strlen(names[i]))) {
            GENERAL_NAME_free(gen);
            ASN1_IA5STRING_free(ia5);
            goto out;
        }
        GENERAL_NAME_set0_value(gen, type, ia5);
        if (!sk_GENERAL_NAME_push(gens, gen)) {
            GENERAL_NAME_free(gen);
            goto out;
        }
    }
    if (X509_add1_ext_i2d(x, NID_subject_alt_name, gens, critical, X509V3_ADD_DEFAULT) == 1) {
        rc = 0;
    }
out:
    GENERAL_NAMES_free(gens);
    return rc;
}

// make_root creates a self-signed P-256 root named after the trust domain and
// a sequence number (distinct subjects keep path building unambiguous while
// two roots are trusted during a rotation).
static int make_root(struct cp_ca *ca, X509 **out_cert, EVP_PKEY **out_key)
{
    EVP_PKEY *key = sc_pem_new_p256_key();
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    char cn[320];
    if (key == NULL || x == NULL || name == NULL) {
        goto out_fail;
    }
    snprintf(cn, sizeof(cn), "seam root %u %lx", ++ca->root_seq, (unsigned long)getpid());
    if (!X509_set_version(x, X509_VERSION_3) || set_random_serial(x) != 0 ||
        !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const uint8_t *)ca->td, -1, -1, 0) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const uint8_t *)cn, -1, -1, 0) ||
        !X509_set_subject_name(x, name) || !X509_set_issuer_name(x, name) ||
        !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
        !X509_gmtime_adj(X509_getm_notAfter(x), (long)CP_ROOT_DAYS * 86400) ||
        !X509_set_pubkey(x, key)) {
        goto out_fail;
    }
    char uri[300];
    snprintf(uri, sizeof(uri), "spiffe://%s", ca->td);
    const char *uris[1] = {uri};
    if (add_ext(x, NULL, NID_basic_constraints, "critical,CA:TRUE") != 0 ||
        add_ext(x, NULL, NID_key_usage, "critical,keyCertSign,cRLSign") != 0 ||
        add_ext(x, NULL, NID_subject_key_identifier, "hash") != 0 ||
        add_san(x, GEN_URI, uris, 1, 0) != 0 || !X509_sign(x, key, EVP_sha256())) {
        goto out_fail;
    }
    X509_NAME_free(name);
    *out_cert = x;
    *out_key = key;
    return 0;

out_fail:
    X509_NAME_free(name);
    X509_free(x);
    EVP_PKEY_free(key);
    return -1;
}

static struct cp_ca *ca_alloc(const char *trust_domain, uint64_t max_ttl_s)
{
    struct cp_ca *ca = calloc(1, sizeof(*ca));
    if (ca == NULL) {
        abort();
    }
    snprintf(ca->td, sizeof(ca->td), "%s", trust_domain);
    ca->max_ttl_s = max_ttl_s;
    ca->roots = sk_X509_new_null();
    ca->sign_chain = sk_X509_new_null();
    if (ca->roots == NULL || ca->sign_chain == NULL) {
        abort();
    }
    return ca;
}

struct cp_ca *cp_ca_new_generated(const char *trust_domain, uint64_t max_ttl_s)
{
    struct cp_ca *ca = ca_alloc(trust_domain, max_ttl_s);
    if (make_root(ca, &ca->sign_cert, &ca->sign_key) != 0) {
        cp_ca_free(ca);
        return NULL;
    }
    X509_up_ref(ca->sign_cert);
    sk_X509_push(ca->roots, ca->sign_cert);
    rebuild_root_pems(ca);
    return ca;
}

static STACK_OF(X509) * read_certs(const char *path, char *err, size_t err_cap)
{
    BIO *bio = BIO_new_file(path, "r");
    if (bio == NULL) {
        snprintf(err, err_cap, "%s: %s", path, strerror(errno));
        return NULL;
    }
    STACK_OF(X509) *sk = sk_X509_new_null();
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        sk_X509_push(sk, x);
    }
    ERR_clear_error();
    BIO_free(bio);
    if (sk_X509_num(sk) == 0) {
        snprintf(err, err_cap, "%s: no PEM certificate found", path);
        sk_X509_free(sk);
        return NULL;
    }
    return sk;
}

struct cp_ca *cp_ca_new_load(const char *cert_path, const char *key_path, const char *trust_domain,
                             uint64_t max_ttl_s, char *err, size_t err_cap)
{
    struct cp_ca *ca = ca_alloc(trust_domain, max_ttl_s);
    STACK_OF(X509) *certs = read_certs(cert_path, err, err_cap);
    if (certs == NULL) {
        goto out_fail;
    }
    BIO *kb = BIO_new_file(key_path, "r");
    if (kb == NULL) {
        snprintf(err, err_cap, "%s: %s", key_path, strerror(errno));
        goto out_fail;
    }
    ca->sign_key = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL);
    BIO_free(kb);
    ERR_clear_error();
    if (ca->sign_key == NULL) {
        snprintf(err, err_cap, "%s: no PEM private key found", key_path);
        goto out_fail;
    }
    ca->sign_cert = sk_X509_shift(certs);
    if (X509_check_private_key(ca->sign_cert, ca->sign_key) != 1) {
        ERR_clear_error();
        snprintf(err, err_cap, "%s does not match the first certificate of %s", key_path,
                 cert_path);
        goto out_fail;
    }
    if (!(X509_get_extension_flags(ca->sign_cert) & EXFLAG_CA)) {
        snprintf(err, err_cap, "%s: the first certificate is not a CA (CA:TRUE)", cert_path);
        goto out_fail;
    }
    // The served chain is the rest of the file; the trust anchor is its last
    // certificate (or the signing certificate itself when it is alone).
    X509 *anchor =
        sk_X509_num(certs) > 0 ? sk_X509_value(certs, sk_X509_num(certs) - 1) : ca->sign_cert;
    X509_up_ref(anchor);
    sk_X509_push(ca->roots, anchor);
    sk_X509_pop_free(ca->sign_chain, X509_free);
    ca->sign_chain = certs;
    certs = NULL;
    rebuild_root_pems(ca);
    return ca;

out_fail:
    sk_X509_pop_free(certs, X509_free);
    cp_ca_free(ca);
    return NULL;
}

void cp_ca_free(struct cp_ca *ca)
{
    if (ca == NULL) {
        return;
    }
    EVP_PKEY_free(ca->sign_key);
    X509_free(ca->sign_cert);
    X509_free(ca->server_root);
    sk_X509_pop_free(ca->sign_chain, X509_free);
    sk_X509_pop_free(ca->roots, X509_free);
    if (ca->root_pems != NULL) {
        for (size_t i = 0; ca->root_pems[i] != NULL; i++) {
            free(ca->root_pems[i]);
        }
        free(ca->root_pems);
    }
    free(ca);
}

int cp_ca_add_root_file(struct cp_ca *ca, const char *path, char *err, size_t err_cap)
{
    STACK_OF(X509) *certs = read_certs(path, err, err_cap);
    if (certs == NULL) {
        return -1;
    }
    X509 *x;
    while ((x = sk_X509_shift(certs)) != NULL) {
        sk_X509_push(ca->roots, x);
    }
    sk_X509_free(certs);
    rebuild_root_pems(ca);
    return 0;
}

int cp_ca_rotate(struct cp_ca *ca)
{
    X509 *cert;
    EVP_PKEY *key;
    if (make_root(ca, &cert, &key) != 0) {
        return -1;
    }
    EVP_PKEY_free(ca->sign_key);
    X509_free(ca->sign_cert);
    sk_X509_pop_free(ca->sign_chain, X509_free);
    ca->sign_chain = sk_X509_new_null();
    ca->sign_key = key;
    ca->sign_cert = cert;
    X509_up_ref(cert);
    sk_X509_push(ca->roots, cert);
    rebuild_root_pems(ca);
    return 0;
}

int cp_ca_retire(struct cp_ca *ca)
{
    // The anchor that issues now is the last of sign_chain, or sign_cert.
    X509 *keep = sk_X509_num(ca->sign_chain) > 0
                     ? sk_X509_value(ca->sign_chain, sk_X509_num(ca->sign_chain) - 1)
                     : ca->sign_cert;
    int removed = 0;
    for (size_t i = sk_X509_num(ca->roots); i-- > 0;) {
        X509 *r = sk_X509_value(ca->roots, i);
        if (X509_cmp(r, keep) != 0) {
            sk_X509_delete(ca->roots, i);
            X509_free(r);
            removed++;
        }
    }
    if (sk_X509_num(ca->roots) == 0) {
        X509_up_ref(keep);
        sk_X509_push(ca->roots, keep);
    }
    if (removed > 0) {
        rebuild_root_pems(ca);
    }
    return removed;
}

size_t cp_ca_bundle(const struct cp_ca *ca, const char *const **out_pems)
{
    *out_pems = (const char *const *)ca->root_pems;
    return sk_X509_num(ca->roots);
}

uint64_t cp_ca_generation(const struct cp_ca *ca)
{
    return ca->gen;
}

const char *cp_ca_trust_domain(const struct cp_ca *ca)
{
    return ca->td;
}

uint64_t cp_ca_clamp_ttl(const struct cp_ca *ca, int64_t requested_s)
{
    if (requested_s <= 0 || (uint64_t)requested_s > ca->max_ttl_s) {
        return ca->max_ttl_s;
    }
    return (uint64_t)requested_s;
}

void cp_ca_chain_free(char **chain, size_t num)
{
    if (chain == NULL) {
        return;
    }
    for (size_t i = 0; i < num; i++) {
        free(chain[i]);
    }
    free(chain);
}

// csr_key_ok accepts EC P-256/P-384 and RSA >= 2048 bits.
static bool csr_key_ok(EVP_PKEY *pk)
{
    switch (EVP_PKEY_id(pk)) {
    case EVP_PKEY_EC: {
        const EC_KEY *ec = EVP_PKEY_get0_EC_KEY(pk);
        int nid = EC_GROUP_get_curve_name(EC_KEY_get0_group(ec));
        return nid == NID_X9_62_prime256v1 || nid == NID_secp384r1;
    }
    case EVP_PKEY_RSA:
        return EVP_PKEY_bits(pk) >= 2048;
    default:
        return false;
    }
}

// issue_leaf signs a certificate for |pub| with the current signing key.
static X509 *issue_leaf(struct cp_ca *ca, EVP_PKEY *pub, int san_type, const char *const *names,
                        size_t num_names, uint64_t ttl_s, bool server_only)
{
    X509 *x = X509_new();
    if (x == NULL) {
        return NULL;
    }
    // One clock reading for both ends: the lifetime is exactly |ttl_s| even
    // when a second boundary passes between the two calls.
    time_t now = time(NULL);
    if (!X509_set_version(x, X509_VERSION_3) || set_random_serial(x) != 0 ||
        !X509_set_issuer_name(x, X509_get_subject_name(ca->sign_cert)) ||
        !X509_time_adj(X509_getm_notBefore(x), 0, &now) ||
        !X509_time_adj(X509_getm_notAfter(x), (long)ttl_s, &now) || !X509_set_pubkey(x, pub)) {
        goto out_fail;
    }
    // Never outlive the issuer.
    int days = 0, secs = 0;
    if (ASN1_TIME_diff(&days, &secs, X509_get0_notAfter(x), X509_get0_notAfter(ca->sign_cert)) &&
        (days < 0 || secs < 0) && !X509_set1_notAfter(x, X509_get0_notAfter(ca->sign_cert))) {
        goto out_fail;
    }
    if (server_only) {
        X509_NAME *name = X509_get_subject_name(x);
        if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const uint8_t *)names[0], -1, -1,
                                        0)) {
            goto out_fail;
        }
    }
    if (add_ext(x, ca->sign_cert, NID_basic_constraints, "critical,CA:FALSE") != 0 ||
        add_ext(x, ca->sign_cert, NID_key_usage, "critical,digitalSignature") != 0 ||
        add_ext(x, ca->sign_cert, NID_ext_key_usage,
                server_only ? "serverAuth" : "serverAuth,clientAuth") != 0 ||
        add_ext(x, ca->sign_cert, NID_authority_key_identifier, "keyid:always") != 0 ||
        add_san(x, san_type, names, num_names, !server_only) != 0) {
        goto out_fail;
    }
    const EVP_MD *md = EVP_PKEY_id(ca->sign_key) == EVP_PKEY_ED25519 ? NULL : EVP_sha256();
    if (!X509_sign(x, ca->sign_key, md)) {
        goto out_fail;
    }
    return x;

out_fail:
    ERR_clear_error();
    X509_free(x);
    return NULL;
}

static char **chain_pems(struct cp_ca *ca, X509 *leaf, size_t *out_num)
{
    size_t n = 2 + sk_X509_num(ca->sign_chain);
    char **out = calloc(n, sizeof(char *));
    if (out == NULL) {
        abort();
    }
    out[0] = sc_pem_cert(leaf);
    out[1] = sc_pem_cert(ca->sign_cert);
    for (size_t i = 0; i < sk_X509_num(ca->sign_chain); i++) {
        out[2 + i] = sc_pem_cert(sk_X509_value(ca->sign_chain, i));
    }
    for (size_t i = 0; i < n; i++) {
        if (out[i] == NULL) {
            cp_ca_chain_free(out, n);
            return NULL;
        }
    }
    *out_num = n;
    return out;
}

int cp_ca_sign_csr(struct cp_ca *ca, const char *csr_pem, size_t csr_len, const char *identity,
                   int64_t requested_ttl_s, char ***out_chain, size_t *out_num, char *msg,
                   size_t msg_cap)
{
    int rc = CP_GRPC_INVALID_ARGUMENT;
    X509_REQ *req = NULL;
    EVP_PKEY *pub = NULL;
    STACK_OF(X509_EXTENSION) *exts = NULL;
    GENERAL_NAMES *gens = NULL;
    X509 *leaf = NULL;

    BIO *bio = BIO_new_mem_buf(csr_pem, csr_len);
    if (bio != NULL) {
        req = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);
        BIO_free(bio);
    }
    if (req == NULL) {
        snprintf(msg, msg_cap, "csr is not a PEM CERTIFICATE REQUEST");
        goto out;
    }
    pub = X509_REQ_get_pubkey(req);
    if (pub == NULL) {
        snprintf(msg, msg_cap, "csr public key cannot be parsed");
        goto out;
    }
    if (!csr_key_ok(pub)) {
        snprintf(msg, msg_cap, "csr key type not accepted (EC P-256/P-384 or RSA >= 2048)");
        goto out;
    }
    if (X509_REQ_verify(req, pub) != 1) {
        snprintf(msg, msg_cap, "csr signature does not verify");
        goto out;
    }
    exts = X509_REQ_get_extensions(req);
    if (exts != NULL) {
        gens = X509V3_get_d2i(exts, NID_subject_alt_name, NULL, NULL);
    }
    if (gens != NULL) {
        const char *uri = NULL;
        size_t num_uri = 0;
        size_t uri_len = 0;
        for (size_t i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
            const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
            if (g->type == GEN_URI) {
                num_uri++;
                uri = (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
                uri_len = (size_t)ASN1_STRING_length(g->d.uniformResourceIdentifier);
            }
        }
        if (num_uri > 1) {
            snprintf(msg, msg_cap, "csr has %zu URI SANs; at most one is allowed", num_uri);
            goto out;
        }
        if (num_uri == 1) {
            char buf[SC_SPIFFE_ID_MAX + 1];
            if (uri_len > SC_SPIFFE_ID_MAX || memchr(uri, '\0', uri_len) != NULL) {
                snprintf(msg, msg_cap, "csr URI SAN is not a SPIFFE ID");
                goto out;
            }
            memcpy(buf, uri, uri_len);
            buf[uri_len] = '\0';
            if (!sc_spiffe_id_equal(buf, identity)) {
                rc = CP_GRPC_PERMISSION_DENIED;
                snprintf(msg, msg_cap, "csr URI SAN %.200s is not the caller identity %.200s", buf,
                         identity);
                goto out;
            }
        }
    }
    uint64_t ttl = cp_ca_clamp_ttl(ca, requested_ttl_s);
    const char *names[1] = {identity};
    leaf = issue_leaf(ca, pub, GEN_URI, names, 1, ttl, false);
    if (leaf == NULL) {
        rc = CP_GRPC_INTERNAL;
        snprintf(msg, msg_cap, "signing failed");
        goto out;
    }
    *out_chain = chain_pems(ca, leaf, out_num);
    if (*out_chain == NULL) {
        rc = CP_GRPC_INTERNAL;
        snprintf(msg, msg_cap, "encoding failed");
        goto out;
    }
    rc = CP_GRPC_OK;
    msg[0] = '\0';
out:
    ERR_clear_error();
    X509_free(leaf);
    GENERAL_NAMES_free(gens);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    EVP_PKEY_free(pub);
    X509_REQ_free(req);
    return rc;
}

int cp_ca_issue_server(struct cp_ca *ca, const char *const *dns, size_t num_dns,
                       char **out_chain_pem, EVP_PKEY **out_key)
{
    EVP_PKEY *key = sc_pem_new_p256_key();
    if (key == NULL || num_dns == 0) {
        EVP_PKEY_free(key);
        return -1;
    }
    X509 *leaf = issue_leaf(ca, key, GEN_DNS, dns, num_dns, CP_SERVER_TTL_S, true);
    size_t n = 0;
    char **pems = leaf != NULL ? chain_pems(ca, leaf, &n) : NULL;
    X509_free(leaf);
    if (pems == NULL) {
        EVP_PKEY_free(key);
        return -1;
    }
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        total += strlen(pems[i]);
    }
    char *out = malloc(total + 1);
    if (out == NULL) {
        abort();
    }
    out[0] = '\0';
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(pems[i]);
        memcpy(out + off, pems[i], l);
        off += l;
    }
    out[off] = '\0';
    cp_ca_chain_free(pems, n);
    X509 *anchor = sk_X509_num(ca->sign_chain) > 0
                       ? sk_X509_value(ca->sign_chain, sk_X509_num(ca->sign_chain) - 1)
                       : ca->sign_cert;
    X509_up_ref(anchor);
    X509_free(ca->server_root);
    ca->server_root = anchor;
    *out_chain_pem = out;
    *out_key = key;
    return 0;
}

int cp_ca_write_roots(const struct cp_ca *ca, const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        return -errno;
    }
    bool server_root_in_bundle = ca->server_root == NULL;
    for (size_t i = 0; i < sk_X509_num(ca->roots); i++) {
        fputs(ca->root_pems[i], f);
        if (ca->server_root != NULL &&
            X509_cmp(sk_X509_value(ca->roots, i), ca->server_root) == 0) {
            server_root_in_bundle = true;
        }
    }
    if (!server_root_in_bundle) {
        char *p = sc_pem_cert(ca->server_root);
        if (p != NULL) {
            fputs(p, f);
            free(p);
        }
    }
    if (fclose(f) != 0) {
        unlink(tmp);
        return -EIO;
    }
    if (rename(tmp, path) != 0) {
        int e = -errno;
        unlink(tmp);
        return e;
    }
    return 0;
}
