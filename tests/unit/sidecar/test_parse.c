// test_parse.c — durations, sizes, host:port parsing and address formatting.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <netinet/in.h>

#include "sc/parse.h"

static uint64_t dur(const char *s)
{
    uint64_t ms = 12345;
    const char *err = NULL;
    if (sc_parse_duration_ms(s, &ms, &err) != 0) {
        fail_msg("duration '%s' rejected: %s", s, err ? err : "(no reason)");
    }
    return ms;
}

static void dur_bad(const char *s, const char *needle)
{
    uint64_t ms = 777;
    const char *err = NULL;
    if (sc_parse_duration_ms(s, &ms, &err) == 0) {
        fail_msg("duration '%s' accepted as %llu", s ? s : "(null)", (unsigned long long)ms);
    }
    assert_non_null(err);
    if (strstr(err, needle) == NULL) {
        fail_msg("duration '%s': reason '%s' lacks '%s'", s ? s : "(null)", err, needle);
    }
    // Output untouched on error.
    assert_int_equal(ms, 777);
}

static void test_duration_units(void **state)
{
    assert_int_equal(dur("1500ms"), 1500);
    assert_int_equal(dur("0ms"), 0);
    assert_int_equal(dur("10s"), 10000);
    assert_int_equal(dur("0s"), 0);
    assert_int_equal(dur("5m"), 300000);
    assert_int_equal(dur("1h"), 3600000);
    assert_int_equal(dur("25s"), 25000);
    assert_int_equal(dur("2h30m"), 9000000);
    assert_int_equal(dur("1h1m1s1ms"), 3661001);
    assert_int_equal(dur("1m30s"), 90000);
    assert_int_equal(dur("90m"), 5400000);
    assert_int_equal(dur("1.5s"), 1500);
    assert_int_equal(dur("0.5h"), 1800000);
    assert_int_equal(dur("1.5m"), 90000);
    assert_int_equal(dur(".5s"), 500);
    assert_int_equal(dur("1.s"), 1000);
    assert_int_equal(dur("2.5ms"), 2); // truncated to whole milliseconds
    assert_int_equal(dur("0.0001s"), 0);
    assert_int_equal(dur("1.123456789123s"), 1123);
    assert_int_equal(dur("007s"), 7000);
}

static void test_duration_bare_seconds(void **state)
{
    assert_int_equal(dur("10"), 10000);
    assert_int_equal(dur("0"), 0);
    assert_int_equal(dur("86400"), 86400000);
}

static void test_duration_errors(void **state)
{
    dur_bad(NULL, "empty");
    dur_bad("", "empty");
    dur_bad("-1s", "negative");
    dur_bad("-5", "negative");
    dur_bad("+5s", "number");
    dur_bad("5x", "unit");
    dur_bad("5d", "unit");
    dur_bad("5S", "unit");
    dur_bad("5us", "unit");
    dur_bad("5sec", "unit");
    dur_bad("1.5", "unit");
    dur_bad("1h30", "unit");
    dur_bad("s", "number");
    dur_bad("ms", "number");
    dur_bad(".s", "digits");
    dur_bad(" 5s", "number");
    dur_bad("5s ", "unit");
    dur_bad("5 s", "unit");
    dur_bad("1.2.3s", "unit");
}

static void test_duration_overflow(void **state)
{
    // UINT64_MAX = 18446744073709551615 ms
    assert_int_equal(dur("18446744073709551615ms"), UINT64_MAX);
    dur_bad("18446744073709551616ms", "overflow");
    dur_bad("99999999999999999999999ms", "overflow");
    assert_int_equal(dur("18446744073709551s"), 18446744073709551000ULL);
    dur_bad("18446744073709552s", "overflow");
    dur_bad("18446744073709552", "overflow"); // bare seconds
    dur_bad("5124095576030432h", "overflow");
    dur_bad("18446744073709551615ms1ms", "overflow");
    dur_bad("5124095576030431h1h", "overflow");
    char longs[400];
    memset(longs, '1', sizeof(longs) - 2);
    longs[sizeof(longs) - 2] = 's';
    longs[sizeof(longs) - 1] = '\0';
    dur_bad(longs, "too long");
}

static uint64_t size(const char *s)
{
    uint64_t v = 12345;
    const char *err = NULL;
    if (sc_parse_size(s, &v, &err) != 0) {
        fail_msg("size '%s' rejected: %s", s, err ? err : "(no reason)");
    }
    return v;
}

