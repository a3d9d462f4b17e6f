// test_metrics.c — the Prometheus renderer, the JSON/label escaping and the
// TLS-failure ring.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "sc/admin.h"
#include "sc/failures.h"
#include "sc/stats.h"

// sample_value finds the line "<series> <value>" in |text| and returns the value.
static double sample_value(const char *text, const char *series)
{
    size_t n = strlen(series);
    const char *p = text;
    while ((p = strstr(p, series)) != NULL) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ') {
            return strtod(p + n + 1, NULL);
        }
        p += n;
    }
    fail_msg("series %s not found", series);
    return -1;
}

static int count_lines_starting(const char *text, const char *prefix)
{
    int n = 0;
    size_t pl = strlen(prefix);
    for (const char *p = text; p != NULL && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, prefix, pl) == 0) {
            n++;
        }
    }
    return n;
}

static void fill(struct sc_worker_stats *w, int k)
{
    memset(w, 0, sizeof(*w));
    w->conn_opened[SC_DIR_INBOUND][SC_MODE_MTLS] = 10 * k;
    w->conn_closed[SC_DIR_INBOUND][SC_MODE_MTLS] = 7 * k;
    w->conn_failed[SC_DIR_OUTBOUND][SC_MODE_MTLS] = k;
    w->bytes_received[SC_DIR_OUTBOUND] = 1000 * k;
    w->bytes_sent[SC_DIR_OUTBOUND] = 2000 * k;
    w->hs_failures[SC_DIR_INBOUND][SC_TLS_FAIL_EXPIRED] = k;
    w->hs_failures[SC_DIR_OUTBOUND][SC_TLS_FAIL_ID_MISMATCH] = 2 * k;
    w->authz_allow = 5 * k;
    w->authz_deny = k;
    w->loop_lag_us = 1500 * k;
}

static void test_sums_and_labels(void **state)
{
    struct sc_worker_stats w[2];
    fill(&w[0], 1);
    fill(&w[1], 2);
    struct sc_worker_stats *ptrs[3] = {&w[0], &w[1], NULL}; // a worker not started yet
    struct sc_admin_hooks h = {.num_workers = 3, .worker_stats = ptrs};
    struct sc_admin_buf out;
    sc_admin_buf_init(&out);
    sc_metrics_render(&out, &h, 2500);
    const char *t = out.data;

    assert_float_equal(
        sample_value(t, "seam_connections_opened_total{direction=\"inbound\",mode=\"mtls\"}"), 30,
        0);
    assert_float_equal(
        sample_value(t, "seam_connections_closed_total{direction=\"inbound\",mode=\"mtls\"}"), 21,
        0);
    assert_float_equal(
        sample_value(t, "seam_connections_active{direction=\"inbound\",mode=\"mtls\"}"), 9, 0);
    assert_float_equal(
        sample_value(t, "seam_connections_active{direction=\"outbound\",mode=\"plain\"}"), 0, 0);
    assert_float_equal(
        sample_value(t, "seam_connections_failed_total{direction=\"outbound\",mode=\"mtls\"}"), 3,
        0);
    assert_float_equal(sample_value(t, "seam_received_bytes_total{direction=\"outbound\"}"), 3000,
                       0);
    assert_float_equal(sample_value(t, "seam_sent_bytes_total{direction=\"outbound\"}"), 6000, 0);
    assert_float_equal(
        sample_value(t,
                     "seam_tls_handshake_failures_total{direction=\"inbound\",reason=\"expired\"}"),
        3, 0);
    assert_float_equal(sample_value(t, "seam_tls_handshake_failures_total{direction=\"outbound\","
                                       "reason=\"spiffe_id_mismatch\"}"),
                       6, 0);
    // Every reason is present for both directions (bounded label set, no gaps).
    assert_int_equal(count_lines_starting(t, "seam_tls_handshake_failures_total{"),
                     2 * SC_TLS_FAIL_MAX);
    assert_float_equal(sample_value(t, "seam_authz_decisions_total{result=\"allow\"}"), 15, 0);
    assert_float_equal(sample_value(t, "seam_authz_decisions_total{result=\"deny\"}"), 3, 0);
    assert_float_equal(sample_value(t, "seam_worker_loop_lag_seconds{worker=\"1\"}"), 0.003, 1e-9);
    assert_float_equal(sample_value(t, "seam_worker_loop_lag_seconds{worker=\"2\"}"), 0, 0);
    assert_float_equal(sample_value(t, "seam_main_loop_lag_seconds"), 0.0025, 1e-9);
    assert_float_equal(sample_value(t, "seam_workers"), 3, 0);
    assert_non_null(strstr(t, "seam_build_info{version=\"" SEAM_VERSION "\"} 1\n"));
    assert_true(sample_value(t, "seam_process_resident_memory_bytes") > 0);
    assert_true(sample_value(t, "seam_process_open_fds") >= 3);
    // Ends with a newline, as the text format requires.
    assert_int_equal(t[out.len - 1], '\n');
    sc_admin_buf_cleanup(&out);
}

