// Unit tests for offline JWT verification (cp_auth.c): ES256 tokens signed
// here with a fresh P-256 key, checked against a JWKS built from it.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/base64.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/nid.h>
#include <openssl/sha.h>

#include "cp_auth.h"

#define NOW 1700000000ull

static EC_KEY *g_key, *g_other;

static void b64u(const uint8_t *in, size_t len, char *out, size_t cap)
{
    size_t n;
    EVP_EncodedLength(&n, len);
    assert_true(n <= cap);
    EVP_EncodeBlock((uint8_t *)out, in, len);
    for (char *p = out; *p; p++) {
        if (*p == '+') {
            *p = '-';
        } else if (*p == '/') {
            *p = '_';
        } else if (*p == '=') {
            *p = '\0';
            break;
        }
    }
}

static char *make_jwt(EC_KEY *key, const char *hdr, const char *payload)
{
    static char out[8192];
    char h[1024], p[4096], s[256];
    b64u((const uint8_t *)hdr, strlen(hdr), h, sizeof(h));
    b64u((const uint8_t *)payload, strlen(payload), p, sizeof(p));
    snprintf(out, sizeof(out), "%s.%s", h, p);
    uint8_t dig[32];
    SHA256((const uint8_t *)out, strlen(out), dig);
    ECDSA_SIG *sig = ECDSA_do_sign(dig, sizeof(dig), key);
    assert_non_null(sig);
    const BIGNUM *r, *ss;
    ECDSA_SIG_get0(sig, &r, &ss);
    uint8_t rs[64];
    BN_bn2bin_padded(rs, 32, r);
    BN_bn2bin_padded(rs + 32, 32, ss);
    ECDSA_SIG_free(sig);
    b64u(rs, sizeof(rs), s, sizeof(s));
    strcat(out, ".");
    strcat(out, s);
    return out;
}

static struct cp_jwks *jwks_for(EC_KEY *key)
{
    BIGNUM *x = BN_new(), *y = BN_new();
    assert_true(EC_POINT_get_affine_coordinates_GFp(EC_KEY_get0_group(key),
                                                    EC_KEY_get0_public_key(key), x, y, NULL));
    uint8_t xb[32], yb[32];
    BN_bn2bin_padded(xb, 32, x);
    BN_bn2bin_padded(yb, 32, y);
    BN_free(x);
    BN_free(y);
    char xs[64], ys[64], json[512], err[256];
    b64u(xb, 32, xs, sizeof(xs));
    b64u(yb, 32, ys, sizeof(ys));
    snprintf(
        json, sizeof(json),
        "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"k1\",\"x\":\"%s\",\"y\":\"%s\"}]}",
        xs, ys);
    struct cp_jwks *k = cp_jwks_parse((const uint8_t *)json, strlen(json), err, sizeof(err));
    assert_non_null(k);
    return k;
}

static int setup(void **state)
{
    g_key = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    g_other = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    EC_KEY_generate_key(g_key);
    EC_KEY_generate_key(g_other);
    return 0;
}

static int teardown(void **state)
{
    EC_KEY_free(g_key);
    EC_KEY_free(g_other);
    return 0;
}

static const char *HDR = "{\"alg\":\"ES256\",\"kid\":\"k1\"}";

static int verify(struct cp_jwks *k, const char *tok, char *id, char *why)
{
    return cp_jwt_verify(k, tok, strlen(tok), "seam-ca", "td.example", NOW, id, 256, why, 128);
}

static void test_good_kubernetes_claim(void **state)
{
    struct cp_jwks *k = jwks_for(g_key);
    char id[256], why[128] = "";
    const char *tok = make_jwt(g_key, HDR,
                               "{\"aud\":[\"x\",\"seam-ca\"],\"exp\":1700000600,\"nbf\":1699999000,"
                               "\"kubernetes.io\":{\"namespace\":\"ns1\",\"serviceaccount\":"
                               "{\"name\":\"sa1\"}}}");
    assert_int_equal(verify(k, tok, id, why), 0);
    assert_string_equal(id, "spiffe://td.example/ns/ns1/sa/sa1");
    cp_jwks_free(k);
}

