// Loop tests for control-client/src/grpc_conn.c without a gRPC server:
// channel configuration errors, token file errors (UNAUTHENTICATED),
// connection refused (UNAVAILABLE), a deadline that expires while a silent
// peer holds the handshake (DEADLINE_EXCEEDED), cancellation by
// cc_channel_free, and that every handle closes (uv_loop_close == 0).
// The interop with a real server is in tests/integration/grpc/.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "cc/ca_client.h"
#include "cc/grpc_client.h"

static char g_trust[256];
static char g_empty[256];

static int setup(void **state)
{
    // A self-signed root the client is told to trust.
    EVP_PKEY *key = cc_ca_new_key();
    X509 *x = X509_new();
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const uint8_t *)"t", -1, -1, 0);
    X509_set_issuer_name(x, n);
    X509_set_pubkey(x, key);
    X509_sign(x, key, EVP_sha256());
    snprintf(g_trust, sizeof(g_trust), "/tmp/cc-test-trust-%d.pem", (int)getpid());
    snprintf(g_empty, sizeof(g_empty), "/tmp/cc-test-empty-%d.pem", (int)getpid());
    FILE *f = fopen(g_trust, "w");
    PEM_write_X509(f, x);
    fclose(f);
    f = fopen(g_empty, "w");
    fputs("no certificates here\n", f);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(key);
    return 0;
}

static int teardown(void **state)
{
    unlink(g_trust);
    unlink(g_empty);
    return 0;
}

struct result {
    int closes;
    int status;
    char message[512];
};

static void on_close(struct cc_call *call, int status, const char *message, void *arg)
{
    struct result *r = arg;
    r->closes++;
    r->status = status;
    snprintf(r->message, sizeof(r->message), "%s", message);
}