static void test_histogram_cumulative(void **state)
{
    struct sc_worker_stats w[2];
    memset(w, 0, sizeof(w));
    // Worker 0: 0.3 ms, 2 ms, 2 ms, 7 s (overflow → +Inf); worker 1: 40 ms.
    sc_stats_observe_handshake(&w[0], 300);
    sc_stats_observe_handshake(&w[0], 2000);
    sc_stats_observe_handshake(&w[0], 2000);
    sc_stats_observe_handshake(&w[0], 7000000);
    sc_stats_observe_handshake(&w[1], 40000);
    struct sc_worker_stats *ptrs[2] = {&w[0], &w[1]};
    struct sc_admin_hooks h = {.num_workers = 2, .worker_stats = ptrs};
    struct sc_admin_buf out;
    sc_admin_buf_init(&out);
    sc_metrics_render(&out, &h, 0);
    const char *t = out.data;
    const char *n = "seam_tls_handshake_duration_seconds";
    char series[128];

    assert_non_null(strstr(t, "# TYPE seam_tls_handshake_duration_seconds histogram\n"));
    assert_int_equal(count_lines_starting(t, "seam_tls_handshake_duration_seconds_bucket{"),
                     SC_HS_BUCKETS + 1);
    const struct {
        const char *suffix;
        double want, epsilon;
    } samples[] = {
        {"_bucket{le=\"0.0005\"}", 1, 0},
        {"_bucket{le=\"0.001\"}", 1, 0},
        {"_bucket{le=\"0.0025\"}", 3, 0},
        {"_bucket{le=\"0.05\"}", 4, 0},
        {"_bucket{le=\"5\"}", 4, 0},
        {"_bucket{le=\"+Inf\"}", 5, 0},
        {"_count", 5, 0},
        {"_sum", 7.0443, 1e-9},
    };
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        snprintf(series, sizeof(series), "%s%s", n, samples[i].suffix);
        assert_float_equal(sample_value(t, series), samples[i].want, samples[i].epsilon);
    }

    // Buckets never decrease, in le order, and +Inf comes last, then _sum, _count.
    const char *p = strstr(t, "seam_tls_handshake_duration_seconds_bucket{");
    double prev = -1, prev_le = -1;
    for (int i = 0; i < SC_HS_BUCKETS; i++) {
        const char *le = strstr(p, "le=\"") + 4;
        double lev = strtod(le, NULL);
        const char *v = strstr(p, "} ") + 2;
        double val = strtod(v, NULL);
        assert_true(lev > prev_le);
        assert_true(val >= prev);
        prev_le = lev;
        prev = val;
        p = strchr(p, '\n') + 1;
    }
    assert_true(strncmp(p, "seam_tls_handshake_duration_seconds_bucket{le=\"+Inf\"}", 53) == 0);
    p = strchr(p, '\n') + 1;
    assert_true(strncmp(p, "seam_tls_handshake_duration_seconds_sum ", 40) == 0);
    p = strchr(p, '\n') + 1;
    assert_true(strncmp(p, "seam_tls_handshake_duration_seconds_count ", 42) == 0);
    sc_admin_buf_cleanup(&out);
}

static void extra(void *ctx, struct sc_admin_buf *out)
{
    (*(int *)ctx)++;
    sc_admin_buf_printf(out, "# HELP seam_test_extra x\n# TYPE seam_test_extra gauge\n"
                             "seam_test_extra 42\n");
}

// test_promtool_accepts pipes the output through `promtool check metrics`
// (Debian prometheus) when it is installed.
static void test_promtool_accepts(void **state)
{
    if (access("/usr/bin/promtool", X_OK) != 0) {
        skip();
    }
    struct sc_worker_stats w;
    fill(&w, 3);
    sc_stats_observe_handshake(&w, 1234);
    struct sc_worker_stats *ptrs[1] = {&w};
    int calls = 0;
    struct sc_admin_hooks h = {
        .num_workers = 1, .worker_stats = ptrs, .ctx = &calls, .extra_metrics = extra};
    struct sc_admin_buf out;
    sc_admin_buf_init(&out);
    sc_metrics_render(&out, &h, 10);
    assert_int_equal(calls, 1);
    assert_non_null(strstr(out.data, "\nseam_test_extra 42\n"));
    char path[] = "/tmp/seam-metrics-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, out.data, out.len), (ssize_t)out.len);
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s", path);
    int rc = system(cmd);
    unlink(path);
    assert_true(WIFEXITED(rc));
    assert_int_equal(WEXITSTATUS(rc), 0);
    sc_admin_buf_cleanup(&out);
}

