// test_pump.c — the tunnel data path in-process: outbound proxy -> inbound
// proxy -> upstream app on loopback, driven from a test loop. Integrity with
// half-close, backpressure (a stalled app stops the client's writes instead
// of growing buffers), idle timeout, upstream down, and drain.
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "pki.h"
#include "sc/proxy.h"
#include "sc/stream.h"
#include "sc/tls.h"

#define TD "spiffe://cluster.local"
#define SERVER_ID TD "/ns/default/sa/server"

static SSL_CTX *make_ctx(bool server, const char *name)
{
    char err[512];
    SSL_CTX *ctx = test_pki_ctx(server, name, server ? NULL : SERVER_ID,
                                server ? TD "/ns/default/*" : NULL, NULL, err, sizeof(err));
    if (ctx == NULL) {
        fail_msg("ctx: %s", err);
    }
    return ctx;
}

// ---- the world: app (upstream) on the test loop, two proxies -------------

struct world {
    uv_loop_t loop;
    uv_tcp_t app_listener;
    int app_port;
    struct sc_stream *app; // the app's accepted connection
    bool app_echo;         // echo (true) or sink (false)
    bool app_reading;
    size_t app_received;
    bool app_eof;
    struct sc_proxy *in;
    struct sc_proxy *out;
    int proxies_done;
    struct sc_stream *cli; // the test client (plain, to the outbound proxy)
    uint8_t *data;
    size_t to_send;
    size_t sent;
    size_t received;
    bool content_ok;
    bool cli_eof;
    int cli_status; // negative nread seen by the client
    bool cli_closed;
    bool cli_connected;
    bool no_shutdown; // the client never half-closes
};

static struct world W;

static void app_on_written(struct sc_stream *s, int status, void *arg)
{
    sc_buf_release(arg);
}

static void app_on_read(struct sc_stream *s, ssize_t nread, const uv_buf_t *buf)
{
    if (nread < 0) {
        W.app_eof = true;
        sc_stream_shutdown(s); // half-close answered: the client sees EOF after the echo
        return;
    }
    W.app_received += (size_t)nread;
    if (!W.app_echo) {
        sc_buf_release(buf->base);
        return;
    }
    uv_buf_t b = uv_buf_init(buf->base, (unsigned)nread);
    if (sc_stream_write(s, &b, 1, app_on_written, buf->base) != 0) {
        sc_buf_release(buf->base);
    }
}

static void app_on_conn(uv_stream_t *server, int status)
{
    assert_int_equal(status, 0);
    struct sc_stream *s = sc_stream_new(&W.loop, NULL);
    assert_int_equal(sc_stream_accept(s, server), 0);
    if (W.app != NULL) {
        sc_stream_close(s, NULL); // one app connection per test
        return;
    }
    W.app = s;
    if (W.app_reading) {
        sc_stream_read_start(s, app_on_read);
    }
}

static void on_proxy_done(struct sc_proxy *p, void *arg)
{
    W.proxies_done++;
}

// A fake router: the snapshot says what to do with every connection.
struct fake_snap {
    int refs;
    enum sc_route_kind kind;
    bool to_app;         // target: the app (else the inbound proxy)
    const char *peer_id; // outbound MTLS
    bool allow;          // authorize answer for mTLS clients
    bool deny_plain;     // authorize answer for plain clients ("-")
    int routed;          // route() calls
};

static void fake_route(void *snap, enum sc_dir dir, int fd, struct sc_route *out);

static bool fake_authorize(void *snap, const struct sc_route *r, const char *peer_id)
{
    struct fake_snap *f = snap;
    if (strcmp(peer_id, "-") == 0) {
        return !f->deny_plain;
    }
    return f->allow && r->port == 4242 && strcmp(peer_id, TD "/ns/default/sa/client") == 0;
}

static void fake_ref(void *snap)
{
    __atomic_fetch_add(&((struct fake_snap *)snap)->refs, 1, __ATOMIC_RELAXED);
}

static void fake_unref(void *snap)
{
    __atomic_fetch_sub(&((struct fake_snap *)snap)->refs, 1, __ATOMIC_RELAXED);
}

static const struct sc_proxy_router fake_router = {
    .route = fake_route,
    .authorize = fake_authorize,
    .snap_ref = fake_ref,
    .snap_unref = fake_unref,
};

static struct fake_snap *in_snap, *out_snap; // set by tests before start_world

