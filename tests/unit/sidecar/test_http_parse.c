// test_http_parse.c — the admin server's HTTP/1.1 request-head parser.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "admin/http_parse.h"

static int parse(const char *s, struct sc_http_request *r)
{
    return sc_http_parse_request(r, s, strlen(s));
}

static void test_simple_get(void **state)
{
    struct sc_http_request r;
    const char *s = "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: t\r\n\r\nTRAILING";
    assert_int_equal(parse(s, &r), 0);
    assert_int_equal(r.method, SC_HTTP_GET);
    assert_int_equal(r.minor_version, 1);
    assert_int_equal(r.target_len, strlen("/metrics?x=1"));
    assert_int_equal(r.path_len, strlen("/metrics"));
    assert_memory_equal(r.target, "/metrics", 8);
    assert_int_equal(r.head_len, strlen(s) - strlen("TRAILING"));
    assert_int_equal(r.num_headers, 2);
    assert_false(r.has_content_length);
    assert_false(r.connection_close);
}

static void test_methods_and_versions(void **state)
{
    struct sc_http_request r;
    assert_int_equal(parse("HEAD / HTTP/1.0\r\n\r\n", &r), 0);
    assert_int_equal(r.method, SC_HTTP_HEAD);
    assert_int_equal(r.minor_version, 0);
    assert_true(r.connection_close); // 1.0 default
    assert_int_equal(parse("POST /drain HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &r), 0);
    assert_int_equal(r.method, SC_HTTP_POST);
    assert_true(r.has_content_length);
    assert_int_equal(parse("DELETE /x HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
    assert_int_equal(r.method, SC_HTTP_OTHER);
    assert_int_equal(parse("GET / HTTP/2.0\r\n\r\n", &r), SC_HTTP_E_VERSION);
    assert_int_equal(parse("GET / HTTP/1.2\r\n\r\n", &r), SC_HTTP_E_VERSION);
    assert_int_equal(parse("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &r), SC_HTTP_E_BAD_REQUEST);
    assert_int_equal(parse("GET / HTTP/1.1 \r\nHost: x\r\n\r\n", &r), SC_HTTP_E_BAD_REQUEST);
    assert_int_equal(parse("GET / HTTPS/1.1\r\nHost: x\r\n\r\n", &r), SC_HTTP_E_BAD_REQUEST);
    assert_int_equal(parse("GET / http/1.1\r\nHost: x\r\n\r\n", &r), SC_HTTP_E_BAD_REQUEST);
}

static void test_bare_lf_and_leading_empty_lines(void **state)
{
    struct sc_http_request r;
    assert_int_equal(parse("\r\nGET / HTTP/1.1\nHost: x\n\n", &r), 0);
    assert_int_equal(r.head_len, strlen("\r\nGET / HTTP/1.1\nHost: x\n\n"));
    assert_int_equal(parse("\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", &r),
                     SC_HTTP_E_BAD_REQUEST);
}

static void test_incomplete(void **state)
{
    struct sc_http_request r;
    const char *full = "GET /healthz/ready HTTP/1.1\r\nHost: x\r\n\r\n";
    size_t n = strlen(full);
    // Every strict prefix is incomplete, never an error and never complete.
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(sc_http_parse_request(&r, full, i), SC_HTTP_INCOMPLETE);
    }
    assert_int_equal(sc_http_parse_request(&r, full, n), 0);
}

static void test_malformed(void **state)
{
    struct sc_http_request r;
    const char *bad[] = {
        "GET\r\n\r\n",
        "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",           // double space
        " GET / HTTP/1.1\r\nHost: x\r\n\r\n",           // leading space
        "GET http://a/ HTTP/1.1\r\nHost: x\r\n\r\n",    // absolute-form not served
        "GET / HTTP/1.1\r\nHost : x\r\n\r\n",           // space before colon (RFC 9112 §5.1)
        "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", // obs-fold
        "GET / HTTP/1.1\r\nHost: x\r\nNo-Colon\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nX: a\x01"
        "b\r\n\r\n",                                    // control char
        "GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n", // bare CR
        "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", // two Hosts
        "GET / HTTP/1.1\r\n\r\n",                       // 1.1 without Host
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1,2\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET /a\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
        "G\x80T / HTTP/1.1\r\nHost: x\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = parse(bad[i], &r);
        if (rc != SC_HTTP_E_BAD_REQUEST) {
            fail_msg("case %zu: got %d, want 400", i, rc);
        }
    }
    // An embedded NUL is malformed too (strlen would stop at it).
    const char nul[] = "GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n";
    assert_int_equal(sc_http_parse_request(&r, nul, sizeof(nul) - 1), SC_HTTP_E_BAD_REQUEST);
    // Errors in a complete request line are reported before the head ends.
    assert_int_equal(parse("BAD LINE\r\nHost: x\r\n", &r), SC_HTTP_E_BAD_REQUEST);
    // ... and an unfinished request line that cannot become valid, at once.
    const char hello[] = "\x16\x03\x01\x02\x00\x01";
    assert_int_equal(sc_http_parse_request(&r, hello, sizeof(hello) - 1), SC_HTTP_E_BAD_REQUEST);
    assert_int_equal(parse("GET /a\tb", &r), SC_HTTP_E_BAD_REQUEST);
    assert_int_equal(parse(" GET", &r), SC_HTTP_E_BAD_REQUEST);
    assert_int_equal(parse("VERYLONGMETHODNAMEXX", &r), SC_HTTP_E_BAD_REQUEST);
    assert_int_equal(parse("\r", &r), SC_HTTP_INCOMPLETE);
    assert_int_equal(parse("GET /abc HT", &r), SC_HTTP_INCOMPLETE);
}

static void test_duplicate_equal_content_length_ok(void **state)
{
    struct sc_http_request r;
    assert_int_equal(
        parse("POST /drain HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n",
              &r),
        0);
    assert_int_equal(r.content_length, 3);
}

static void test_limits(void **state)
{
    struct sc_http_request r;
    char body_ok[128], body_big[128];
    snprintf(body_ok, sizeof(body_ok),
             "POST /drain HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", SC_HTTP_MAX_BODY);
    assert_int_equal(parse(body_ok, &r), 0);
    snprintf(body_big, sizeof(body_big),
             "POST /drain HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", SC_HTTP_MAX_BODY + 1);
    assert_int_equal(parse(body_big, &r), SC_HTTP_E_TOO_LARGE);
    assert_int_equal(
        parse("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", &r),
        SC_HTTP_E_TOO_LARGE);
    assert_int_equal(parse("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", &r),
                     SC_HTTP_E_NOT_IMPLEMENTED);

    // A head of more than SC_HTTP_MAX_HEAD bytes: 431, whether or not it ends.
    size_t cap = SC_HTTP_MAX_HEAD * 2;
    char *big = malloc(cap + 1);
    assert_non_null(big);
    strcpy(big, "GET / HTTP/1.1\r\nHost: x\r\n");
    while (strlen(big) < SC_HTTP_MAX_HEAD + 10) {
        strcat(big,
               "X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    assert_int_equal(sc_http_parse_request(&r, big, strlen(big)), SC_HTTP_E_HEADERS_TOO_LARGE);
    strcat(big, "\r\n");
    assert_int_equal(sc_http_parse_request(&r, big, strlen(big)), SC_HTTP_E_HEADERS_TOO_LARGE);
    // One long line without a newline: 431 too.
    memset(big, 'a', cap);
    memcpy(big, "GET /", 5);
    assert_int_equal(sc_http_parse_request(&r, big, cap), SC_HTTP_E_HEADERS_TOO_LARGE);

    // Too many header fields: 431 even though the head is small.
    strcpy(big, "GET / HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < SC_HTTP_MAX_HEADERS; i++) {
        strcat(big, "A: b\r\n");
    }
    strcat(big, "\r\n");
    assert_true(strlen(big) < SC_HTTP_MAX_HEAD);
    assert_int_equal(sc_http_parse_request(&r, big, strlen(big)), SC_HTTP_E_HEADERS_TOO_LARGE);
    free(big);
}

static void test_connection_close_token(void **state)
{
    struct sc_http_request r;
    assert_int_equal(
        parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n", &r), 0);
    assert_true(r.connection_close);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: closed\r\n\r\n", &r), 0);
    assert_false(r.connection_close);
}

static void test_status_text(void **state)
{
    assert_string_equal(sc_http_status_text(431), "Request Header Fields Too Large");
    assert_string_equal(sc_http_status_text(413), "Content Too Large");
    assert_string_equal(sc_http_status_text(200), "OK");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_get),
        cmocka_unit_test(test_methods_and_versions),
        cmocka_unit_test(test_bare_lf_and_leading_empty_lines),
        cmocka_unit_test(test_incomplete),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_duplicate_equal_content_length_ok),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_connection_close_token),
        cmocka_unit_test(test_status_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
