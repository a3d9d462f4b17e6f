// Unit tests for the control plane CA (cp_ca.c): TTL clamping, CSR rules,
// leaf profile, rotation and retirement.
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "cp_ca.h"
#include "sc/pem.h"

#define ID "spiffe://td.test/ns/a/sa/b"

static EVP_PKEY *p256(void)
{
    EVP_PKEY *pkey = sc_pem_new_p256_key();
    assert_non_null(pkey);
    return pkey;
}

// csr_pem_ex builds a CSR with |num| URI SANs into a static buffer. With
// |tamper| its last DER byte (the end of the ECDSA signature) is flipped, so
// the structure parses but the signature fails. (Flipping a base64 character
// instead can land in padding bits and change nothing: a CI flake once.)
static const char *csr_pem_ex(EVP_PKEY *key, const char *const *uris, size_t num, bool tamper)
{
    static char out[4096];
    X509_REQ *req = X509_REQ_new();
    X509_REQ_set_version(req, 0);
    X509_REQ_set_pubkey(req, key);
    if (num > 0) {
        GENERAL_NAMES *gens = GENERAL_NAMES_new();
        for (size_t i = 0; i < num; i++) {
            GENERAL_NAME *g = GENERAL_NAME_new();
            ASN1_IA5STRING *s = ASN1_IA5STRING_new();
            ASN1_STRING_set(s, uris[i], (int)strlen(uris[i]));
            GENERAL_NAME_set0_value(g, GEN_URI, s);
            sk_GENERAL_NAME_push(gens, g);
        }
        STACK_OF(X509_EXTENSION) *exts = NULL;
        X509V3_add1_i2d(&exts, NID_subject_alt_name, gens, 1, X509V3_ADD_DEFAULT);
        X509_REQ_add_extensions(req, exts);
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
        GENERAL_NAMES_free(gens);
    }
    assert_true(X509_REQ_sign(req, key, EVP_sha256()) > 0);
    uint8_t *der = NULL;
    int der_len = i2d_X509_REQ(req, &der);
    assert_true(der_len > 0);
    if (tamper) {
        der[der_len - 1] ^= 0x01;
    }
    BIO *b = BIO_new(BIO_s_mem());
    assert_true(PEM_write_bio(b, "CERTIFICATE REQUEST", "", der, der_len) > 0);
    const uint8_t *d;
    size_t len;
    BIO_mem_contents(b, &d, &len);
    assert_true(len < sizeof(out));
    memcpy(out, d, len);
    out[len] = '\0';
    BIO_free(b);
    OPENSSL_free(der);
    X509_REQ_free(req);
    return out;
}

static const char *csr_pem(EVP_PKEY *key, const char *const *uris, size_t num)
{
    return csr_pem_ex(key, uris, num, false);
}

static X509 *parse_pem(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, strlen(pem));
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    assert_non_null(x);
    return x;
}

static void test_clamp(void **state)
{
    struct cp_ca *ca = cp_ca_new_generated("td.test", 3600);
    assert_non_null(ca);
    assert_int_equal(cp_ca_clamp_ttl(ca, 0), 3600);
    assert_int_equal(cp_ca_clamp_ttl(ca, -5), 3600);
    assert_int_equal(cp_ca_clamp_ttl(ca, 10), 10);
    assert_int_equal(cp_ca_clamp_ttl(ca, 3600), 3600);
    assert_int_equal(cp_ca_clamp_ttl(ca, 3601), 3600);
    assert_int_equal(cp_ca_clamp_ttl(ca, INT64_MAX), 3600);
    cp_ca_free(ca);
}