static void size_bad(const char *s, const char *needle)
{
    uint64_t v = 777;
    const char *err = NULL;
    if (sc_parse_size(s, &v, &err) == 0) {
        fail_msg("size '%s' accepted as %llu", s ? s : "(null)", (unsigned long long)v);
    }
    assert_non_null(err);
    if (strstr(err, needle) == NULL) {
        fail_msg("size '%s': reason '%s' lacks '%s'", s ? s : "(null)", err, needle);
    }
    assert_int_equal(v, 777);
}

static void test_size(void **state)
{
    assert_int_equal(size("0"), 0);
    assert_int_equal(size("4096"), 4096);
    assert_int_equal(size("4096b"), 4096);
    assert_int_equal(size("4096B"), 4096);
    assert_int_equal(size("64k"), 65536);
    assert_int_equal(size("64K"), 65536);
    assert_int_equal(size("64kb"), 65536);
    assert_int_equal(size("64KB"), 65536);
    assert_int_equal(size("64KiB"), 65536);
    assert_int_equal(size("64kib"), 65536);
    assert_int_equal(size("16m"), 16u << 20);
    assert_int_equal(size("16MiB"), 16u << 20);
    assert_int_equal(size("16MB"), 16u << 20);
    assert_int_equal(size("1g"), 1u << 30);
    assert_int_equal(size("1GiB"), 1u << 30);
    assert_int_equal(size("2t"), 2ULL << 40);
    assert_int_equal(size("2TiB"), 2ULL << 40);
    assert_int_equal(size("18446744073709551615"), UINT64_MAX);
    assert_int_equal(size("16777215t"), 16777215ULL << 40);
}

static void test_size_errors(void **state)
{
    size_bad(NULL, "empty");
    size_bad("", "empty");
    size_bad("-1", "negative");
    size_bad("k", "number");
    size_bad("KiB", "number");
    size_bad(" 1k", "number");
    size_bad("1k ", "unit");
    size_bad("1.5k", "unit");
    size_bad("1x", "unit");
    size_bad("1kk", "unit");
    size_bad("1bb", "unit");
    size_bad("1bi", "unit");
    size_bad("1kibx", "unit");
    size_bad("1p", "unit");
    size_bad("18446744073709551616", "overflow");
    size_bad("16777216t", "overflow");
    size_bad("17179869184g", "overflow");
    size_bad("18014398509481984k", "overflow");
}

static struct sockaddr_storage hp(const char *s, bool allow0)
{
    struct sockaddr_storage ss;
    const char *err = NULL;
    if (sc_parse_hostport(s, allow0, &ss, &err) != 0) {
        fail_msg("hostport '%s' rejected: %s", s, err ? err : "(no reason)");
    }
    return ss;
}

static void hp_bad(const char *s, bool allow0, const char *needle)
{
    struct sockaddr_storage ss;
    const char *err = NULL;
    if (sc_parse_hostport(s, allow0, &ss, &err) == 0) {
        fail_msg("hostport '%s' accepted", s ? s : "(null)");
    }
    assert_non_null(err);
    if (strstr(err, needle) == NULL) {
        fail_msg("hostport '%s': reason '%s' lacks '%s'", s ? s : "(null)", err, needle);
    }
}

static void assert_fmt(const struct sockaddr_storage *ss, const char *want)
{
    char buf[64];
    assert_string_equal(sc_format_addr((const struct sockaddr *)ss, buf, sizeof(buf)), want);
}

static void test_hostport_v4(void **state)
{
    struct sockaddr_storage ss = hp("127.0.0.1:8080", false);
    assert_int_equal(ss.ss_family, AF_INET);
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
    assert_int_equal(ntohs(sin->sin_port), 8080);
    assert_int_equal(ntohl(sin->sin_addr.s_addr), 0x7f000001);
    assert_fmt(&ss, "127.0.0.1:8080");

    ss = hp("0.0.0.0:1", false);
    assert_fmt(&ss, "0.0.0.0:1");
    ss = hp("255.255.255.255:65535", false);
    assert_fmt(&ss, "255.255.255.255:65535");
    ss = hp("localhost:15001", false);
    assert_fmt(&ss, "127.0.0.1:15001");
    ss = hp(":15006", false);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_fmt(&ss, "0.0.0.0:15006");
    ss = hp("10.0.0.1:0", true);
    assert_fmt(&ss, "10.0.0.1:0");
    ss = hp("10.0.0.1:00080", false);
    assert_fmt(&ss, "10.0.0.1:80");
}

