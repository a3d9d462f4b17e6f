// test_stream.c — sc_stream over loopback: plain and TLS echo with
// half-close, TLS handshake failures with their reasons, connect errors.
// Each test uses a fresh uv_loop and ends with uv_loop_close() == 0.
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "core/stream_int.h"
#include "pki.h"
#include "sc/err.h"
#include "sc/spiffe.h"
#include "sc/stream.h"
#include "sc/tls.h"
#include "tls/tls_int.h"

#define TD "spiffe://cluster.local"
#define SERVER_ID TD "/ns/default/sa/server"
#define CLIENT_ID TD "/ns/default/sa/client"

static SSL_CTX *make_ctx(bool server, const char *name, const char *peer_id, const char *allow,
                         const char *trust)
{
    char err[512];
    SSL_CTX *ctx = test_pki_ctx(server, name, peer_id, allow, trust, err, sizeof(err));
    if (ctx == NULL) {
        fprintf(stderr, "ctx: %s\n", err);
    }
    return ctx;
}

// ---- an echo server and a client that sends a pattern, half-closes, and
// reads everything back ------------------------------------------------------

struct harness {
    uv_loop_t loop;
    uv_tcp_t listener;
    struct sc_bufpool pool;
    SSL_CTX *server_ctx; // NULL: plain
    SSL_CTX *client_ctx;
    struct sc_stream *srv; // accepted side
    struct sc_stream *cli;
    size_t to_send;
    size_t sent;
    size_t received;
    bool content_ok;
    int srv_hs_status;
    int cli_hs_status;
    enum sc_tls_fail srv_fail;
    enum sc_tls_fail cli_fail;
    char srv_peer_id[256];
    char cli_peer_id[256];
    char version[32];
    int cli_reused;
    int srv_reused;
    bool shutdown_after_echo; // half-close only once everything came back
    int closes;
    int srv_eof;
    int cli_eof;
    int writes_done;
    size_t srv_max_read; // largest single read the server side got
    int srv_reads;       // read callbacks with bytes on the server side
    // Set: the server starts reading only once the client's writes are done
    // and this many bytes wait in its socket, less what its handshake may
    // have read already: one small buffer (polled by |poll|, at most 5 s;
    // |queued| is what it saw).
    size_t wait_queued;
    size_t queued;
    uint64_t poll_until;
    uv_timer_t poll;
    uint8_t *pattern;
};

static void on_closed(struct sc_stream *s)
{
    struct harness *h = sc_stream_get_data(s);
    h->closes++;
    if (s == h->srv) {
        h->srv = NULL;
    }
    if (s == h->cli) {
        h->cli = NULL;
    }
}

static void srv_on_write(struct sc_stream *s, int status, void *arg)
{
    sc_buf_release(arg);
}

static void srv_on_read(struct sc_stream *s, ssize_t nread, const uv_buf_t *buf)
{
    struct harness *h = sc_stream_get_data(s);
    if (nread < 0) {
        h->srv_eof++;
        // Echo done: half-close our side; the client closes after its EOF.
        sc_stream_shutdown(s);
        return;
    }
    if ((size_t)nread > h->srv_max_read) {
        h->srv_max_read = (size_t)nread;
    }
    h->srv_reads++;
    uv_buf_t b = uv_buf_init(buf->base, (unsigned)nread);
    // Ownership of the read buffer moves to the write; released in srv_on_write.
    if (sc_stream_write(s, &b, 1, srv_on_write, buf->base) != 0) {
        sc_buf_release(buf->base);
    }
}

// srv_poll_queue starts the server's reads once the client's bytes wait in
// its socket (see h->wait_queued), or the time is up: the test then sees
// h->queued short.
static void srv_poll_queue(uv_timer_t *t)
{
    struct harness *h = t->data;
    uv_os_fd_t fd = -1;
    int n = 0;
    if (h->srv != NULL) {
        uv_fileno((uv_handle_t *)sc_stream_get0_tcp(h->srv), &fd);
        ioctl(fd, FIONREAD, &n);
    }
    h->queued = n > 0 ? (size_t)n : 0;
    bool ready = h->sent == h->to_send && h->writes_done == (int)((h->to_send + 102399) / 102400) &&
                 h->queued + SC_BUF_READ_SIZE >= h->wait_queued;
    if (h->srv != NULL && !ready && uv_now(&h->loop) < h->poll_until) {
        return;
    }
    uv_close((uv_handle_t *)t, NULL);
    if (h->srv != NULL) {
        sc_stream_read_start(h->srv, srv_on_read);
    }
}

