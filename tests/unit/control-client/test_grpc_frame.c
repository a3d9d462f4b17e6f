// Unit tests for control-client/src/grpc_frame.c: prefix, reassembly (split
// and packed messages, cap before allocation), status mapping, grpc-message
// and grpc-timeout codecs.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <nghttp2/nghttp2.h>

#include "cc/grpc.h"

struct collect {
    int count;
    size_t lens[16];
    uint8_t first[16];
    bool compressed[16];
    int stop_after; // stop (return 1) after this many messages, 0 = never
};

static int on_msg(void *arg, const uint8_t *msg, size_t len, bool compressed)
{
    struct collect *c = arg;
    assert_non_null(msg);
    if (c->count < 16) {
        c->lens[c->count] = len;
        c->first[c->count] = len ? msg[0] : 0;
        c->compressed[c->count] = compressed;
    }
    c->count++;
    return (c->stop_after && c->count >= c->stop_after) ? 1 : 0;
}

static size_t put_msg(uint8_t *out, uint8_t fill, uint32_t len)
{
    cc_grpc_prefix_encode(out, len, false);
    memset(out + CC_GRPC_PREFIX_LEN, fill, len);
    return CC_GRPC_PREFIX_LEN + len;
}

static void test_prefix(void **state)
{
    uint8_t p[5];
    cc_grpc_prefix_encode(p, 0x01020304, true);
    uint8_t want[5] = {1, 1, 2, 3, 4};
    assert_memory_equal(p, want, 5);
    cc_grpc_prefix_encode(p, 7, false);
    uint8_t want2[5] = {0, 0, 0, 0, 7};
    assert_memory_equal(p, want2, 5);
}

static void test_packed_and_split(void **state)
{
    uint8_t buf[1024];
    size_t n = 0;
    n += put_msg(buf + n, 'a', 10);
    n += put_msg(buf + n, 'b', 0);
    n += put_msg(buf + n, 'c', 300);
    // Every split position of the whole stream, in 1..3 chunks.
    for (size_t cut1 = 0; cut1 <= n; cut1 += 7) {
        for (size_t cut2 = cut1; cut2 <= n; cut2 += 13) {
            struct collect c = {0};
            struct cc_grpc_reasm r;
            cc_grpc_reasm_init(&r, 0);
            assert_int_equal(cc_grpc_reasm_feed(&r, buf, cut1, on_msg, &c), 0);
            assert_int_equal(cc_grpc_reasm_feed(&r, buf + cut1, cut2 - cut1, on_msg, &c), 0);
            assert_int_equal(cc_grpc_reasm_feed(&r, buf + cut2, n - cut2, on_msg, &c), 0);
            assert_int_equal(c.count, 3);
            assert_int_equal(c.lens[0], 10);
            assert_int_equal(c.first[0], 'a');
            assert_int_equal(c.lens[1], 0);
            assert_int_equal(c.lens[2], 300);
            assert_int_equal(c.first[2], 'c');
            assert_false(cc_grpc_reasm_partial(&r));
            cc_grpc_reasm_cleanup(&r);
        }
    }
}

static void test_byte_by_byte(void **state)
{
    uint8_t buf[64];
    size_t n = put_msg(buf, 'x', 20);
    struct collect c = {0};
    struct cc_grpc_reasm r;
    cc_grpc_reasm_init(&r, 0);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(c.count, 0);
        assert_int_equal(cc_grpc_reasm_feed(&r, buf + i, 1, on_msg, &c), 0);
        if (i + 1 < n) {
            assert_true(cc_grpc_reasm_partial(&r));
        }
    }
    assert_int_equal(c.count, 1);
    assert_int_equal(c.lens[0], 20);
    cc_grpc_reasm_cleanup(&r);
}

