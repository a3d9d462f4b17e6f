// test_admin_certs.c — /certs JSON, readiness and cert-expiry metrics from PEM
// files (tunnel mode), on the PKI of tests/certs/gen.sh.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "admin/admin_int.h"
#include "pki.h"
#include "sc/admin.h"

static void test_file_certs_json(void **state)
{
    struct sc_admin_buf b;
    sc_admin_buf_init(&b);
    sc_admin__file_certs_json(&b, test_pki_path("server.pem"), test_pki_path("ca.pem"));
    const char *t = b.data;
    assert_non_null(strstr(t, "{\"source\":\"files\",\"leaf\":{\"spiffe_id\":"
                              "\"spiffe://cluster.local/ns/default/sa/server\",\"serial\":\""));
    assert_non_null(strstr(t, "\"not_after_unix\":"));
    assert_non_null(strstr(t, "\"roots\":[{\"spiffe_id\":null"));
    assert_null(strstr(t, "BEGIN"));
    assert_null(strstr(t, "\"error\""));
    sc_admin_buf_cleanup(&b);

    // A chain file: leaf first, then the intermediate.
    sc_admin__file_certs_json(&b, test_pki_path("chained-chain.pem"), test_pki_path("ca.pem"));
    assert_non_null(strstr(b.data, "\"chain\":[{"));
    sc_admin_buf_cleanup(&b);

    // A key file (no CERTIFICATE block) and a missing file: an error, no key bytes.
    sc_admin__file_certs_json(&b, test_pki_path("server.key"), test_pki_path("missing.pem"));
    assert_non_null(strstr(b.data, "\"leaf\":null"));
    assert_non_null(strstr(b.data, "\"roots\":[]"));
    assert_non_null(strstr(b.data, "\"error\":"));
    assert_null(strstr(b.data, "PRIVATE"));
    assert_null(strstr(b.data, "BEGIN"));
    sc_admin_buf_cleanup(&b);
}

static void test_cert_valid(void **state)
{
    int64_t now = (int64_t)time(NULL);
    assert_true(sc_admin__file_cert_valid(test_pki_path("server.pem"), now));
    assert_false(sc_admin__file_cert_valid(test_pki_path("expired.pem"), now));
    assert_false(sc_admin__file_cert_valid(test_pki_path("notyet.pem"), now));
    assert_false(sc_admin__file_cert_valid(test_pki_path("missing.pem"), now));
    assert_false(sc_admin__file_cert_valid(test_pki_path("server.key"), now));
    // Far in the future the server cert has expired too.
    assert_false(sc_admin__file_cert_valid(test_pki_path("server.pem"), now + 100LL * 365 * 86400));
}

static void test_cert_metrics(void **state)
{
    struct sc_admin_buf b;
    sc_admin_buf_init(&b);
    sc_admin__file_cert_metrics(&b, test_pki_path("server.pem"), test_pki_path("bundle-both.pem"));
    const char *p = strstr(b.data, "seam_cert_expiry_timestamp_seconds{role=\"leaf\",spiffe_id=\""
                                   "spiffe://cluster.local/ns/default/sa/server\"} ");
    assert_non_null(p);
    long long exp = strtoll(strchr(p, '}') + 2, NULL, 10);
    assert_true(exp > (long long)time(NULL));
    assert_non_null(strstr(b.data, "\nseam_trust_bundle_roots 2\n"));
    sc_admin_buf_cleanup(&b);

    // The JSON "not_after_unix" and the metric agree.
    sc_admin__file_certs_json(&b, test_pki_path("server.pem"), NULL);
    const char *q = strstr(b.data, "\"not_after_unix\":");
    assert_non_null(q);
    assert_int_equal(strtoll(q + 17, NULL, 10), exp);
    sc_admin_buf_cleanup(&b);
}

static void test_cert_json_helper_and_family(void **state)
{
    FILE *f = fopen(test_pki_path("twouri.pem"), "r");
    assert_non_null(f);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    struct sc_admin_buf b;
    sc_admin_buf_init(&b);
    sc_admin_buf_cert_json(&b, x);
    X509_free(x);
    assert_true(b.data[0] == '{' && b.data[b.len - 1] == '}');
    assert_non_null(strstr(b.data, "\"spiffe_id\":\"spiffe://"));
    sc_admin_buf_cleanup(&b);

    struct sc_admin_cert_expiry items[2] = {
        {.role = "leaf", .spiffe_id = "spiffe://td/a\"b", .not_after = 2000000000},
        {.role = "root", .spiffe_id = "", .not_after = 2100000000},
    };
    sc_admin_buf_cert_expiry_family(&b, items, 2);
    assert_non_null(strstr(b.data, "# TYPE seam_cert_expiry_timestamp_seconds gauge\n"));
    assert_non_null(strstr(b.data, "seam_cert_expiry_timestamp_seconds{role=\"leaf\","
                                   "spiffe_id=\"spiffe://td/a\\\"b\"} 2000000000\n"));
    assert_non_null(strstr(b.data,
                           "seam_cert_expiry_timestamp_seconds{role=\"root\",spiffe_id=\"\"} "
                           "2100000000\n"));
    sc_admin_buf_cleanup(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_certs_json),
        cmocka_unit_test(test_cert_valid),
        cmocka_unit_test(test_cert_metrics),
        cmocka_unit_test(test_cert_json_helper_and_family),
    };
    return cmocka_run_group_tests(tests, test_pki_setup, test_pki_teardown);
}