static void srv_on_handshake(struct sc_stream *s, int status)
{
    struct harness *h = sc_stream_get_data(s);
    h->srv_hs_status = status;
    snprintf(h->srv_peer_id, sizeof(h->srv_peer_id), "%s", sc_tls_peer_id(sc_stream_get0_ssl(s)));
    if (status != 0) {
        h->srv_fail = sc_stream_tls_fail(s, NULL);
        sc_stream_close(s, on_closed);
        return;
    }
    h->srv_reused = SSL_session_reused(sc_stream_get0_ssl(s));
    if (h->wait_queued > 0) {
        h->poll.data = h;
        h->poll_until = uv_now(&h->loop) + 5000;
        uv_timer_init(&h->loop, &h->poll);
        uv_timer_start(&h->poll, srv_poll_queue, 1, 1);
        return;
    }
    sc_stream_read_start(s, srv_on_read);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct harness *h = server->data;
    assert_int_equal(status, 0);
    h->srv = sc_stream_new(&h->loop, &h->pool);
    sc_stream_set_data(h->srv, h);
    assert_int_equal(sc_stream_accept(h->srv, server), 0);
    if (h->server_ctx != NULL) {
        assert_int_equal(
            sc_stream_start_tls(h->srv, h->server_ctx, true, NULL, 5000, srv_on_handshake), 0);
    } else {
        sc_stream_read_start(h->srv, srv_on_read);
    }
    uv_close((uv_handle_t *)&h->listener, NULL);
}

static void cli_on_read(struct sc_stream *s, ssize_t nread, const uv_buf_t *buf)
{
    struct harness *h = sc_stream_get_data(s);
    if (nread < 0) {
        h->cli_eof++;
        sc_stream_close(s, on_closed);
        if (h->srv != NULL) {
            sc_stream_close(h->srv, on_closed);
        }
        return;
    }
    if (h->received + (size_t)nread > h->to_send ||
        memcmp(buf->base, h->pattern + h->received, (size_t)nread) != 0) {
        h->content_ok = false;
    }
    h->received += (size_t)nread;
    sc_buf_release(buf->base);
    if (h->shutdown_after_echo && h->received == h->to_send) {
        sc_stream_shutdown(s);
    }
}

static void cli_send_more(struct sc_stream *s);

static void cli_on_write(struct sc_stream *s, int status, void *arg)
{
    struct harness *h = sc_stream_get_data(s);
    if (status != 0) {
        return; // refused peer: the read side reports the end
    }
    h->writes_done++;
    cli_send_more(s);
}

// Writes the pattern in 100 KiB pieces, one at a time (the write callback
// drives the next), then half-closes.
static void cli_send_more(struct sc_stream *s)
{
    struct harness *h = sc_stream_get_data(s);
    if (h->sent == h->to_send) {
        if (!h->shutdown_after_echo) {
            sc_stream_shutdown(s);
        }
        return;
    }
    size_t n = h->to_send - h->sent;
    if (n > 100 * 1024) {
        n = 100 * 1024;
    }
    uv_buf_t b = uv_buf_init((char *)h->pattern + h->sent, (unsigned)n);
    h->sent += n;
    if (sc_stream_write(s, &b, 1, cli_on_write, NULL) != 0) {
        h->sent = h->to_send;
    }
}

static void cli_on_handshake(struct sc_stream *s, int status)
{
    struct harness *h = sc_stream_get_data(s);
    h->cli_hs_status = status;
    snprintf(h->cli_peer_id, sizeof(h->cli_peer_id), "%s", sc_tls_peer_id(sc_stream_get0_ssl(s)));
    if (status != 0) {
        h->cli_fail = sc_stream_tls_fail(s, NULL);
        sc_stream_close(s, on_closed);
        return;
    }
    snprintf(h->version, sizeof(h->version), "%s", sc_stream_tls_version(s));
    h->cli_reused = SSL_session_reused(sc_stream_get0_ssl(s));
    sc_stream_read_start(s, cli_on_read);
    cli_send_more(s);
}