static void test_config_errors(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[512];
    const char *bad_targets[] = {"nocolon", "[::1]", "host:0", "host:99999",
                                 "host:",   ":80",   "a:b:c",  "host:8x"};
    for (size_t i = 0; i < sizeof(bad_targets) / sizeof(bad_targets[0]); i++) {
        struct cc_channel_config cfg = {.target = bad_targets[i], .trust_file = g_trust};
        err[0] = '\0';
        assert_null(cc_channel_new(&loop, &cfg, err, sizeof(err)));
        assert_non_null(strstr(err, "bad control-plane address"));
    }
    struct cc_channel_config cfg = {.target = "127.0.0.1:1", .trust_file = "/nonexistent.pem"};
    assert_null(cc_channel_new(&loop, &cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent.pem"));
    cfg.trust_file = g_empty;
    assert_null(cc_channel_new(&loop, &cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "no PEM certificate"));
    cfg.trust_file = NULL;
    assert_null(cc_channel_new(&loop, &cfg, err, sizeof(err)));
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_token_errors(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[512];
    char empty_tok[256];
    snprintf(empty_tok, sizeof(empty_tok), "/tmp/cc-test-tok-%d", (int)getpid());
    FILE *f = fopen(empty_tok, "w");
    fputs("  \n", f);
    fclose(f);
    const char *files[] = {"/nonexistent-token", empty_tok};
    const char *want[] = {"cannot read token file /nonexistent-token", "is empty"};
    for (int i = 0; i < 2; i++) {
        struct cc_channel_config cfg = {
            .target = "127.0.0.1:1", .trust_file = g_trust, .token_file = files[i]};
        struct cc_channel *ch = cc_channel_new(&loop, &cfg, err, sizeof(err));
        assert_non_null(ch);
        struct result r = {0};
        cc_call_start(ch, "/a.B/C", 1000, NULL, on_close, &r);
        assert_int_equal(r.closes, 0); // never from inside cc_call_start
        uv_run(&loop, UV_RUN_NOWAIT);
        assert_int_equal(r.closes, 1);
        assert_int_equal(r.status, CC_GRPC_UNAUTHENTICATED);
        assert_non_null(strstr(r.message, want[i]));
        cc_channel_free(ch);
        uv_run(&loop, UV_RUN_DEFAULT);
        assert_int_equal(r.closes, 1);
    }
    unlink(empty_tok);
    assert_int_equal(uv_loop_close(&loop), 0);
}

// free_port binds port 0 and returns the port it got (closed again).
static int free_port(uv_loop_t *loop, uv_tcp_t *keep)
{
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(loop, keep);
    assert_int_equal(uv_tcp_bind(keep, (struct sockaddr *)&a, 0), 0);
    struct sockaddr_storage got;
    int len = sizeof(got);
    uv_tcp_getsockname(keep, (struct sockaddr *)&got, &len);
    return ntohs(((struct sockaddr_in *)&got)->sin_port);
}

// local_channel opens a channel to 127.0.0.1:|port| that trusts the test CA.
static struct cc_channel *local_channel(uv_loop_t *loop, int port)
{
    char target[64], err[512];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    struct cc_channel_config cfg = {.target = target, .trust_file = g_trust};
    struct cc_channel *ch = cc_channel_new(loop, &cfg, err, sizeof(err));
    if (ch == NULL) {
        fail_msg("cc_channel_new: %s", err);
    }
    return ch;
}

static void test_connection_refused(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_tcp_t tmp;
    int port = free_port(&loop, &tmp);
    uv_close((uv_handle_t *)&tmp, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    struct cc_channel *ch = local_channel(&loop, port);
    struct result r1 = {0}, r2 = {0};
    cc_call_start(ch, "/a.B/C", 5000, NULL, on_close, &r1);
    cc_call_start(ch, "/a.B/D", 0, NULL, on_close, &r2);
    // Both calls fail with UNAVAILABLE and the loop ends (nothing left open
    // but the channel's idle timer, which is not active).
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(r1.closes, 1);
    assert_int_equal(r2.closes, 1);
    assert_int_equal(r1.status, CC_GRPC_UNAVAILABLE);
    assert_non_null(strstr(r1.message, "connect"));
    assert_int_equal(r2.status, CC_GRPC_UNAVAILABLE);
    cc_channel_free(ch);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

// A peer that accepts TCP and then says nothing: the TLS handshake hangs.
struct silent {
    uv_tcp_t server;
    uv_tcp_t conn;
    bool accepted;
};

static void on_silent_conn(uv_stream_t *server, int status)
{
    struct silent *s = server->data;
    uv_tcp_init(server->loop, &s->conn);
    if (uv_accept(server, (uv_stream_t *)&s->conn) == 0) {
        s->accepted = true;
    }
}

// silent_listen starts |s| listening on a free loopback port; returns it.
static int silent_listen(uv_loop_t *loop, struct silent *s)
{
    int port = free_port(loop, &s->server);
    s->server.data = s;
    assert_int_equal(uv_listen((uv_stream_t *)&s->server, 8, on_silent_conn), 0);
    return port;
}

// silent_finish closes |s| and runs |loop| until nothing is left open.
static void silent_finish(uv_loop_t *loop, struct silent *s)
{
    uv_close((uv_handle_t *)&s->server, NULL);
    if (s->accepted) {
        uv_close((uv_handle_t *)&s->conn, NULL);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

static void test_deadline_and_cancel(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct silent s = {0};
    int port = silent_listen(&loop, &s);
    struct cc_channel *ch = local_channel(&loop, port);
    struct result r1 = {0}, r2 = {0};
    cc_call_start(ch, "/a.B/C", 200, NULL, on_close, &r1);
    struct cc_call *c2 = cc_call_start(ch, "/a.B/D", 0, NULL, on_close, &r2);
    uint64_t t0 = uv_now(&loop);
    // Run until the deadline fires (bounded: the handshake timeout is 10 s).
    while (r1.closes == 0 && uv_now(&loop) - t0 < 5000) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    assert_true(s.accepted);
    assert_int_equal(r1.closes, 1);
    assert_int_equal(r1.status, CC_GRPC_DEADLINE_EXCEEDED);
    assert_true(uv_now(&loop) - t0 >= 190);
    assert_int_equal(r2.closes, 0);
    // Sends after the fact are refused; cancel reports CANCELLED once.
    cc_call_cancel(c2, "test cancel");
    cc_call_cancel(c2, "twice");
    assert_int_equal(r2.closes, 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(r2.closes, 1);
    assert_int_equal(r2.status, CC_GRPC_CANCELLED);
    assert_string_equal(r2.message, "test cancel");
    // A call open at cc_channel_free gets CANCELLED before free returns.
    struct result r3 = {0};
    cc_call_start(ch, "/a.B/E", 0, NULL, on_close, &r3);
    cc_channel_free(ch);
    assert_int_equal(r3.closes, 1);
    assert_int_equal(r3.status, CC_GRPC_CANCELLED);
    silent_finish(&loop, &s);
}

// A host name is looked up on libuv's thread pool (not in the loop):
// "localhost" resolves (from /etc/hosts) and the connection reaches the
// listener on 127.0.0.1, trying ::1 first if the resolver lists it first.
static void test_resolve_host_name(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct silent s = {0};
    int port = silent_listen(&loop, &s);
    char target[64], err[512];
    snprintf(target, sizeof(target), "localhost:%d", port);
    struct cc_channel_config cfg = {.target = target, .trust_file = g_trust};
    struct cc_channel *ch = cc_channel_new(&loop, &cfg, err, sizeof(err));
    assert_non_null(ch);
    struct result r = {0};
    cc_call_start(ch, "/a.B/C", 3000, NULL, on_close, &r);
    uint64_t t0 = uv_now(&loop);
    while (!s.accepted && r.closes == 0 && uv_now(&loop) - t0 < 5000) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    assert_true(s.accepted);
    cc_channel_free(ch);
    assert_int_equal(r.closes, 1);
    assert_int_equal(r.status, CC_GRPC_CANCELLED);
    silent_finish(&loop, &s);
}

// A channel freed while its connection's lookup is pending: the call is
// cancelled at once, the lookup's callback still runs and frees the
// connection, and the loop ends with nothing left open (ASan: no leak).
static void test_free_while_resolving(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[512];
    struct cc_channel_config cfg = {.target = "localhost:1", .trust_file = g_trust};
    for (int i = 0; i < 20; i++) {
        struct cc_channel *ch = cc_channel_new(&loop, &cfg, err, sizeof(err));
        assert_non_null(ch);
        struct result r = {0};
        cc_call_start(ch, "/a.B/C", 0, NULL, on_close, &r);
        // i = 0: free before the loop turns; later rounds a little after.
        for (int k = 0; k < i % 3; k++) {
            uv_run(&loop, UV_RUN_NOWAIT);
        }
        cc_channel_free(ch);
        assert_int_equal(r.closes, 1);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_errors),      cmocka_unit_test(test_token_errors),
        cmocka_unit_test(test_connection_refused), cmocka_unit_test(test_deadline_and_cancel),
        cmocka_unit_test(test_resolve_host_name),  cmocka_unit_test(test_free_while_resolving),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