static int start_world(bool app_up, uint64_t idle_ms)
{
    memset(&W, 0, sizeof(W));
    assert_int_equal(uv_loop_init(&W.loop), 0);
    W.app_echo = true;
    W.app_reading = true;
    W.content_ok = true;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_init(&W.loop, &W.app_listener);
    assert_int_equal(uv_tcp_bind(&W.app_listener, (struct sockaddr *)&sa, 0), 0);
    struct sockaddr_in bound;
    int len = sizeof(bound);
    uv_tcp_getsockname(&W.app_listener, (struct sockaddr *)&bound, &len);
    W.app_port = ntohs(bound.sin_port);
    if (app_up) {
        assert_int_equal(uv_listen((uv_stream_t *)&W.app_listener, 16, app_on_conn), 0);
    } // else: bound but not listening: connections are refused

    struct sc_proxy_config in_cfg = {
        .dir = SC_DIR_INBOUND,
        .num_workers = 1,
        .connect_timeout_ms = 2000,
        .handshake_timeout_ms = 2000,
        .idle_timeout_ms = idle_ms,
    };
    uv_ip4_addr("127.0.0.1", 0, (struct sockaddr_in *)&in_cfg.listen);
    uv_ip4_addr("127.0.0.1", W.app_port, (struct sockaddr_in *)&in_cfg.target);
    if (in_snap != NULL) {
        in_cfg.router = &fake_router;
        in_cfg.route_snap = in_snap;
    }
    SSL_CTX *sctx = make_ctx(true, "server");
    assert_int_equal(sc_proxy_start(&in_cfg, sctx, &W.loop, on_proxy_done, NULL, &W.in), 0);
    SSL_CTX_free(sctx);

    struct sc_proxy_config out_cfg = in_cfg;
    out_cfg.dir = SC_DIR_OUTBOUND;
    out_cfg.num_workers = 2;
    out_cfg.router = out_snap != NULL ? &fake_router : NULL;
    out_cfg.route_snap = out_snap;
    uv_ip4_addr("127.0.0.1", sc_proxy_listen_port(W.in), (struct sockaddr_in *)&out_cfg.target);
    uv_ip4_addr("127.0.0.1", 0, (struct sockaddr_in *)&out_cfg.listen);
    SSL_CTX *cctx = make_ctx(false, "client");
    assert_int_equal(sc_proxy_start(&out_cfg, cctx, &W.loop, on_proxy_done, NULL, &W.out), 0);
    SSL_CTX_free(cctx);
    return sc_proxy_listen_port(W.out);
}

static void on_tick(uv_timer_t *t)
{
}

// run_until runs the loop until |*flag| or |ms| passed; returns *flag.
static bool run_until(bool *flag, uint64_t ms)
{
    uint64_t t0 = uv_now(&W.loop);
    uv_timer_t tick; // wakes the loop so the deadline is checked
    uv_timer_init(&W.loop, &tick);
    uv_timer_start(&tick, on_tick, 20, 20);
    while (!*flag && uv_now(&W.loop) - t0 < ms) {
        uv_run(&W.loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&W.loop, UV_RUN_NOWAIT);
    return *flag;
}

static void stop_world(void)
{
    if (W.cli != NULL && !W.cli_closed) {
        sc_stream_close(W.cli, NULL);
    }
    if (W.app != NULL) {
        sc_stream_close(W.app, NULL);
    }
    sc_proxy_drain(W.in, 0);
    sc_proxy_drain(W.out, 0);
    bool done = false;
    uint64_t t0 = uv_now(&W.loop);
    while (W.proxies_done < 2 && uv_now(&W.loop) - t0 < 5000) {
        uv_run(&W.loop, UV_RUN_NOWAIT);
        uv_sleep(5);
        uv_update_time(&W.loop);
    }
    (void)done;
    assert_int_equal(W.proxies_done, 2);
    sc_proxy_free(W.in);
    sc_proxy_free(W.out);
    // Every snapshot reference taken by the proxies was given back.
    if (in_snap != NULL) {
        assert_int_equal(in_snap->refs, 1);
    }
    if (out_snap != NULL) {
        assert_int_equal(out_snap->refs, 1);
    }
    in_snap = out_snap = NULL;
    uv_close((uv_handle_t *)&W.app_listener, NULL);
    uv_run(&W.loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&W.loop), 0);
    free(W.data);
}

static void fake_route(void *snap, enum sc_dir dir, int fd, struct sc_route *out)
{
    struct fake_snap *f = snap;
    f->routed++;
    out->kind = f->kind;
    out->reason = "test_refuse";
    out->port = 4242;
    out->peer_id = f->peer_id;
    int port = f->to_app ? W.app_port : sc_proxy_listen_port(W.in);
    uv_ip4_addr("127.0.0.1", port, (struct sockaddr_in *)&out->target);
    snprintf(out->orig, sizeof(out->orig), "127.0.0.1:%d", port);
}

// ---- the client ----------------------------------------------------------