static void cli_on_connect(struct sc_stream *s, int status)
{
    struct harness *h = sc_stream_get_data(s);
    assert_int_equal(status, 0);
    if (h->client_ctx != NULL) {
        assert_int_equal(
            sc_stream_start_tls(s, h->client_ctx, false, "server", 5000, cli_on_handshake), 0);
        return;
    }
    sc_stream_read_start(s, cli_on_read);
    cli_send_more(s);
}

static void run_echo(struct harness *h, size_t bytes)
{
    assert_int_equal(uv_loop_init(&h->loop), 0);
    sc_bufpool_init(&h->pool, 16);
    h->to_send = bytes;
    h->content_ok = true;
    h->srv_hs_status = h->cli_hs_status = 1;
    h->pattern = malloc(bytes + 1);
    for (size_t i = 0; i < bytes; i++) {
        h->pattern[i] = (uint8_t)(i * 7 + (i >> 13));
    }
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    assert_int_equal(uv_tcp_init(&h->loop, &h->listener), 0);
    h->listener.data = h;
    assert_int_equal(uv_tcp_bind(&h->listener, (struct sockaddr *)&sa, 0), 0);
    if (h->wait_queued > 0) {
        // Room for all of it in the accepted socket (inherited from here).
        uv_os_fd_t lfd = -1;
        int rcvbuf = 1 << 20;
        uv_fileno((uv_handle_t *)&h->listener, &lfd);
        assert_int_equal(setsockopt(lfd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)), 0);
    }
    assert_int_equal(uv_listen((uv_stream_t *)&h->listener, 16, on_connection), 0);
    struct sockaddr_storage bound;
    int len = sizeof(bound);
    uv_tcp_getsockname(&h->listener, (struct sockaddr *)&bound, &len);

    h->cli = sc_stream_new(&h->loop, &h->pool);
    sc_stream_set_data(h->cli, h);
    assert_int_equal(sc_stream_connect(h->cli, (struct sockaddr *)&bound, 5000, cli_on_connect), 0);
    assert_int_equal(uv_run(&h->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&h->loop), 0);
    assert_int_equal(h->pool.num_out, 0);
    sc_bufpool_cleanup(&h->pool);
    free(h->pattern);
    SSL_CTX_free(h->server_ctx);
    SSL_CTX_free(h->client_ctx);
}

// assert_full_echo checks that every byte came back intact, both sides saw
// the half-close, and both streams closed.
static void assert_full_echo(const struct harness *h)
{
    assert_true(h->content_ok);
    assert_int_equal(h->received, h->to_send);
    assert_int_equal(h->srv_eof, 1);
    assert_int_equal(h->cli_eof, 1);
    assert_int_equal(h->closes, 2);
}

static void test_plain_echo(void **state)
{
    struct harness h = {0};
    run_echo(&h, 3 * 1024 * 1024 + 17);
    assert_full_echo(&h);
    // 3 MiB in a row: the reads filled small buffers, so the stream went on
    // in large ones (bulk mode).
    assert_true(h.srv_max_read > SC_BUF_SIZE);
}

static void test_tls_echo(void **state)
{
    struct harness h = {0};
    h.server_ctx = make_ctx(true, "server", NULL, TD "/ns/default/*", NULL);
    h.client_ctx = make_ctx(false, "client", SERVER_ID, NULL, NULL);
    assert_non_null(h.server_ctx);
    assert_non_null(h.client_ctx);
    run_echo(&h, 5 * 1024 * 1024 + 3);
    assert_int_equal(h.srv_hs_status, 0);
    assert_int_equal(h.cli_hs_status, 0);
    assert_string_equal(h.version, "TLSv1.3");
    assert_string_equal(h.srv_peer_id, CLIENT_ID);
    assert_string_equal(h.cli_peer_id, SERVER_ID);
    assert_full_echo(&h);
    assert_true(h.srv_max_read > SC_BUF_SIZE); // plaintext delivered in large buffers
}