static void test_cap_before_alloc(void **state)
{
    // A prefix announcing 4 GiB - 1 with no body: refused on the prefix alone.
    uint8_t p[5] = {0, 0xff, 0xff, 0xff, 0xff};
    struct collect c = {0};
    struct cc_grpc_reasm r;
    cc_grpc_reasm_init(&r, 100);
    assert_int_equal(cc_grpc_reasm_feed(&r, p, 5, on_msg, &c), -1);
    assert_int_equal(r.status, CC_GRPC_RESOURCE_EXHAUSTED);
    assert_null(r.buf);
    assert_non_null(r.error);
    // Sticky: later feeds fail without callbacks.
    uint8_t ok[8];
    size_t n = put_msg(ok, 'z', 3);
    assert_int_equal(cc_grpc_reasm_feed(&r, ok, n, on_msg, &c), -1);
    assert_int_equal(c.count, 0);
    cc_grpc_reasm_cleanup(&r);

    // Exactly at the cap is fine; one above is not.
    uint8_t buf[256];
    cc_grpc_reasm_init(&r, 100);
    n = put_msg(buf, 'q', 100);
    assert_int_equal(cc_grpc_reasm_feed(&r, buf, n, on_msg, &c), 0);
    assert_int_equal(c.count, 1);
    n = put_msg(buf, 'q', 101);
    assert_int_equal(cc_grpc_reasm_feed(&r, buf, 3, on_msg, &c), 0);
    assert_int_equal(cc_grpc_reasm_feed(&r, buf + 3, n - 3, on_msg, &c), -1);
    assert_int_equal(r.status, CC_GRPC_RESOURCE_EXHAUSTED);
    assert_int_equal(c.count, 1);
    cc_grpc_reasm_cleanup(&r);
}

static void test_bad_flag_and_stop(void **state)
{
    uint8_t buf[64];
    size_t n = put_msg(buf, 'a', 4);
    buf[0] = 2;
    struct collect c = {0};
    struct cc_grpc_reasm r;
    cc_grpc_reasm_init(&r, 0);
    assert_int_equal(cc_grpc_reasm_feed(&r, buf, n, on_msg, &c), -1);
    assert_int_equal(r.status, CC_GRPC_INTERNAL);
    cc_grpc_reasm_cleanup(&r);

    // Compressed flag 1 is reported, the caller decides.
    buf[0] = 1;
    cc_grpc_reasm_init(&r, 0);
    assert_int_equal(cc_grpc_reasm_feed(&r, buf, n, on_msg, &c), 0);
    assert_true(c.compressed[0]);
    cc_grpc_reasm_cleanup(&r);

    // A callback stop ends the feed; later messages are not delivered.
    struct collect c2 = {.stop_after = 1};
    n = put_msg(buf, 'a', 4);
    n += put_msg(buf + n, 'b', 4);
    cc_grpc_reasm_init(&r, 0);
    assert_int_equal(cc_grpc_reasm_feed(&r, buf, n, on_msg, &c2), -1);
    assert_int_equal(c2.count, 1);
    assert_int_equal(r.status, CC_GRPC_CANCELLED);
    cc_grpc_reasm_cleanup(&r);

    // Truncated stream: partial reports it, cleanup frees the buffer.
    cc_grpc_reasm_init(&r, 0);
    n = put_msg(buf, 'a', 20);
    assert_int_equal(cc_grpc_reasm_feed(&r, buf, 10, on_msg, &c), 0);
    assert_true(cc_grpc_reasm_partial(&r));
    cc_grpc_reasm_cleanup(&r);
}

static void test_status_names(void **state)
{
    assert_string_equal(cc_grpc_status_name(0), "OK");
    assert_string_equal(cc_grpc_status_name(16), "UNAUTHENTICATED");
    assert_string_equal(cc_grpc_status_name(4), "DEADLINE_EXCEEDED");
    assert_string_equal(cc_grpc_status_name(17), "UNKNOWN");
    assert_string_equal(cc_grpc_status_name(-1), "UNKNOWN");
    for (int i = 0; i <= 16; i++) {
        assert_int_equal(cc_grpc_status_from_name(cc_grpc_status_name(i)), i);
    }
    assert_int_equal(cc_grpc_status_from_name("nope"), -1);
}

