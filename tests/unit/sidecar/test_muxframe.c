// test_muxframe.c — seam-mux/1 and /2 frames (sc/muxframe.h): headers round-trip,
// every frame kind decodes the same whatever the byte split, DATA payloads
// come out as slices without a copy, and each malformed header is refused
// with its reason.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sc/muxframe.h"

// A log of what the decoder reported, as text, to compare whole sequences.
struct rec {
    char log[4096];
    size_t len;
    uint8_t data[1 << 16];
    size_t data_len;
    int stop_after; // return 1 from the n-th callback (0: never)
    int calls;
};

static int note(struct rec *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(r->log + r->len, sizeof(r->log) - r->len, fmt, ap);
    va_end(ap);
    r->len += (size_t)n;
    r->calls++;
    return r->stop_after != 0 && r->calls >= r->stop_after ? 7 : 0;
}

static int on_control(void *arg, enum sc_mux_type type, uint32_t sid, uint32_t arg32,
                      const uint8_t *dest, size_t dest_len)
{
    struct rec *r = arg;
    return note(r, "%s(%u,%u,%.*s)", sc_mux_type_name(type), sid, arg32, (int)dest_len,
                dest ? (const char *)dest : "");
}

static int on_data(void *arg, uint32_t sid, const uint8_t *p, size_t n)
{
    struct rec *r = arg;
    assert_true(n > 0);
    assert_true(r->data_len + n <= sizeof(r->data));
    memcpy(r->data + r->data_len, p, n);
    r->data_len += n;
    (void)sid;
    return 0; // slices are not logged: their split depends on the feed
}

static int on_data_end(void *arg, uint32_t sid, bool fin)
{
    struct rec *r = arg;
    return note(r, "END(%u,%d)", sid, fin);
}

static const struct sc_mux_frame_cbs cbs = {on_control, on_data, on_data_end};

static size_t put_frame(uint8_t *out, enum sc_mux_type t, uint8_t flags, uint32_t sid,
                        const void *payload, uint16_t len)
{
    sc_mux_put_hdr(out, t, flags, len, sid);
    if (len > 0) {
        memcpy(out + SC_MUX_HDR_LEN, payload, len);
    }
    return SC_MUX_HDR_LEN + len;
}

static size_t sample(uint8_t *buf)
{
    uint8_t u[4];
    size_t n = 0;
    n += put_frame(buf + n, SC_MUX_OPEN, 0, 1, NULL, 0);
    n += put_frame(buf + n, SC_MUX_OPEN, 0, 3, "10.0.0.7:8080", 13);
    n += put_frame(buf + n, SC_MUX_DATA, 0, 1, "hello ", 6);
    n += put_frame(buf + n, SC_MUX_DATA, SC_MUX_FLAG_FIN, 1, "world", 5);
    n += put_frame(buf + n, SC_MUX_DATA, SC_MUX_FLAG_FIN, 3, NULL, 0);
    sc_mux_put_u32(u, 65536);
    n += put_frame(buf + n, SC_MUX_WINDOW, 0, 3, u, 4);
    sc_mux_put_u32(u, 1);
    n += put_frame(buf + n, SC_MUX_RST, 0, 3, u, 4);
    sc_mux_put_u32(u, 3);
    n += put_frame(buf + n, SC_MUX_GOAWAY, 0, 0, u, 4);
    return n;
}

static const char *expected =
    "OPEN(1,0,)OPEN(3,0,10.0.0.7:8080)END(1,0)END(1,1)END(3,1)WINDOW(3,65536,)RST(3,1,)"
    "GOAWAY(0,3,)";

static void test_whole_and_every_split(void **state)
{
    (void)state;
    uint8_t buf[512];
    size_t n = sample(buf);
    // In one piece, then cut at every offset, then byte by byte.
    for (size_t cut = 0; cut <= n; cut++) {
        struct rec *r = calloc(1, sizeof(*r));
        struct sc_mux_decoder d;
        const char *err = "x";
        sc_mux_decoder_init(&d);
        assert_int_equal(sc_mux_decode(&d, buf, cut, &cbs, r, &err), 0);
        assert_null(err);
        assert_int_equal(sc_mux_decode(&d, buf + cut, n - cut, &cbs, r, &err), 0);
        assert_string_equal(r->log, expected);
        assert_int_equal(r->data_len, 11);
        assert_memory_equal(r->data, "hello world", 11);
        free(r);
    }
    struct rec *r = calloc(1, sizeof(*r));
    struct sc_mux_decoder d;
    const char *err;
    sc_mux_decoder_init(&d);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(sc_mux_decode(&d, buf + i, 1, &cbs, r, &err), 0);
    }
    assert_string_equal(r->log, expected);
    free(r);
}

static void test_header_bytes(void **state)
{
    (void)state;
    uint8_t h[SC_MUX_HDR_LEN];
    sc_mux_put_hdr(h, SC_MUX_DATA, SC_MUX_FLAG_FIN, 0x1234, 0xA1B2C3D4u);
    const uint8_t want[] = {0, 1, 0x12, 0x34, 0xA1, 0xB2, 0xC3, 0xD4};
    assert_memory_equal(h, want, sizeof(want));
}

static void test_max_data_frame(void **state)
{
    (void)state;
    size_t n = SC_MUX_HDR_LEN + SC_MUX_MAX_DATA;
    uint8_t *buf = malloc(n);
    memset(buf + SC_MUX_HDR_LEN, 'z', SC_MUX_MAX_DATA);
    sc_mux_put_hdr(buf, SC_MUX_DATA, 0, SC_MUX_MAX_DATA, 9);
    struct rec *r = calloc(1, sizeof(*r));
    struct sc_mux_decoder d;
    const char *err;
    sc_mux_decoder_init(&d);
    assert_int_equal(sc_mux_decode(&d, buf, n, &cbs, r, &err), 0);
    assert_string_equal(r->log, "END(9,0)");
    assert_int_equal(r->data_len, SC_MUX_MAX_DATA);
    free(r);
    free(buf);
}