// A pass over the records that arrived fills each plaintext buffer to its
// size before it starts another, so a large read's bytes reach the user in
// one callback. (Plaintext is never encrypted again, so it needs none of the
// room a read leaves for its records' overhead; with that room left, 32 or
// so bytes of nearly every bulk read came as a callback of their own, and
// the mux inbound wrote them to the app in a write of their own: bench/NOTES.md §19.)
static void test_tls_reads_fill_whole_buffers(void **state)
{
    struct harness h = {0};
    h.server_ctx = make_ctx(true, "server", NULL, TD "/ns/default/*", NULL);
    h.client_ctx = make_ctx(false, "client", SERVER_ID, NULL, NULL);
    assert_non_null(h.server_ctx);
    assert_non_null(h.client_ctx);
    // The client writes 100 KiB at a time; each write is records of at most
    // 16 KiB of plaintext and 22 bytes of overhead (TLS 1.3, AES-GCM).
    const size_t total = SC_BUF_LARGE_SIZE + 16 * 1024 - 100;
    for (size_t left = total; left > 0;) {
        size_t n = left < 100 * 1024 ? left : 100 * 1024;
        h.wait_queued += n + (n + 16383) / 16384 * 22;
        left -= n;
    }
    run_echo(&h, total);
    assert_int_equal(h.srv_hs_status, 0);
    assert_int_equal(h.cli_hs_status, 0);
    assert_true(h.queued + SC_BUF_READ_SIZE >= h.wait_queued); // all of it was waiting
    assert_full_echo(&h);
    // First read (in the handshake, or the first after it): a small buffer
    // of ciphertext, one whole record. Then a large one holds the rest, and
    // its plaintext (total - 16 KiB) is delivered at once: more than a large
    // buffer less the read reserve.
    assert_true(total - 16 * 1024 > SC_BUF_LARGE_SIZE - SC_BUF_READ_RESERVE);
    assert_int_equal(h.srv_reads, 2);
    assert_int_equal(h.srv_max_read, total - 16 * 1024);
}

// Buffer sizes follow the reads: a read that fills its buffer switches to
// large buffers; one short read at the end of a burst does not switch back
// (the next burst of a window-paced sender would start with a small read and
// write), two in a row do.
// read_into "reads" |n| bytes as the stream's libuv read would (n = 0: fill
// the buffer) and returns the size of the buffer it read into.
static size_t read_into(struct sc_stream *s, size_t n)
{
    uv_buf_t b;
    sc_stream__alloc((uv_handle_t *)sc_stream_get0_tcp(s), 65536, &b);
    size_t size = sc_buf_size(b.base);
    assert_int_equal(b.len, size - SC_BUF_READ_RESERVE);
    assert_false(sc_stream__read_skip(s, (ssize_t)(n == 0 ? b.len : n), &b));
    sc_buf_release(b.base);
    return size;
}