static void cli_on_read(struct sc_stream *s, ssize_t nread, const uv_buf_t *buf)
{
    if (nread < 0) {
        W.cli_eof = true;
        W.cli_status = (int)nread;
        return;
    }
    if (W.received + (size_t)nread > W.to_send ||
        memcmp(buf->base, W.data + W.received, (size_t)nread) != 0) {
        W.content_ok = false;
    }
    W.received += (size_t)nread;
    sc_buf_release(buf->base);
}

static void cli_send_more(struct sc_stream *s);

static void cli_on_written(struct sc_stream *s, int status, void *arg)
{
    if (status == 0) {
        cli_send_more(s);
    }
}

static void cli_send_more(struct sc_stream *s)
{
    if (W.sent == W.to_send) {
        if (!W.no_shutdown) {
            sc_stream_shutdown(s);
        }
        return;
    }
    size_t n = W.to_send - W.sent;
    if (n > 256 * 1024) {
        n = 256 * 1024;
    }
    uv_buf_t b = uv_buf_init((char *)W.data + W.sent, (unsigned)n);
    W.sent += n;
    if (sc_stream_write(s, &b, 1, cli_on_written, NULL) != 0) {
        W.sent = W.to_send;
    }
}

static void cli_on_connect(struct sc_stream *s, int status)
{
    assert_int_equal(status, 0);
    W.cli_connected = true;
    sc_stream_read_start(s, cli_on_read);
    cli_send_more(s);
}

static void start_client(int port, size_t bytes)
{
    W.to_send = bytes;
    W.data = malloc(bytes + 1);
    for (size_t i = 0; i < bytes; i++) {
        W.data[i] = (uint8_t)((i * 2654435761u) >> 13);
    }
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", port, &sa);
    W.cli = sc_stream_new(&W.loop, NULL);
    // The connect timer starts from the loop's cached time, which filling a
    // large buffer above (seconds under ASan on a busy machine) left behind.
    uv_update_time(&W.loop);
    assert_int_equal(sc_stream_connect(W.cli, (struct sockaddr *)&sa, 2000, cli_on_connect), 0);
}

// ---- tests ---------------------------------------------------------------

static void test_integrity_half_close(void **state)
{
    int port = start_world(true, 0);
    start_client(port, 16 * 1024 * 1024 + 7);
    assert_true(run_until(&W.cli_eof, 20000));
    assert_int_equal(W.cli_status, UV_EOF);
    assert_true(W.content_ok);
    assert_int_equal(W.received, W.to_send);
    assert_true(W.app_eof); // the client's FIN reached the app through both tunnels
    stop_world();
}

// tcp_max returns the largest buffer (bytes) the kernel may autotune a TCP
// socket's |which| ("tcp_rmem", "tcp_wmem") to, or |dflt| if unknown.
static size_t tcp_max(const char *which, size_t dflt)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/sys/net/ipv4/%s", which);
    FILE *f = fopen(path, "r");
    unsigned long lo, def, hi;
    int n = f != NULL ? fscanf(f, "%lu %lu %lu", &lo, &def, &hi) : 0;
    if (f != NULL) {
        fclose(f);
    }
    return n == 3 ? (size_t)hi : dflt;
}

static void test_backpressure(void **state)
{
    int port = start_world(true, 0);
    W.app_reading = false; // the app accepts but does not read
    // More than the kernel can hold on the chain's three connections
    // (receive and send buffers autotune up to tcp_rmem/tcp_wmem's maximum:
    // 6 + 4 MiB on older kernels, 32 + 4 MiB since Linux 6.11), so that a
    // proxy that kept reading into its own memory would take it all.
    size_t kernel = 3 * (tcp_max("tcp_rmem", 6u << 20) + tcp_max("tcp_wmem", 4u << 20));
    size_t total = kernel + (64u << 20);
    start_client(port, total);
    // Let the chain fill up: the client's queue must stop draining, i.e. the
    // proxies stopped reading instead of buffering 64 MiB.
    bool never = false;
    run_until(&never, 1500);
    size_t queued = sc_stream_write_queue_size(W.cli);
    size_t accepted = W.sent - queued;
    assert_true(W.sent < total || queued > 0);
    assert_true(accepted < kernel + (32u << 20));
    // Now the app reads: everything arrives, in order.
    W.app_echo = false;
    assert_non_null(W.app);
    sc_stream_read_start(W.app, app_on_read);
    assert_true(run_until(&W.app_eof, 30000));
    assert_int_equal(W.app_received, total);
    stop_world();
}

static void test_idle_timeout(void **state)
{
    int port = start_world(true, 300);
    W.no_shutdown = true;
    start_client(port, 10);
    assert_true(run_until(&W.cli_connected, 5000));
    // No shutdown from either side after the echo: the idle timeout closes it.
    assert_true(run_until(&W.cli_eof, 5000));
    assert_int_equal(W.received, 10);
    stop_world();
}