static void test_sign_profile(void **state)
{
    struct cp_ca *ca = cp_ca_new_generated("td.test", 3600);
    EVP_PKEY *key = p256();
    const char *uris[] = {ID};
    const char *csr = csr_pem(key, uris, 1);
    char **chain = NULL;
    size_t num = 0;
    char msg[256];
    assert_int_equal(cp_ca_sign_csr(ca, csr, strlen(csr), ID, 30, &chain, &num, msg, sizeof(msg)),
                     CP_GRPC_OK);
    assert_int_equal(num, 2);
    for (size_t i = 0; i < num; i++) {
        assert_int_equal(chain[i][strlen(chain[i]) - 1], '\n');
    }
    X509 *leaf = parse_pem(chain[0]), *root = parse_pem(chain[1]);
    int days, secs;
    assert_true(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(leaf), X509_get0_notAfter(leaf)));
    assert_int_equal(days * 86400 + secs, 30);
    uint32_t flags = X509_get_extension_flags(leaf);
    assert_false(flags & EXFLAG_CA);
    assert_int_equal(X509_get_key_usage(leaf), KU_DIGITAL_SIGNATURE);
    assert_int_equal(X509_get_extended_key_usage(leaf), XKU_SSL_SERVER | XKU_SSL_CLIENT);
    int crit = -1;
    GENERAL_NAMES *g = X509_get_ext_d2i(leaf, NID_subject_alt_name, &crit, NULL);
    assert_int_equal(crit, 1);
    assert_int_equal(sk_GENERAL_NAME_num(g), 1);
    assert_string_equal(
        ASN1_STRING_get0_data(sk_GENERAL_NAME_value(g, 0)->d.uniformResourceIdentifier), ID);
    GENERAL_NAMES_free(g);
    int ku_crit = -1;
    ASN1_BIT_STRING *ku = X509_get_ext_d2i(leaf, NID_key_usage, &ku_crit, NULL);
    assert_int_equal(ku_crit, 1);
    ASN1_BIT_STRING_free(ku);
    EVP_PKEY *root_pub = X509_get_pubkey(root);
    assert_int_equal(X509_verify(leaf, root_pub), 1);
    EVP_PKEY *leaf_pub = X509_get_pubkey(leaf);
    assert_int_equal(EVP_PKEY_cmp(leaf_pub, key), 1);
    EVP_PKEY_free(leaf_pub);
    EVP_PKEY_free(root_pub);
    X509_free(leaf);
    X509_free(root);
    cp_ca_chain_free(chain, num);
    EVP_PKEY_free(key);
    cp_ca_free(ca);
}

static void test_csr_rules(void **state)
{
    struct cp_ca *ca = cp_ca_new_generated("td.test", 3600);
    EVP_PKEY *key = p256();
    char **chain = NULL;
    size_t num = 0;
    char msg[256];
    const char *foreign[] = {"spiffe://td.test/ns/a/sa/other"};
    const char *csr = csr_pem(key, foreign, 1);
    assert_int_equal(cp_ca_sign_csr(ca, csr, strlen(csr), ID, 0, &chain, &num, msg, sizeof(msg)),
                     CP_GRPC_PERMISSION_DENIED);
    const char *two[] = {ID, ID};
    csr = csr_pem(key, two, 2);
    assert_int_equal(cp_ca_sign_csr(ca, csr, strlen(csr), ID, 0, &chain, &num, msg, sizeof(msg)),
                     CP_GRPC_INVALID_ARGUMENT);
    // An upper-case trust domain is not a valid SPIFFE ID: refused.
    const char *upper[] = {"spiffe://TD.TEST/ns/a/sa/b"};
    csr = csr_pem(key, upper, 1);
    assert_int_not_equal(
        cp_ca_sign_csr(ca, csr, strlen(csr), ID, 0, &chain, &num, msg, sizeof(msg)), CP_GRPC_OK);
    assert_int_equal(cp_ca_sign_csr(ca, "junk", 4, ID, 0, &chain, &num, msg, sizeof(msg)),
                     CP_GRPC_INVALID_ARGUMENT);
    // A CSR whose signature does not verify.
    const char *bad = csr_pem_ex(key, NULL, 0, true);
    assert_int_equal(cp_ca_sign_csr(ca, bad, strlen(bad), ID, 0, &chain, &num, msg, sizeof(msg)),
                     CP_GRPC_INVALID_ARGUMENT);
    EVP_PKEY_free(key);
    cp_ca_free(ca);
}

static void test_rotate_retire(void **state)
{
    struct cp_ca *ca = cp_ca_new_generated("td.test", 3600);
    const char *const *pems;
    uint64_t g0 = cp_ca_generation(ca);
    assert_int_equal(cp_ca_bundle(ca, &pems), 1);
    char *old_root = strdup(pems[0]);
    assert_int_equal(cp_ca_rotate(ca), 0);
    assert_int_equal(cp_ca_bundle(ca, &pems), 2);
    assert_true(cp_ca_generation(ca) > g0);
    EVP_PKEY *key = p256();
    const char *csr = csr_pem(key, NULL, 0);
    char **chain = NULL;
    size_t num = 0;
    char msg[256];
    assert_int_equal(cp_ca_sign_csr(ca, csr, strlen(csr), ID, 0, &chain, &num, msg, sizeof(msg)),
                     CP_GRPC_OK);
    assert_string_not_equal(chain[num - 1], old_root);
    assert_string_equal(chain[num - 1], pems[1]);
    assert_int_equal(cp_ca_retire(ca), 1);
    assert_int_equal(cp_ca_bundle(ca, &pems), 1);
    assert_string_equal(pems[0], chain[num - 1]);
    assert_int_equal(cp_ca_retire(ca), 0);
    cp_ca_chain_free(chain, num);
    free(old_root);
    EVP_PKEY_free(key);
    cp_ca_free(ca);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clamp),
        cmocka_unit_test(test_sign_profile),
        cmocka_unit_test(test_csr_rules),
        cmocka_unit_test(test_rotate_retire),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