static void test_bulk_reads_survive_one_short_read(void **state)
{
    uv_loop_t loop;
    struct sc_bufpool pool;
    assert_int_equal(uv_loop_init(&loop), 0);
    sc_bufpool_init(&pool, 16);
    struct sc_stream *s = sc_stream_new(&loop, &pool);
    assert_int_equal(read_into(s, 100), SC_BUF_SIZE); // request/response: small
    assert_int_equal(read_into(s, 0), SC_BUF_SIZE);   // filled: bulk from now on
    assert_int_equal(read_into(s, 0), SC_BUF_LARGE_SIZE);
    assert_int_equal(read_into(s, 1888), SC_BUF_LARGE_SIZE); // the end of a burst
    assert_int_equal(read_into(s, 0), SC_BUF_LARGE_SIZE);    // the next burst: large at once
    assert_int_equal(read_into(s, 1888), SC_BUF_LARGE_SIZE);
    assert_int_equal(read_into(s, 200000), SC_BUF_LARGE_SIZE); // not full, not short: still bulk
    assert_int_equal(read_into(s, 100), SC_BUF_LARGE_SIZE);    // short, but not two in a row
    assert_int_equal(read_into(s, 100), SC_BUF_LARGE_SIZE);    // second short read in a row
    assert_int_equal(read_into(s, 100), SC_BUF_SIZE);          // ... ended bulk mode
    sc_stream_set_small_reads(s, true); // the mux's congested session: small even in bulk
    assert_int_equal(read_into(s, 0), SC_BUF_SIZE);
    assert_int_equal(read_into(s, 0), SC_BUF_SIZE);
    sc_stream_close(s, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(pool.num_out, 0);
    sc_bufpool_cleanup(&pool);
}

static void test_tls_chained_client(void **state)
{
    struct harness h = {0};
    h.server_ctx = make_ctx(true, "server", NULL, TD "/ns/default/*", NULL);
    h.client_ctx = make_ctx(false, "chained-chain", SERVER_ID, NULL, NULL);
    if (h.client_ctx == NULL) {
        // chained-chain.pem has no matching .key file name: build it by hand.
        char c[512], k[512], t[512], err[256];
        snprintf(c, sizeof(c), "%s/chained-chain.pem", test_pki_dir);
        snprintf(k, sizeof(k), "%s/chained.key", test_pki_dir);
        snprintf(t, sizeof(t), "%s/ca.pem", test_pki_dir);
        struct sc_tls_opts o = {.is_server = false, .peer_id = SERVER_ID};
        h.client_ctx = sc_tls_ctx_new_files(&o, c, k, t, err, sizeof(err));
    }
    assert_non_null(h.client_ctx);
    run_echo(&h, 1000);
    assert_int_equal(h.srv_hs_status, 0);
    assert_string_equal(h.srv_peer_id, CLIENT_ID);
    assert_int_equal(h.received, 1000);
}

// A bad client certificate: the server refuses with the specific reason.
static void expect_server_refuses(const char *client_cert, enum sc_tls_fail want,
                                  const char *want_id)
{
    struct harness h = {0};
    h.server_ctx = make_ctx(true, "server", NULL, TD "/ns/default/*", NULL);
    h.client_ctx = make_ctx(false, client_cert, SERVER_ID, NULL, NULL);
    assert_non_null(h.server_ctx);
    assert_non_null(h.client_ctx);
    run_echo(&h, 10);
    assert_int_equal(h.srv_hs_status, SC_ETLS);
    if (h.srv_fail != want) {
        fail_msg("%s: reason %s, want %s", client_cert, sc_tls_fail_name(h.srv_fail),
                 sc_tls_fail_name(want));
    }
    if (want_id != NULL) {
        assert_string_equal(h.srv_peer_id, want_id);
    }
    assert_int_equal(h.received, 0);
}

static void test_tls_server_refusals(void **state)
{
    expect_server_refuses("rogue", SC_TLS_FAIL_UNKNOWN_CA, NULL);
    expect_server_refuses("expired", SC_TLS_FAIL_EXPIRED, NULL);
    expect_server_refuses("notyet", SC_TLS_FAIL_NOT_YET_VALID, NULL);
    expect_server_refuses("twouri", SC_TLS_FAIL_BAD_SVID, NULL);
    expect_server_refuses("nouri", SC_TLS_FAIL_BAD_SVID, "-");
    expect_server_refuses("caleaf", SC_TLS_FAIL_BAD_SVID, NULL);
    expect_server_refuses("kcs", SC_TLS_FAIL_BAD_SVID, NULL);
    expect_server_refuses("denied", SC_TLS_FAIL_NOT_ALLOWED, TD "/ns/evil/sa/mallory");
    expect_server_refuses("othertd", SC_TLS_FAIL_NOT_ALLOWED,
                          "spiffe://other.org/ns/default/sa/client");
}

// The client refuses a server that presents the wrong ID.
static void test_tls_client_id_mismatch(void **state)
{
    struct harness h = {0};
    h.server_ctx = make_ctx(true, "denied", NULL, NULL, NULL);
    h.client_ctx = make_ctx(false, "client", SERVER_ID, NULL, NULL);
    run_echo(&h, 10);
    assert_int_equal(h.cli_hs_status, SC_ETLS);
    assert_int_equal(h.cli_fail, SC_TLS_FAIL_ID_MISMATCH);
    assert_string_equal(h.cli_peer_id, TD "/ns/evil/sa/mallory");
    // The server sees our alert.
    assert_int_equal(h.srv_hs_status, SC_ETLS);
    assert_int_equal(h.srv_fail, SC_TLS_FAIL_PEER_ALERT);
}

// The second handshake with the same chain hits the verified-chain cache,
// and authorization still runs on a hit.
static void test_tls_verify_cache(void **state)
{
    SSL_CTX *sctx = make_ctx(true, "server", NULL, TD "/ns/default/*", NULL);
    SSL_CTX *cctx = make_ctx(false, "client", SERVER_ID, NULL, NULL);
    SSL_CTX *dctx = make_ctx(false, "denied", SERVER_ID, NULL, NULL);
    for (int i = 0; i < 3; i++) {
        struct harness h = {0};
        SSL_CTX_up_ref(sctx);
        SSL_CTX_up_ref(cctx);
        h.server_ctx = sctx;
        h.client_ctx = cctx;
        run_echo(&h, 100);
        assert_int_equal(h.srv_hs_status, 0);
        assert_int_equal(h.received, 100);
    }
    assert_int_equal(sc_tls__vcache_hits(sctx), 2);
    assert_int_equal(sc_tls__vcache_hits(cctx), 2);
    for (int i = 0; i < 2; i++) {
        struct harness h = {0};
        SSL_CTX_up_ref(sctx);
        SSL_CTX_up_ref(dctx);
        h.server_ctx = sctx;
        h.client_ctx = dctx;
        run_echo(&h, 10);
        assert_int_equal(h.srv_hs_status, SC_ETLS);
        assert_int_equal(h.srv_fail, SC_TLS_FAIL_NOT_ALLOWED);
        assert_string_equal(h.srv_peer_id, TD "/ns/evil/sa/mallory");
    }
    assert_int_equal(sc_tls__vcache_hits(sctx), 3);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    SSL_CTX_free(dctx);
}

// Resumption: the second connection resumes the first one's session (TLS 1.3
// ticket), and the server still knows the client's verified ID. A new
// server snapshot (new ticket keys) forces a full handshake.
// echo_rounds runs |n| echo connections from |cctx| to |sctx| (both keep
// their references), checks each verified both peers and that client and
// server agree on resumption, and stores each connection's "resumed" in
// |reused|.
static void echo_rounds(SSL_CTX *sctx, SSL_CTX *cctx, int n, int *reused)
{
    for (int i = 0; i < n; i++) {
        // The client half-closes only after the echo came back: a TLS 1.3
        // ticket arrives after the handshake, and BoringSSL drops tickets
        // that arrive after our close_notify.
        struct harness h = {.shutdown_after_echo = true};
        SSL_CTX_up_ref(sctx);
        SSL_CTX_up_ref(cctx);
        h.server_ctx = sctx;
        h.client_ctx = cctx;
        run_echo(&h, 1000);
        assert_int_equal(h.srv_hs_status, 0);
        assert_int_equal(h.received, 1000);
        assert_string_equal(h.srv_peer_id, CLIENT_ID);
        assert_string_equal(h.cli_peer_id, SERVER_ID);
        assert_int_equal(h.cli_reused, h.srv_reused);
        reused[i] = h.cli_reused;
    }
}

static void test_tls_resumption(void **state)
{
    SSL_CTX *sctx = make_ctx(true, "server", NULL, TD "/ns/default/*", NULL);
    SSL_CTX *cctx = make_ctx(false, "client", SERVER_ID, NULL, NULL);
    int reused[3];
    echo_rounds(sctx, cctx, 3, reused);
    assert_int_equal(reused[0], 0);
    assert_int_equal(reused[1], 1);
    assert_int_equal(reused[2], 1);
    // A rotated server snapshot: the old ticket is not accepted.
    struct harness h = {0};
    h.server_ctx = make_ctx(true, "server", NULL, TD "/ns/default/*", NULL);
    SSL_CTX_up_ref(cctx);
    h.client_ctx = cctx;
    run_echo(&h, 10);
    assert_int_equal(h.srv_hs_status, 0);
    assert_int_equal(h.cli_reused, 0);
    assert_string_equal(h.srv_peer_id, CLIENT_ID);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
}

// no_resumption_ctx is make_ctx's context with session resumption off.
static SSL_CTX *no_resumption_ctx(bool server)
{
    char err[512];
    const char *c = test_pki_path(server ? "server.pem" : "client.pem");
    const char *k = test_pki_path(server ? "server.key" : "client.key");
    const char *t = test_pki_path("ca.pem");
    char *pat = (char *)TD "/ns/default/*";
    struct sc_allowlist al = {.num_patterns = 1, .patterns = &pat};
    struct sc_tls_opts o = {
        .is_server = server,
        .peer_id = server ? NULL : SERVER_ID,
        .allow = server ? &al : NULL,
        .no_resumption = true,
    };
    SSL_CTX *ctx = sc_tls_ctx_new_files(&o, c, k, t, err, sizeof(err));
    if (ctx == NULL) {
        fprintf(stderr, "ctx: %s\n", err);
    }
    return ctx;
}

// --no-tls-resumption: with it on either side, every handshake is full (the
// bench's full-handshake rows rely on it), and peers are still verified.
static void test_tls_no_resumption(void **state)
{
    for (int side = 0; side < 2; side++) {
        SSL_CTX *sctx = side == 0 ? no_resumption_ctx(true)
                                  : make_ctx(true, "server", NULL, TD "/ns/default/*", NULL);
        SSL_CTX *cctx =
            side == 1 ? no_resumption_ctx(false) : make_ctx(false, "client", SERVER_ID, NULL, NULL);
        assert_non_null(sctx);
        assert_non_null(cctx);
        int reused[3];
        echo_rounds(sctx, cctx, 3, reused);
        for (int i = 0; i < 3; i++) {
            assert_int_equal(reused[i], 0);
        }
        SSL_CTX_free(sctx);
        SSL_CTX_free(cctx);
    }
}

// ---- connect failures ----------------------------------------------------

static int connect_status = 1;

static void on_connect_refused(struct sc_stream *s, int status)
{
    connect_status = status;
    sc_stream_close(s, NULL);
}

static void test_connect_refused(void **state)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    // Bind a port and do not listen on it: connecting is refused.
    uv_tcp_t t;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_init(&loop, &t);
    assert_int_equal(uv_tcp_bind(&t, (struct sockaddr *)&sa, 0), 0);
    struct sockaddr_storage bound;
    int len = sizeof(bound);
    uv_tcp_getsockname(&t, (struct sockaddr *)&bound, &len);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);

    struct sc_stream *s = sc_stream_new(&loop, NULL);
    connect_status = 1;
    assert_int_equal(sc_stream_connect(s, (struct sockaddr *)&bound, 5000, on_connect_refused), 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(connect_status, UV_ECONNREFUSED);
    assert_int_equal(uv_loop_close(&loop), 0);
}