static void test_status_parse(void **state)
{
    int code = -5;
    assert_int_equal(cc_grpc_status_parse(&code, "0", 1), 0);
    assert_int_equal(code, 0);
    assert_int_equal(cc_grpc_status_parse(&code, "16", 2), 0);
    assert_int_equal(code, 16);
    assert_int_equal(cc_grpc_status_parse(&code, "99", 2), 0);
    assert_int_equal(code, 99);
    assert_int_equal(cc_grpc_status_parse(&code, "", 0), -1);
    assert_int_equal(cc_grpc_status_parse(&code, "01", 2), -1);
    assert_int_equal(cc_grpc_status_parse(&code, "-1", 2), -1);
    assert_int_equal(cc_grpc_status_parse(&code, "1 ", 2), -1);
    assert_int_equal(cc_grpc_status_parse(&code, "99999999999", 11), -1);
    assert_int_equal(cc_grpc_status_parse(&code, "4294967296", 10), -1);
}

static void test_status_mapping(void **state)
{
    assert_int_equal(cc_grpc_status_from_http(400), CC_GRPC_INTERNAL);
    assert_int_equal(cc_grpc_status_from_http(401), CC_GRPC_UNAUTHENTICATED);
    assert_int_equal(cc_grpc_status_from_http(403), CC_GRPC_PERMISSION_DENIED);
    assert_int_equal(cc_grpc_status_from_http(404), CC_GRPC_UNIMPLEMENTED);
    assert_int_equal(cc_grpc_status_from_http(429), CC_GRPC_UNAVAILABLE);
    assert_int_equal(cc_grpc_status_from_http(431), CC_GRPC_INTERNAL);
    assert_int_equal(cc_grpc_status_from_http(502), CC_GRPC_UNAVAILABLE);
    assert_int_equal(cc_grpc_status_from_http(503), CC_GRPC_UNAVAILABLE);
    assert_int_equal(cc_grpc_status_from_http(504), CC_GRPC_UNAVAILABLE);
    assert_int_equal(cc_grpc_status_from_http(200), CC_GRPC_UNKNOWN);
    assert_int_equal(cc_grpc_status_from_http(500), CC_GRPC_UNKNOWN);

    assert_int_equal(cc_grpc_status_from_h2_error(NGHTTP2_CANCEL, true), CC_GRPC_DEADLINE_EXCEEDED);
    assert_int_equal(cc_grpc_status_from_h2_error(NGHTTP2_CANCEL, false), CC_GRPC_CANCELLED);
    assert_int_equal(cc_grpc_status_from_h2_error(NGHTTP2_REFUSED_STREAM, false),
                     CC_GRPC_UNAVAILABLE);
    assert_int_equal(cc_grpc_status_from_h2_error(NGHTTP2_ENHANCE_YOUR_CALM, false),
                     CC_GRPC_RESOURCE_EXHAUSTED);
    assert_int_equal(cc_grpc_status_from_h2_error(NGHTTP2_INADEQUATE_SECURITY, false),
                     CC_GRPC_PERMISSION_DENIED);
    assert_int_equal(cc_grpc_status_from_h2_error(NGHTTP2_PROTOCOL_ERROR, false), CC_GRPC_INTERNAL);
    assert_int_equal(cc_grpc_status_from_h2_error(NGHTTP2_NO_ERROR, false), CC_GRPC_INTERNAL);
    assert_int_equal(cc_grpc_status_from_h2_error(NGHTTP2_STREAM_CLOSED, false), -1);
    assert_int_equal(cc_grpc_status_from_h2_error(0x77, false), CC_GRPC_INTERNAL);
}

static void test_message_codec(void **state)
{
    const char raw[] = "bad token: 100% \xc3\xa9\n";
    char *enc = cc_grpc_message_encode(raw, strlen(raw));
    assert_string_equal(enc, "bad token: 100%25 %C3%A9%0A");
    char *dec = cc_grpc_message_decode(enc, strlen(enc));
    // Control characters become '?', UTF-8 bytes come back.
    assert_string_equal(dec, "bad token: 100% \xc3\xa9?");
    free(enc);
    free(dec);

    // Malformed escapes pass through unchanged; decoding never fails.
    const char *bad[] = {"%", "%4", "%zz", "abc%", "%%41"};
    const char *want[] = {"%", "%4", "%zz", "abc%", "%A"};
    for (size_t i = 0; i < 5; i++) {
        dec = cc_grpc_message_decode(bad[i], strlen(bad[i]));
        assert_string_equal(dec, want[i]);
        free(dec);
    }
    // %00 never yields an embedded NUL.
    dec = cc_grpc_message_decode("a%00b", 5);
    assert_string_equal(dec, "a?b");
    free(dec);
    enc = cc_grpc_message_encode("", 0);
    assert_string_equal(enc, "");
    free(enc);
}