static void expect_error(const uint8_t *hdr, const char *reason)
{
    struct rec *r = calloc(1, sizeof(*r));
    struct sc_mux_decoder d;
    const char *err = NULL;
    uint8_t buf[SC_MUX_HDR_LEN + 8] = {0};
    memcpy(buf, hdr, SC_MUX_HDR_LEN);
    sc_mux_decoder_init(&d);
    assert_int_equal(sc_mux_decode(&d, buf, sizeof(buf), &cbs, r, &err), SC_MUX_EPROTO);
    assert_non_null(err);
    assert_string_equal(err, reason);
    assert_int_equal(r->calls, 0); // nothing of a malformed frame is reported
    free(r);
}

static void test_malformed_headers(void **state)
{
    (void)state;
    const uint8_t unknown_type[] = {9, 0, 0, 0, 0, 0, 0, 1};
    const uint8_t data_flags[] = {0, 2, 0, 0, 0, 0, 0, 1};
    const uint8_t data_sid0[] = {0, 0, 0, 1, 0, 0, 0, 0};
    const uint8_t open_long[] = {1, 0, 1, 0, 0, 0, 0, 1}; // 256 bytes
    const uint8_t rst_len[] = {2, 0, 0, 3, 0, 0, 0, 1};
    const uint8_t window_len[] = {3, 0, 0, 5, 0, 0, 0, 1};
    const uint8_t ctl_flags[] = {3, 1, 0, 4, 0, 0, 0, 1};
    const uint8_t goaway_sid[] = {4, 0, 0, 4, 0, 0, 0, 5};
    const uint8_t rst_sid0[] = {2, 0, 0, 4, 0, 0, 0, 0};
    expect_error(unknown_type, "unknown frame type");
    expect_error(data_flags, "unknown DATA flags");
    expect_error(data_sid0, "DATA on stream 0");
    expect_error(open_long, "OPEN destination longer than 255 bytes");
    expect_error(rst_len, "control frame payload is not 4 bytes");
    expect_error(window_len, "control frame payload is not 4 bytes");
    expect_error(ctl_flags, "flags on a control frame");
    expect_error(goaway_sid, "GOAWAY on a stream");
    expect_error(rst_sid0, "stream 0 on a stream frame");
}

// BLOCKED (seam-mux/2) is an unknown type to a seam-mux/1 decoder, and a
// control frame like WINDOW to a seam-mux/2 one.
static void test_blocked_on_seam_mux_2_only(void **state)
{
    (void)state;
    uint8_t buf[64];
    uint8_t u32[4];
    sc_mux_put_u32(u32, 0x40000);
    size_t n = put_frame(buf, SC_MUX_BLOCKED, 0, 3, u32, 4);
    for (int v2 = 0; v2 < 2; v2++) {
        struct rec *r = calloc(1, sizeof(*r));
        struct sc_mux_decoder d;
        const char *err = NULL;
        sc_mux_decoder_init(&d);
        d.v2 = v2;
        int rc = sc_mux_decode(&d, buf, n, &cbs, r, &err);
        if (v2) {
            assert_int_equal(rc, 0);
            assert_string_equal(r->log, "BLOCKED(3,262144,)");
        } else {
            assert_int_equal(rc, SC_MUX_EPROTO);
            assert_string_equal(err, "unknown frame type");
            assert_int_equal(r->calls, 0);
        }
        free(r);
    }
    const uint8_t bad[][SC_MUX_HDR_LEN] = {
        {5, 0, 0, 3, 0, 0, 0, 1}, // 3-byte payload
        {5, 1, 0, 4, 0, 0, 0, 1}, // flags
        {5, 0, 0, 4, 0, 0, 0, 0}, // stream 0
    };
    const char *why[] = {"control frame payload is not 4 bytes", "flags on a control frame",
                         "stream 0 on a stream frame"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct rec *r = calloc(1, sizeof(*r));
        struct sc_mux_decoder d;
        const char *err = NULL;
        uint8_t b[SC_MUX_HDR_LEN + 8] = {0};
        memcpy(b, bad[i], SC_MUX_HDR_LEN);
        sc_mux_decoder_init(&d);
        d.v2 = true;
        assert_int_equal(sc_mux_decode(&d, b, sizeof(b), &cbs, r, &err), SC_MUX_EPROTO);
        assert_string_equal(err, why[i]);
        free(r);
    }
}

static void test_callback_stops_decoding(void **state)
{
    (void)state;
    uint8_t buf[512];
    size_t n = sample(buf);
    struct rec *r = calloc(1, sizeof(*r));
    r->stop_after = 2;
    struct sc_mux_decoder d;
    const char *err;
    sc_mux_decoder_init(&d);
    assert_int_equal(sc_mux_decode(&d, buf, n, &cbs, r, &err), 7);
    assert_string_equal(r->log, "OPEN(1,0,)OPEN(3,0,10.0.0.7:8080)");
    free(r);
}

int main(void)
{
    // clang-format off
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_and_every_split),
        cmocka_unit_test(test_header_bytes),
        cmocka_unit_test(test_max_data_frame),
        cmocka_unit_test(test_malformed_headers),
        cmocka_unit_test(test_blocked_on_seam_mux_2_only),
        cmocka_unit_test(test_callback_stops_decoding),
    };
    // clang-format on
    return cmocka_run_group_tests(tests, NULL, NULL);
}