// A handshake with a peer that never answers times out with its reason.
static int hs_status = 1;
static enum sc_tls_fail hs_fail;

static void on_silent_hs(struct sc_stream *s, int status)
{
    hs_status = status;
    hs_fail = sc_stream_tls_fail(s, NULL);
    sc_stream_close(s, NULL);
}

static void on_silent_connect(struct sc_stream *s, int status)
{
    assert_int_equal(status, 0);
    SSL_CTX *ctx = sc_stream_get_data(s);
    assert_int_equal(sc_stream_start_tls(s, ctx, false, NULL, 200, on_silent_hs), 0);
}

static void on_silent_conn(uv_stream_t *server, int status)
{
    uv_tcp_t *c = malloc(sizeof(*c));
    uv_tcp_init(server->loop, c);
    uv_accept(server, (uv_stream_t *)c);
    server->data = c; // closed at the end of the test
}

static void test_handshake_timeout(void **state)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    uv_tcp_t l;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_init(&loop, &l);
    l.data = NULL;
    assert_int_equal(uv_tcp_bind(&l, (struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&l, 4, on_silent_conn), 0);
    struct sockaddr_storage bound;
    int len = sizeof(bound);
    uv_tcp_getsockname(&l, (struct sockaddr *)&bound, &len);

    SSL_CTX *ctx = make_ctx(false, "client", SERVER_ID, NULL, NULL);
    struct sc_stream *s = sc_stream_new(&loop, NULL);
    sc_stream_set_data(s, ctx);
    hs_status = 1;
    uint64_t t0 = uv_hrtime();
    assert_int_equal(sc_stream_connect(s, (struct sockaddr *)&bound, 5000, on_silent_connect), 0);
    while (hs_status == 1 && uv_hrtime() - t0 < 5000000000ull) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    assert_int_equal(hs_status, SC_ETLS);
    assert_int_equal(hs_fail, SC_TLS_FAIL_TIMEOUT);
    assert_true(uv_hrtime() - t0 < 3000000000ull);
    if (l.data != NULL) {
        uv_close((uv_handle_t *)l.data, (uv_close_cb)free);
    }
    uv_close((uv_handle_t *)&l, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    SSL_CTX_free(ctx);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); // as every libuv program: EPIPE instead of death
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_echo),
        cmocka_unit_test(test_tls_echo),
        cmocka_unit_test(test_tls_reads_fill_whole_buffers),
        cmocka_unit_test(test_bulk_reads_survive_one_short_read),
        cmocka_unit_test(test_tls_chained_client),
        cmocka_unit_test(test_tls_server_refusals),
        cmocka_unit_test(test_tls_client_id_mismatch),
        cmocka_unit_test(test_tls_verify_cache),
        cmocka_unit_test(test_tls_resumption),
        cmocka_unit_test(test_tls_no_resumption),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_handshake_timeout),
    };
    return cmocka_run_group_tests(tests, test_pki_setup, test_pki_teardown);
}