static void test_timeout(void **state)
{
    char out[CC_GRPC_TIMEOUT_MAX_LEN];
    assert_int_equal(cc_grpc_timeout_encode(out, 10000), 6);
    assert_string_equal(out, "10000m");
    cc_grpc_timeout_encode(out, 0);
    assert_string_equal(out, "1m");
    cc_grpc_timeout_encode(out, 99999999);
    assert_string_equal(out, "99999999m");
    cc_grpc_timeout_encode(out, 100000000);
    assert_string_equal(out, "100000S");
    cc_grpc_timeout_encode(out, 100000001);
    assert_string_equal(out, "100001S");
    cc_grpc_timeout_encode(out, UINT64_MAX);
    assert_string_equal(out, "99999999H");

    uint64_t ms = 0;
    assert_int_equal(cc_grpc_timeout_parse(&ms, "10S", 3), 0);
    assert_int_equal(ms, 10000);
    assert_int_equal(cc_grpc_timeout_parse(&ms, "2M", 2), 0);
    assert_int_equal(ms, 120000);
    assert_int_equal(cc_grpc_timeout_parse(&ms, "1H", 2), 0);
    assert_int_equal(ms, 3600000);
    assert_int_equal(cc_grpc_timeout_parse(&ms, "250m", 4), 0);
    assert_int_equal(ms, 250);
    assert_int_equal(cc_grpc_timeout_parse(&ms, "1500u", 5), 0);
    assert_int_equal(ms, 2);
    assert_int_equal(cc_grpc_timeout_parse(&ms, "1n", 2), 0);
    assert_int_equal(ms, 1);
    assert_int_equal(cc_grpc_timeout_parse(&ms, "99999999H", 9), 0);
    assert_int_equal(ms, 99999999ull * 3600000);
    assert_int_equal(cc_grpc_timeout_parse(&ms, "123456789S", 10), -1);
    assert_int_equal(cc_grpc_timeout_parse(&ms, "S", 1), -1);
    assert_int_equal(cc_grpc_timeout_parse(&ms, "10", 2), -1);
    assert_int_equal(cc_grpc_timeout_parse(&ms, "10s", 3), -1);
    assert_int_equal(cc_grpc_timeout_parse(&ms, "1 S", 3), -1);
    // Round trip for a spread of values.
    for (uint64_t v = 1; v < UINT64_MAX / 16; v = v * 7 + 3) {
        size_t n = cc_grpc_timeout_encode(out, v);
        assert_int_equal(cc_grpc_timeout_parse(&ms, out, n), 0);
        if (v <= 99999999ull * 3600000) {
            assert_true(ms >= v);
        }
    }
}

static void test_content_type(void **state)
{
    assert_true(cc_grpc_content_type_ok("application/grpc", 16));
    assert_true(cc_grpc_content_type_ok("application/grpc+proto", 22));
    assert_true(cc_grpc_content_type_ok("application/grpc;charset=x", 26));
    assert_false(cc_grpc_content_type_ok("application/grpcx", 17));
    assert_false(cc_grpc_content_type_ok("text/html", 9));
    assert_false(cc_grpc_content_type_ok("application/grp", 15));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefix),
        cmocka_unit_test(test_packed_and_split),
        cmocka_unit_test(test_byte_by_byte),
        cmocka_unit_test(test_cap_before_alloc),
        cmocka_unit_test(test_bad_flag_and_stop),
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_status_parse),
        cmocka_unit_test(test_status_mapping),
        cmocka_unit_test(test_message_codec),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_content_type),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
