// test_tcp_cc.c — --loopback-cc (sc/tcp_cc.h): what each flag value resolves
// to for each system default, the malformed values refused, and on real
// loopback sockets that the kernel does what the proxy relies on: a
// congestion control set on a listener is inherited by every socket it
// accepts, while the connecting side keeps the system default.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "sc/tcp_cc.h"

static const char *resolve(const char *flag, const char *system_cc)
{
    static char out[SC_TCP_CC_MAX];
    const char *why = NULL;
    memset(out, 'x', sizeof(out));
    assert_int_equal(sc_tcp_cc_resolve(flag, system_cc, out, &why), 0);
    assert_non_null(why);
    return out;
}

static void test_resolve_auto(void **state)
{
    (void)state;
    // Only a pacing default is replaced, and only by reno.
    assert_string_equal(resolve("auto", "bbr"), "reno");
    assert_string_equal(resolve(NULL, "bbr"), "reno");
    assert_string_equal(resolve("auto", "bbr2"), "reno");
    assert_string_equal(resolve("auto", "cubic"), "");
    assert_string_equal(resolve("auto", "reno"), "");
    assert_string_equal(resolve("auto", "dctcp"), "");
    assert_string_equal(resolve("auto", NULL), "");
}

static void test_resolve_off_and_names(void **state)
{
    (void)state;
    assert_string_equal(resolve("off", "bbr"), "");
    assert_string_equal(resolve("cubic", "bbr"), "cubic");
    assert_string_equal(resolve("reno", "cubic"), "reno");
    assert_string_equal(resolve("my_cc-2", NULL), "my_cc-2");
    assert_string_equal(resolve("abcdefghijklmno", NULL), "abcdefghijklmno"); // 15: the most
}

static void test_resolve_malformed(void **state)
{
    (void)state;
    const char *bad[] = {"", "abcdefghijklmnop", "re no", "../reno", "reno\n", "ré", "a/b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char out[SC_TCP_CC_MAX] = "before";
        const char *why = NULL;
        assert_int_equal(sc_tcp_cc_resolve(bad[i], "bbr", out, &why), -1);
        assert_non_null(why);
        assert_non_null(strstr(why, "congestion control name"));
        assert_string_equal(out, ""); // nothing half-set
    }
}

static void cc_of(int fd, char out[SC_TCP_CC_MAX])
{
    socklen_t len = SC_TCP_CC_MAX;
    memset(out, 0, SC_TCP_CC_MAX);
    assert_int_equal(getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, out, &len), 0);
    out[SC_TCP_CC_MAX - 1] = '\0';
}

static void test_system_and_probe(void **state)
{
    (void)state;
    char sys[SC_TCP_CC_MAX];
    assert_int_equal(sc_tcp_cc_system(sys), 0);
    // What a fresh socket gets is what the file says.
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    char got[SC_TCP_CC_MAX];
    cc_of(fd, got);
    assert_string_equal(got, sys);
    close(fd);

    assert_int_equal(sc_tcp_cc_probe("reno"), 0); // every process may select reno
    assert_int_equal(sc_tcp_cc_probe("no_such_cc"), UV_ENOENT);
    assert_non_null(strstr(sc_tcp_cc_probe_error(UV_ENOENT), "no such congestion control"));
    assert_non_null(strstr(sc_tcp_cc_probe_error(UV_EPERM), "tcp_allowed_congestion_control"));

    struct sc_tcp_cc_choice ch;
    char err[256];
    assert_int_equal(sc_tcp_cc_choose("no_such_cc", &ch, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "no such congestion control"));
    assert_int_equal(sc_tcp_cc_choose("x y", &ch, err, sizeof(err)), -1);
    assert_int_equal(sc_tcp_cc_choose("reno", &ch, err, sizeof(err)), 0);
    assert_string_equal(ch.cc, "reno");
    assert_string_equal(ch.system, sys);
    assert_int_equal(sc_tcp_cc_choose("off", &ch, err, sizeof(err)), 0);
    assert_string_equal(ch.cc, "");
    assert_int_equal(sc_tcp_cc_choose("auto", &ch, err, sizeof(err)), 0);
    assert_string_equal(ch.cc, strncmp(sys, "bbr", 3) == 0 ? "reno" : "");
}

static void test_listener_inheritance(void **state)
{
    (void)state;
    char sys[SC_TCP_CC_MAX], got[SC_TCP_CC_MAX];
    assert_int_equal(sc_tcp_cc_system(sys), 0);
    // A name that differs from the default, so inheritance is visible.
    const char *want = strcmp(sys, "reno") == 0 ? NULL : "reno";
    if (want == NULL) {
        skip(); // the default is reno already: nothing to tell apart
    }
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(lfd >= 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(sc_tcp_cc_set(lfd, want), 0);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(lfd, 8), 0);
    socklen_t len = sizeof(sa);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &len), 0);

    int cfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(cfd >= 0);
    assert_int_equal(connect(cfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    int afd = accept(lfd, NULL, NULL);
    assert_true(afd >= 0);
    cc_of(afd, got);
    assert_string_equal(got, want); // inherited from the listener
    cc_of(cfd, got);
    assert_string_equal(got, sys); // the other end is untouched

    // And set on an established socket (the proxy's upstream side).
    assert_int_equal(sc_tcp_cc_set(cfd, want), 0);
    cc_of(cfd, got);
    assert_string_equal(got, want);
    assert_int_equal(sc_tcp_cc_set(cfd, "no_such_cc"), UV_ENOENT);
    cc_of(cfd, got);
    assert_string_equal(got, want); // a refused name changes nothing
    close(afd);
    close(cfd);
    close(lfd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        // clang-format off
        cmocka_unit_test(test_resolve_auto),
        cmocka_unit_test(test_resolve_off_and_names),
        cmocka_unit_test(test_resolve_malformed),
        cmocka_unit_test(test_system_and_probe),
        cmocka_unit_test(test_listener_inheritance),
        // clang-format on
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