static void test_hostport_v6(void **state)
{
    struct sockaddr_storage ss = hp("[::1]:5555", false);
    assert_int_equal(ss.ss_family, AF_INET6);
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
    assert_int_equal(ntohs(sin6->sin6_port), 5555);
    assert_memory_equal(&sin6->sin6_addr, &in6addr_loopback, sizeof(struct in6_addr));
    assert_fmt(&ss, "[::1]:5555");
    ss = hp("[::]:80", false);
    assert_fmt(&ss, "[::]:80");
    ss = hp("[fd00:1:2::a]:443", false);
    assert_fmt(&ss, "[fd00:1:2::a]:443");
    ss = hp("[::ffff:127.0.0.1]:80", false);
    assert_fmt(&ss, "[::ffff:127.0.0.1]:80");
    ss = hp("[2001:DB8::1]:1", false);
    assert_fmt(&ss, "[2001:db8::1]:1");
}

static void test_hostport_errors(void **state)
{
    hp_bad(NULL, false, "empty");
    hp_bad("", false, "empty");
    hp_bad("127.0.0.1", false, "HOST:PORT");
    hp_bad("127.0.0.1:", false, "port is missing");
    hp_bad("127.0.0.1:0", false, "port 0");
    hp_bad("127.0.0.1:65536", false, "0..65535");
    hp_bad("127.0.0.1:99999", false, "0..65535");
    hp_bad("127.0.0.1:123456", false, "0..65535");
    hp_bad("127.0.0.1:-1", false, "number");
    hp_bad("127.0.0.1:+80", false, "number");
    hp_bad("127.0.0.1:80 ", false, "number");
    hp_bad("127.0.0.1:http", false, "number");
    hp_bad("127.0.0.1:8a", false, "number");
    hp_bad("127.1:80", false, "IPv4");
    hp_bad("256.0.0.1:80", false, "IPv4");
    hp_bad("1.2.3.4.5:80", false, "IPv4");
    hp_bad("example.com:80", false, "IPv4");
    hp_bad(" 127.0.0.1:80", false, "IPv4");
    hp_bad("::1:80", false, "brackets");
    hp_bad("::1", false, "brackets");
    hp_bad("[::1]", false, "':PORT'");
    hp_bad("[::1]80", false, "':PORT'");
    hp_bad("[::1:80", false, "']'");
    hp_bad("[]:80", false, "empty IPv6");
    hp_bad("[1.2.3.4]:80", false, "IPv6");
    hp_bad("[::g]:80", false, "IPv6");
    hp_bad("[fe80::1%eth0]:80", false, "IPv6");
    hp_bad("[::1]:0", false, "port 0");
    hp_bad("[::1]:65536", false, "0..65535");
    hp_bad(":0", false, "port 0");
    char longs[400];
    memset(longs, '1', sizeof(longs) - 1);
    longs[sizeof(longs) - 1] = '\0';
    hp_bad(longs, false, "too long");
}

static void test_hostport_name(void **state)
{
    char host[256];
    uint16_t port = 0;
    const char *err = NULL;
    assert_int_equal(
        sc_parse_hostport_name("istiod.istio-system.svc:15012", host, sizeof(host), &port, &err),
        0);
    assert_string_equal(host, "istiod.istio-system.svc");
    assert_int_equal(port, 15012);
    assert_int_equal(sc_parse_hostport_name("127.0.0.1:443", host, sizeof(host), &port, NULL), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 443);
    assert_int_equal(sc_parse_hostport_name("[::1]:9", host, sizeof(host), &port, NULL), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 9);
    assert_int_equal(sc_parse_hostport_name("localhost:1", host, sizeof(host), &port, NULL), 0);
    assert_int_equal(sc_parse_hostport_name("a_b.example.:1", host, sizeof(host), &port, NULL), 0);

    const char *bad[] = {
        "",        "host",   ":80",    "host:",      "host:0",  "host:65536",
        "a..b:80", ".a:80",  "a b:80", "a/b:80",     "ho$t:80", "::1:80",
        "[::1]",   "[x]:80", "[]:80",  "host:80:80", "host:8x", "[::1]:0",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err = NULL;
        if (sc_parse_hostport_name(bad[i], host, sizeof(host), &port, &err) == 0) {
            fail_msg("hostport_name accepted '%s'", bad[i]);
        }
        assert_non_null(err);
    }
    // Label of 64 bytes and capacity limits.
    char name[128];
    memset(name, 'a', 64);
    strcpy(name + 64, ":80");
    assert_int_not_equal(sc_parse_hostport_name(name, host, sizeof(host), &port, NULL), 0);
    memset(name, 'a', 63);
    strcpy(name + 63, ":80");
    assert_int_equal(sc_parse_hostport_name(name, host, sizeof(host), &port, NULL), 0);
    char small[8];
    assert_int_not_equal(
        sc_parse_hostport_name("example.com:80", small, sizeof(small), &port, &err), 0);
    assert_int_equal(sc_parse_hostport_name("exam.co:80", small, sizeof(small), &port, NULL), 0);
    assert_string_equal(small, "exam.co");
}