static void test_upstream_down(void **state)
{
    int port = start_world(false, 0);
    uint64_t t0 = uv_hrtime();
    start_client(port, 10);
    assert_true(run_until(&W.cli_eof, 5000));
    assert_true(uv_hrtime() - t0 < 3000000000ull);
    assert_int_equal(W.received, 0);
    stop_world();
}

// Connects the test client straight to the inbound proxy (plain).
static void start_client_to(int port, size_t bytes)
{
    start_client(port, bytes);
}

static void test_route_inbound_detect(void **state)
{
    // A TLS client (through the tunnel-mode outbound) is detected as mTLS.
    struct fake_snap in = {.refs = 1, .kind = SC_ROUTE_DETECT, .to_app = true, .allow = true};
    in_snap = &in;
    int port = start_world(true, 0);
    start_client(port, 300000);
    assert_true(run_until(&W.cli_eof, 10000));
    assert_true(W.content_ok);
    assert_int_equal(W.received, W.to_send);
    assert_int_equal(in.routed, 1);
    stop_world();

    // A plain client is passed through, its first bytes included.
    struct fake_snap in2 = {.refs = 1, .kind = SC_ROUTE_DETECT, .to_app = true, .allow = true};
    in_snap = &in2;
    start_world(true, 0);
    start_client_to(sc_proxy_listen_port(W.in), 100000);
    assert_true(run_until(&W.cli_eof, 10000));
    assert_true(W.content_ok);
    assert_int_equal(W.received, W.to_send);
    stop_world();

    // A port whose rules admit only identities refuses the plain client.
    struct fake_snap in3 = {
        .refs = 1, .kind = SC_ROUTE_DETECT, .to_app = true, .allow = true, .deny_plain = true};
    in_snap = &in3;
    start_world(true, 0);
    start_client_to(sc_proxy_listen_port(W.in), 1000);
    assert_true(run_until(&W.cli_eof, 5000));
    assert_int_equal(W.received, 0);
    assert_null(W.app);
    stop_world();
}

static void test_route_inbound_authorize(void **state)
{
    struct fake_snap in = {.refs = 1, .kind = SC_ROUTE_MTLS, .to_app = true, .allow = false};
    in_snap = &in;
    int port = start_world(true, 0);
    start_client(port, 100);
    assert_true(run_until(&W.cli_eof, 5000));
    assert_int_equal(W.received, 0);
    assert_null(W.app); // refused before the app was dialed
    stop_world();
}

static void test_route_outbound(void **state)
{
    // mTLS to the inbound with the right per-destination ID.
    struct fake_snap out = {.refs = 1, .kind = SC_ROUTE_MTLS, .peer_id = SERVER_ID};
    out_snap = &out;
    int port = start_world(true, 0);
    start_client(port, 50000);
    assert_true(run_until(&W.cli_eof, 10000));
    assert_int_equal(W.received, W.to_send);
    stop_world();

    // The wrong expected ID: refused, nothing reaches the app.
    struct fake_snap bad = {.refs = 1, .kind = SC_ROUTE_MTLS, .peer_id = TD "/ns/x/sa/y"};
    out_snap = &bad;
    port = start_world(true, 0);
    start_client(port, 100);
    assert_true(run_until(&W.cli_eof, 5000));
    assert_int_equal(W.received, 0);
    assert_int_equal(W.app_received, 0);
    stop_world();

    // Plain passthrough straight to the app.
    struct fake_snap plain = {.refs = 1, .kind = SC_ROUTE_PLAIN, .to_app = true};
    out_snap = &plain;
    port = start_world(true, 0);
    start_client(port, 70000);
    assert_true(run_until(&W.cli_eof, 10000));
    assert_true(W.content_ok);
    assert_int_equal(W.received, W.to_send);
    stop_world();

    // Refused by the router.
    struct fake_snap refuse = {.refs = 1, .kind = SC_ROUTE_REFUSE};
    out_snap = &refuse;
    port = start_world(true, 0);
    start_client(port, 100);
    assert_true(run_until(&W.cli_eof, 5000));
    assert_int_equal(W.received, 0);
    assert_null(W.app);
    stop_world();
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); // as every libuv program: EPIPE instead of death
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_integrity_half_close), cmocka_unit_test(test_backpressure),
        cmocka_unit_test(test_idle_timeout),         cmocka_unit_test(test_upstream_down),
        cmocka_unit_test(test_route_inbound_detect), cmocka_unit_test(test_route_inbound_authorize),
        cmocka_unit_test(test_route_outbound),
    };
    return cmocka_run_group_tests(tests, test_pki_setup, test_pki_teardown);
}