static void test_json_escaping(void **state)
{
    struct sc_admin_buf b;
    sc_admin_buf_init(&b);
    sc_admin_buf_json_string(&b, "a\"b\\c\nd\x01\xc3\xa9\xff\xed\xa0\x80z");
    // é stays UTF-8; an invalid byte and a surrogate encoding become \u00XX.
    assert_string_equal(b.data, "\"a\\\"b\\\\c\\nd\\u0001\xc3\xa9\\u00ff\\u00ed\\u00a0\\u0080z\"");
    sc_admin_buf_cleanup(&b);
    sc_admin_buf_json_string(&b, NULL);
    assert_string_equal(b.data, "null");
    sc_admin_buf_cleanup(&b);
    sc_admin_buf_label_value(&b, "x\"y\\z\nw");
    assert_string_equal(b.data, "x\\\"y\\\\z\\nw");
    sc_admin_buf_cleanup(&b);
    // printf longer than the small stack buffer.
    char big[1000];
    memset(big, 'q', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    sc_admin_buf_printf(&b, "<%s>", big);
    assert_int_equal(b.len, 1001);
    assert_int_equal(b.data[1000], '>');
    sc_admin_buf_cleanup(&b);
}

static void test_failures_ring(void **state)
{
    sc_failures_reset();
    struct sc_admin_buf b;
    sc_admin_buf_init(&b);
    sc_failures_render_json(&b);
    assert_string_equal(b.data, "{\"total\":0,\"max\":64,\"failures\":[]}");
    sc_admin_buf_cleanup(&b);

    sc_failures_record(SC_DIR_INBOUND, SC_TLS_FAIL_EXPIRED, "127.0.0.1:5555", NULL, "cert expired");
    sc_failures_record(SC_DIR_OUTBOUND, SC_TLS_FAIL_ID_MISMATCH, "[::1]:443",
                       "spiffe://td/ns/x/sa/y", "want \"spiffe://td/a\"");
    sc_failures_record(SC_DIR_INBOUND, SC_TLS_FAIL_NOT_TLS, "127.0.0.1:1", "-", NULL);
    sc_failures_render_json(&b);
    const char *t = b.data;
    assert_non_null(strstr(t, "{\"total\":3,"));
    // Newest first.
    const char *p1 = strstr(t, "\"reason\":\"not_tls\"");
    const char *p2 = strstr(t, "\"reason\":\"spiffe_id_mismatch\"");
    const char *p3 = strstr(t, "\"reason\":\"expired\"");
    assert_non_null(p1);
    assert_non_null(p2);
    assert_non_null(p3);
    assert_true(p1 < p2 && p2 < p3);
    assert_non_null(strstr(t, "\"direction\":\"outbound\",\"reason\":\"spiffe_id_mismatch\","
                              "\"peer\":\"[::1]:443\",\"peer_id\":\"spiffe://td/ns/x/sa/y\","
                              "\"detail\":\"want \\\"spiffe://td/a\\\"\""));
    assert_non_null(strstr(t, "\"peer\":\"127.0.0.1:1\",\"peer_id\":null,\"detail\":\"\""));
    assert_non_null(strstr(t, "\"time\":\"20"));
    sc_admin_buf_cleanup(&b);

    // Overflow keeps the newest SC_FAILURES_MAX; total keeps counting.
    for (int i = 0; i < 100; i++) {
        char peer[32];
        snprintf(peer, sizeof(peer), "127.0.0.1:%d", 10000 + i);
        sc_failures_record(SC_DIR_INBOUND, SC_TLS_FAIL_UNKNOWN_CA, peer, NULL, NULL);
    }
    assert_int_equal(sc_failures_total(), 103);
    sc_failures_render_json(&b);
    int entries = 0;
    for (const char *p = b.data; (p = strstr(p, "\"reason\":")) != NULL; p++) {
        entries++;
    }
    assert_int_equal(entries, SC_FAILURES_MAX);
    assert_non_null(strstr(b.data, "127.0.0.1:10099"));
    assert_null(strstr(b.data, "127.0.0.1:10035\""));
    assert_non_null(strstr(b.data, "127.0.0.1:10036\""));
    sc_admin_buf_cleanup(&b);
    sc_failures_reset();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sums_and_labels),  cmocka_unit_test(test_histogram_cumulative),
        cmocka_unit_test(test_promtool_accepts), cmocka_unit_test(test_json_escaping),
        cmocka_unit_test(test_failures_ring),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