static void test_format_addr(void **state)
{
    char buf[64];
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(5555)};
    sin.sin_addr.s_addr = htonl(0x7f000001);
    assert_string_equal(sc_format_addr((struct sockaddr *)&sin, buf, sizeof(buf)),
                        "127.0.0.1:5555");
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(443)};
    sin6.sin6_addr = in6addr_loopback;
    assert_string_equal(sc_format_addr((struct sockaddr *)&sin6, buf, sizeof(buf)), "[::1]:443");
    assert_string_equal(sc_format_addr(NULL, buf, sizeof(buf)), "-");
    struct sockaddr other = {.sa_family = AF_UNSPEC};
    assert_string_equal(sc_format_addr(&other, buf, sizeof(buf)), "?");
    // Truncates, always NUL-terminated.
    char tiny[6];
    assert_string_equal(sc_format_addr((struct sockaddr *)&sin, tiny, sizeof(tiny)), "127.0");
    assert_null(sc_format_addr((struct sockaddr *)&sin, NULL, 0));
}

static void parse_ok(const char *s, struct sockaddr_storage *ss)
{
    const char *err = NULL;
    if (sc_parse_hostport(s, false, ss, &err) != 0) {
        fail_msg("hostport '%s': %s", s, err);
    }
}

static void test_addr_equal_and_len(void **state)
{
    (void)state;
    struct sockaddr_storage a, b, c, mapped, v6, v6b;
    parse_ok("10.244.0.20:8080", &a);
    parse_ok("10.244.0.20:8080", &b);
    parse_ok("10.244.0.20:9090", &c);
    parse_ok("[::ffff:10.244.0.20]:8080", &mapped);
    parse_ok("[fd00:10:244::20]:8080", &v6);
    parse_ok("[fd00:10:244::21]:8080", &v6b);
    const struct sockaddr *pa = (const struct sockaddr *)&a, *pb = (const struct sockaddr *)&b;
    assert_true(sc_addr_equal(pa, pb));
    assert_false(sc_addr_equal(pa, (const struct sockaddr *)&c));     // another port
    assert_true(sc_addr_equal(pa, (const struct sockaddr *)&mapped)); // v4-mapped = its IPv4
    assert_true(sc_addr_equal((const struct sockaddr *)&mapped, pa));
    assert_false(sc_addr_equal(pa, (const struct sockaddr *)&v6));
    assert_false(sc_addr_equal((const struct sockaddr *)&v6, (const struct sockaddr *)&v6b));
    assert_true(sc_addr_equal((const struct sockaddr *)&v6, (const struct sockaddr *)&v6));
    struct sockaddr other = {.sa_family = AF_UNSPEC};
    assert_false(sc_addr_equal(&other, &other));
    assert_int_equal(sc_addr_len(pa), sizeof(struct sockaddr_in));
    assert_int_equal(sc_addr_len((const struct sockaddr *)&v6), sizeof(struct sockaddr_in6));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration_units),
        cmocka_unit_test(test_duration_bare_seconds),
        cmocka_unit_test(test_duration_errors),
        cmocka_unit_test(test_duration_overflow),
        cmocka_unit_test(test_size),
        cmocka_unit_test(test_size_errors),
        cmocka_unit_test(test_hostport_v4),
        cmocka_unit_test(test_hostport_v6),
        cmocka_unit_test(test_hostport_errors),
        cmocka_unit_test(test_hostport_name),
        cmocka_unit_test(test_format_addr),
        cmocka_unit_test(test_addr_equal_and_len),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
