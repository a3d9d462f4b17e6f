// test_tls_verify.c — the SPIFFE verifier (sc_tls_verify_svid) and the
// context builder (sc_tls_ctx_new_*) on the PKI from tests/certs/gen.sh:
// every bad certificate maps to its one reason; bad files are refused with a
// message that never contains key material.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/pem.h>

#include "pki.h"
#include "sc/spiffe.h"
#include "sc/tls.h"

#define TD "spiffe://cluster.local"
#define SERVER_ID TD "/ns/default/sa/server"
#define CLIENT_ID TD "/ns/default/sa/client"

static char *slurp(const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", test_pki_dir, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *buf = malloc(1 << 16);
    *len = fread(buf, 1, (1 << 16) - 1, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

static X509 *load_leaf(const char *name, STACK_OF(X509) * *out_inter)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", test_pki_dir, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    X509 *leaf = PEM_read_X509(f, NULL, NULL, NULL);
    assert_non_null(leaf);
    if (out_inter != NULL) {
        *out_inter = sk_X509_new_null();
        X509 *x;
        while ((x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
            sk_X509_push(*out_inter, x);
        }
    }
    ERR_clear_error();
    fclose(f);
    return leaf;
}

static struct sc_tls_policy *policy(const char *trust, const char *peer_id, const char *allow)
{
    size_t len;
    char *pem = slurp(trust, &len);
    char *pat = (char *)allow;
    struct sc_allowlist al = {.num_patterns = 1, .patterns = &pat};
    char err[256];
    struct sc_tls_policy *p =
        sc_tls_policy_new(pem, len, peer_id, allow ? &al : NULL, err, sizeof(err));
    free(pem);
    assert_non_null(p);
    return p;
}

struct verdict {
    bool ok;
    enum sc_tls_fail reason;
    char id[SC_SPIFFE_ID_MAX + 1];
};

static struct verdict check(const struct sc_tls_policy *p, const char *cert, bool peer_is_server)
{
    struct verdict v = {0};
    STACK_OF(X509) *inter = NULL;
    X509 *leaf = load_leaf(cert, &inter);
    const char *detail = NULL;
    v.reason = SC_TLS_FAIL_MAX;
    v.ok = sc_tls_verify_svid(p, leaf, inter, peer_is_server, 0, v.id, sizeof(v.id), &v.reason,
                              &detail);
    if (!v.ok) {
        assert_non_null(detail);
    }
    sk_X509_pop_free(inter, X509_free);
    X509_free(leaf);
    return v;
}

static void expect_fail(const struct sc_tls_policy *p, const char *cert, bool server,
                        enum sc_tls_fail want)
{
    struct verdict v = check(p, cert, server);
    if (v.ok || v.reason != want) {
        fail_msg("%s: ok=%d reason=%s, want %s", cert, v.ok,
                 v.ok ? "-" : sc_tls_fail_name(v.reason), sc_tls_fail_name(want));
    }
}

static void test_inbound_checklist(void **state)
{
    struct sc_tls_policy *p = policy("ca.pem", NULL, TD "/ns/default/*");
    struct verdict v = check(p, "client.pem", false);
    assert_true(v.ok);
    assert_string_equal(v.id, CLIENT_ID);
    v = check(p, "chained-chain.pem", false); // leaf + intermediate sent by the peer
    assert_true(v.ok);
    expect_fail(p, "chained.pem", false, SC_TLS_FAIL_UNKNOWN_CA); // intermediate missing
    expect_fail(p, "rogue.pem", false, SC_TLS_FAIL_UNKNOWN_CA);
    expect_fail(p, "client-ca2.pem", false, SC_TLS_FAIL_UNKNOWN_CA);
    expect_fail(p, "expired.pem", false, SC_TLS_FAIL_EXPIRED);
    expect_fail(p, "notyet.pem", false, SC_TLS_FAIL_NOT_YET_VALID);
    expect_fail(p, "twouri.pem", false, SC_TLS_FAIL_BAD_SVID);
    expect_fail(p, "nouri.pem", false, SC_TLS_FAIL_BAD_SVID);
    expect_fail(p, "caleaf.pem", false, SC_TLS_FAIL_BAD_SVID);
    expect_fail(p, "kcs.pem", false, SC_TLS_FAIL_BAD_SVID);
    expect_fail(p, "denied.pem", false, SC_TLS_FAIL_NOT_ALLOWED);
    expect_fail(p, "othertd.pem", false, SC_TLS_FAIL_NOT_ALLOWED);
    // The refused ID is reported for the log line.
    v = check(p, "denied.pem", false);
    assert_string_equal(v.id, TD "/ns/evil/sa/mallory");
    v = check(p, "nouri.pem", false);
    assert_string_equal(v.id, "-");
    sc_tls_policy_free(p);
}

static void test_outbound_checklist(void **state)
{
    struct sc_tls_policy *p = policy("ca.pem", SERVER_ID, NULL);
    struct verdict v = check(p, "server.pem", true);
    assert_true(v.ok);
    assert_string_equal(v.id, SERVER_ID);
    expect_fail(p, "client.pem", true, SC_TLS_FAIL_ID_MISMATCH);
    expect_fail(p, "denied.pem", true, SC_TLS_FAIL_ID_MISMATCH);
    expect_fail(p, "othertd.pem", true, SC_TLS_FAIL_ID_MISMATCH);
    expect_fail(p, "rogue.pem", true, SC_TLS_FAIL_UNKNOWN_CA);
    expect_fail(p, "expired.pem", true, SC_TLS_FAIL_EXPIRED);
    expect_fail(p, "caleaf.pem", true, SC_TLS_FAIL_BAD_SVID);
    sc_tls_policy_free(p);
}

static void test_root_rotation_bundle(void **state)
{
    // Both roots trusted during a rotation.
    struct sc_tls_policy *p = policy("bundle-both.pem", NULL, TD "/*");
    assert_true(check(p, "client.pem", false).ok);
    assert_true(check(p, "client-ca2.pem", false).ok);
    expect_fail(p, "rogue.pem", false, SC_TLS_FAIL_UNKNOWN_CA);
    sc_tls_policy_free(p);
}

static void test_exact_allow(void **state)
{
    struct sc_tls_policy *p = policy("ca.pem", NULL, CLIENT_ID);
    assert_true(check(p, "client.pem", false).ok);
    assert_true(check(p, "client2.pem", false).ok);
    expect_fail(p, "server.pem", false, SC_TLS_FAIL_NOT_ALLOWED);
    sc_tls_policy_free(p);
}

static SSL_CTX *ctx_files(bool server, const char *cert, const char *key, const char *trust,
                          char *err, size_t cap)
{
    char c[512], k[512], t[512];
    snprintf(c, sizeof(c), "%s/%s", test_pki_dir, cert);
    snprintf(k, sizeof(k), "%s/%s", test_pki_dir, key);
    snprintf(t, sizeof(t), "%s/%s", test_pki_dir, trust);
    char *pat = (char *)TD "/*";
    struct sc_allowlist al = {.num_patterns = 1, .patterns = &pat};
    struct sc_tls_opts o = {
        .is_server = server, .peer_id = server ? NULL : SERVER_ID, .allow = server ? &al : NULL};
    return sc_tls_ctx_new_files(&o, c, k, t, err, cap);
}

static void test_ctx_building(void **state)
{
    char err[512];
    SSL_CTX *ctx = ctx_files(true, "server.pem", "server.key", "ca.pem", err, sizeof(err));
    assert_non_null(ctx);
    char id[256];
    assert_true(sc_tls_ctx_leaf_id(ctx, id, sizeof(id)));
    assert_string_equal(id, SERVER_ID);
    int64_t na = sc_tls_ctx_not_after(ctx);
    assert_true(na > (int64_t)time(NULL));
    assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_3_VERSION);
    SSL_CTX_free(ctx);

    // Key of another certificate: refused, and the message holds no key bytes.
    err[0] = '\0';
    ctx = ctx_files(true, "server.pem", "client.key", "ca.pem", err, sizeof(err));
    assert_null(ctx);
    assert_non_null(strstr(err, "key does not match"));
    assert_null(strstr(err, "BEGIN"));

    // Missing file: named in the message.
    ctx = ctx_files(true, "nope.pem", "server.key", "ca.pem", err, sizeof(err));
    assert_null(ctx);
    assert_non_null(strstr(err, "nope.pem"));

    // A certificate file given as trust bundle that is not PEM at all.
    ctx = ctx_files(false, "client.pem", "client.key", "client.key", err, sizeof(err));
    assert_null(ctx);
    assert_non_null(strstr(err, "trust"));

    // A key file given as certificate.
    ctx = ctx_files(false, "client.key", "client.key", "ca.pem", err, sizeof(err));
    assert_null(ctx);
    assert_non_null(strstr(err, "certificate"));
    assert_null(strstr(err, "BEGIN"));
}

static void test_bad_policy(void **state)
{
    char err[256];
    struct sc_tls_policy *p = sc_tls_policy_new("garbage", 7, NULL, NULL, err, sizeof(err));
    assert_null(p);
    size_t len;
    char *pem = slurp("ca.pem", &len);
    p = sc_tls_policy_new(pem, len, "http://not-spiffe/x", NULL, err, sizeof(err));
    assert_null(p);
    assert_non_null(strstr(err, "peer ID"));
    free(pem);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inbound_checklist),    cmocka_unit_test(test_outbound_checklist),
        cmocka_unit_test(test_root_rotation_bundle), cmocka_unit_test(test_exact_allow),
        cmocka_unit_test(test_ctx_building),         cmocka_unit_test(test_bad_policy),
    };
    return cmocka_run_group_tests(tests, test_pki_setup, test_pki_teardown);
}