static void test_good_sub(void **state)
{
    struct cp_jwks *k = jwks_for(g_key);
    char id[256], why[128] = "";
    const char *tok = make_jwt(g_key, HDR,
                               "{\"aud\":\"seam-ca\",\"exp\":1.7000006e9,"
                               "\"sub\":\"system:serviceaccount:a:b\"}");
    assert_int_equal(verify(k, tok, id, why), 0);
    assert_string_equal(id, "spiffe://td.example/ns/a/sa/b");
    cp_jwks_free(k);
}

static void expect_fail(const char *tok, struct cp_jwks *k, const char *reason)
{
    char id[256], why[128] = "";
    assert_int_equal(verify(k, tok, id, why), -1);
    if (strstr(why, reason) == NULL) {
        fail_msg("why=\"%s\" want \"%s\"", why, reason);
    }
}

static void test_refusals(void **state)
{
    struct cp_jwks *k = jwks_for(g_key);
    const char *ok_claims = "{\"aud\":\"seam-ca\",\"exp\":1700000600,"
                            "\"sub\":\"system:serviceaccount:a:b\"}";
    expect_fail(make_jwt(g_key, HDR,
                         "{\"aud\":\"other\",\"exp\":1700000600,"
                         "\"sub\":\"system:serviceaccount:a:b\"}"),
                k, "wrong audience");
    expect_fail(make_jwt(g_key, HDR,
                         "{\"aud\":\"seam-ca\",\"exp\":1700000000,"
                         "\"sub\":\"system:serviceaccount:a:b\"}"),
                k, "expired");
    expect_fail(make_jwt(g_key, HDR,
                         "{\"aud\":\"seam-ca\",\"exp\":1700000600,\"nbf\":1700000100,"
                         "\"sub\":\"system:serviceaccount:a:b\"}"),
                k, "not yet valid");
    expect_fail(make_jwt(g_other, HDR, ok_claims), k, "bad signature");
    expect_fail(make_jwt(g_key, "{\"alg\":\"HS256\"}", ok_claims), k, "unsupported alg");
    expect_fail(make_jwt(g_key, "{\"alg\":\"ES256\",\"kid\":\"other\"}", ok_claims), k,
                "bad signature");
    expect_fail(make_jwt(g_key, HDR, "{\"aud\":\"seam-ca\",\"sub\":\"system:serviceaccount:a:b\"}"),
                k, "missing exp");
    expect_fail(make_jwt(g_key, HDR, "{\"aud\":\"seam-ca\",\"exp\":1700000600,\"sub\":\"bob\"}"), k,
                "no service account");
    expect_fail(make_jwt(g_key, HDR,
                         "{\"aud\":\"seam-ca\",\"exp\":1700000600,"
                         "\"sub\":\"system:serviceaccount:a/b:c\"}"),
                k, "no service account");
    expect_fail("a.b", k, "not a JWS");
    expect_fail("a.b.c.d", k, "not a JWS");
    expect_fail("!!.b.c", k, "bad base64url");
    // Flip one signature character.
    char *t = make_jwt(g_key, HDR, ok_claims);
    size_t n = strlen(t);
    t[n - 2] = t[n - 2] == 'A' ? 'B' : 'A';
    expect_fail(t, k, "bad signature");
    cp_jwks_free(k);
}

static void test_jwks_errors(void **state)
{
    char err[256];
    assert_null(cp_jwks_parse((const uint8_t *)"[]", 2, err, sizeof(err)));
    assert_non_null(strstr(err, "keys"));
    const char *j = "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AA\",\"y\":\"AA\"}]}";
    assert_null(cp_jwks_parse((const uint8_t *)j, strlen(j), err, sizeof(err)));
    assert_non_null(strstr(err, "line 1"));
    const char *only_oct = "{\"keys\":[{\"kty\":\"oct\",\"k\":\"AA\"}]}";
    assert_null(cp_jwks_parse((const uint8_t *)only_oct, strlen(only_oct), err, sizeof(err)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_kubernetes_claim),
        cmocka_unit_test(test_good_sub),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_jwks_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
