// forward.c — one proxied connection: accept, connect upstream, mTLS
// handshake on the peer side, then a byte pump both ways with backpressure
// and half-close, and one finalize.
//
//   inbound:  accept -> TLS server handshake (verify, authorize) -> connect app -> pump
//   outbound: accept -> connect peer -> TLS client handshake (verify ID) -> pump
//
// The app's side is never connected (inbound) or read (outbound) before the
// peer is authenticated, so a refused peer delivers no byte.
//
// Pump, per direction d (0: downstream -> upstream, 1: upstream -> downstream):
// a read buffer is written on to the other stream without a copy and released
// in the write callback. While the destination's kernel queue is not empty
// the source is not read (backpressure). EOF from the source half-closes the
// destination (sc_stream_shutdown: TLS close_notify + FIN); when both
// directions have ended and no write is in flight the connection is done.
#include "proxy/proxy_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc/err.h"
#include "sc/log.h"
#include "sc/parse.h"
#include "sc/tls.h"

#if __has_include("sc/failures.h")
#include "sc/failures.h"
#define SC_HAVE_FAILURES 1
#endif

enum sc_conn_state {
    SC_CONN_CONNECTING = 0,
    SC_CONN_HANDSHAKE,
    SC_CONN_PUMP,
    SC_CONN_CLOSING,
};

struct sc_conn {
    struct sc_conn *next;      // worker's list of open connections
    struct sc_conn *prev;
    struct sc_worker *w;
    struct sc_stream *down;    // accepted side (NULL once closed)
    struct sc_stream *up;      // upstream side (NULL if not created or closed)
    struct sc_stream *tls;     // the mTLS side: down (inbound) or up (outbound)
    enum sc_conn_state state;
    int open_streams;          // streams whose close callback has not run
    bool eof[2];               // source of direction d reported its end
    bool paused[2];            // source of direction d not read (backpressure)
    int inflight[2];           // writes in flight in direction d
    uint64_t start_ms;
    uint64_t last_active_ms;
    bool aged;                 // past max_connection_age: closing gracefully
    uint64_t aged_ms;
    uint64_t bytes_in;         // from the downstream side
    uint64_t bytes_out;        // to the downstream side
    char peer[64];             // address of the TLS peer
};

static const char *dir_name(enum sc_dir d)
{
    return d == SC_DIR_INBOUND ? "inbound" : "outbound";
}

static void on_stream_closed(struct sc_stream *s)
{
    struct sc_conn *c = sc_stream_get_data(s);
    if (s == c->down) {
        c->down = NULL;
    } else if (s == c->up) {
        c->up = NULL;
    }
    if (--c->open_streams > 0) {
        return;
    }
    struct sc_worker *w = c->w;
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        w->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    free(c);
    sc_worker__conn_gone(w);
}

// finalize tears the connection down once (nginx ngx_stream_proxy_finalize).
// |reset| aborts the downstream with a RST.
static void finalize(struct sc_conn *c, const char *reason, bool reset)
{
    if (c->state == SC_CONN_CLOSING) {
        return;
    }
    struct sc_worker *w = c->w;
    enum sc_dir dir = w->proxy->cfg.dir;
    bool pumped = c->state == SC_CONN_PUMP;
    c->state = SC_CONN_CLOSING;
    SC_STAT_ADD(w->stats.conn_closed[dir][SC_MODE_MTLS], 1);
    if (pumped) {
        SSL *ssl = c->tls ? sc_stream_get0_ssl(c->tls) : NULL;
        sc_info("conn.close",
                "dir=%s peer=%s peer_id=%s tls=%s bytes_in=%llu bytes_out=%llu "
                "duration_ms=%llu reason=%s",
                dir_name(dir), c->peer, sc_tls_peer_id(ssl),
                c->tls ? sc_stream_tls_version(c->tls) : "plain",
                (unsigned long long)c->bytes_in, (unsigned long long)c->bytes_out,
                (unsigned long long)(uv_now(&w->loop) - c->start_ms), reason);
    }
    if (c->down != NULL) {
        if (reset) {
            sc_stream_close_reset(c->down, on_stream_closed);
        } else {
            sc_stream_close(c->down, on_stream_closed);
        }
    }
    if (c->up != NULL) {
        sc_stream_close(c->up, on_stream_closed);
    }
}

// ---- pump ----------------------------------------------------------------

static void on_pump_read(struct sc_stream *s, ssize_t nread, const uv_buf_t *buf);

static void maybe_done(struct sc_conn *c)
{
    if (c->eof[0] && c->eof[1] && c->inflight[0] == 0 && c->inflight[1] == 0) {
        finalize(c, c->aged ? "max_connection_age" : "eof", false);
    }
}

static void on_pump_written(struct sc_stream *dst, int status, void *arg)
{
    sc_buf_release(arg);
    struct sc_conn *c = sc_stream_get_data(dst);
    int d = dst == c->up ? 0 : 1;
    c->inflight[d]--;
    if (c->state == SC_CONN_CLOSING) {
        return;
    }
    if (status != 0) {
        finalize(c, d == 0 ? "upstream_write_error" : "downstream_write_error", false);
        return;
    }
    c->last_active_ms = uv_now(&c->w->loop);
    struct sc_stream *src = d == 0 ? c->down : c->up;
    if (c->paused[d] && sc_stream_write_queue_size(dst) == 0 && !c->eof[d]) {
        c->paused[d] = false;
        sc_stream_read_start(src, on_pump_read);
    }
    maybe_done(c);
}

static void on_pump_read(struct sc_stream *src, ssize_t nread, const uv_buf_t *buf)
{
    struct sc_conn *c = sc_stream_get_data(src);
    int d = src == c->down ? 0 : 1;
    struct sc_stream *dst = d == 0 ? c->up : c->down;
    struct sc_worker *w = c->w;
    enum sc_dir dir = w->proxy->cfg.dir;

    if (nread < 0) {
        if (nread != UV_EOF) {
            finalize(c, d == 0 ? "downstream_error" : "upstream_error", false);
            return;
        }
        // Half-close: the end of one direction goes on as FIN (after the
        // queued bytes); the other direction keeps flowing.
        c->eof[d] = true;
        sc_stream_shutdown(dst);
        maybe_done(c);
        return;
    }
    c->last_active_ms = uv_now(&w->loop);
    if (d == 0) {
        c->bytes_in += (uint64_t)nread;
        SC_STAT_ADD(w->stats.bytes_received[dir], (uint64_t)nread);
    } else {
        c->bytes_out += (uint64_t)nread;
        SC_STAT_ADD(w->stats.bytes_sent[dir], (uint64_t)nread);
    }
    uv_buf_t b = uv_buf_init(buf->base, (unsigned)nread);
    int r = sc_stream_write(dst, &b, 1, on_pump_written, buf->base);
    if (r != 0) {
        sc_buf_release(buf->base);
        finalize(c, d == 0 ? "upstream_write_error" : "downstream_write_error", false);
        return;
    }
    c->inflight[d]++;
    if (sc_stream_write_queue_size(dst) > 0 && !c->paused[d]) {
        c->paused[d] = true;
        sc_stream_read_stop(src);
    }
}

static void start_pump(struct sc_conn *c)
{
    c->state = SC_CONN_PUMP;
    c->last_active_ms = uv_now(&c->w->loop);
    if (sc_stream_read_start(c->down, on_pump_read) != 0 ||
        sc_stream_read_start(c->up, on_pump_read) != 0) {
        finalize(c, "read_error", false);
    }
}

// ---- handshake and connect ----------------------------------------------

static void handshake_failed(struct sc_conn *c)
{
    struct sc_worker *w = c->w;
    enum sc_dir dir = w->proxy->cfg.dir;
    const char *detail = "-";
    enum sc_tls_fail reason = sc_stream_tls_fail(c->tls, &detail);
    const char *peer_id = sc_tls_peer_id(sc_stream_get0_ssl(c->tls));
    SC_STAT_ADD(w->stats.hs_failures[dir][reason], 1);
    SC_STAT_ADD(w->stats.conn_failed[dir][SC_MODE_MTLS], 1);
    if (reason == SC_TLS_FAIL_NOT_ALLOWED) {
        SC_STAT_ADD(w->stats.authz_deny, 1);
    }
    sc_warn("tls.handshake_failed", "dir=%s reason=%s peer=%s peer_id=%s detail=%s",
            dir_name(dir), sc_tls_fail_name(reason), c->peer, peer_id, detail);
#ifdef SC_HAVE_FAILURES
    sc_failures_record(dir, reason, c->peer, peer_id, detail);
#endif
}

static void on_upstream_connect(struct sc_stream *up, int status);

static void on_handshake(struct sc_stream *s, int status)
{
    struct sc_conn *c = sc_stream_get_data(s);
    struct sc_worker *w = c->w;
    enum sc_dir dir = w->proxy->cfg.dir;
    if (status != 0) {
        handshake_failed(c);
        // An orderly close: the app sees EOF without a byte. (A RST can
        // reach a loopback client before its connect() returns and look like
        // a connection error instead of a refusal.)
        finalize(c, "handshake_failed", false);
        return;
    }
    sc_stats_observe_handshake(&w->stats, sc_stream_handshake_us(s));
    if (dir == SC_DIR_INBOUND) {
        SC_STAT_ADD(w->stats.authz_allow, 1);
        // Authenticated and authorized: only now reach the app.
        c->up = sc_stream_new(&w->loop, &w->pool);
        sc_stream_set_data(c->up, c);
        c->open_streams++;
        c->state = SC_CONN_CONNECTING;
        int r = sc_stream_connect(c->up, (struct sockaddr *)&w->proxy->cfg.target,
                                  w->proxy->cfg.connect_timeout_ms, on_upstream_connect);
        if (r != 0) {
            on_upstream_connect(c->up, r); // not re-entrant for the stream: it made no call
        }
        return;
    }
    start_pump(c);
}

static void on_upstream_connect(struct sc_stream *up, int status)
{
    struct sc_conn *c = sc_stream_get_data(up);
    struct sc_worker *w = c->w;
    enum sc_dir dir = w->proxy->cfg.dir;
    if (c->state == SC_CONN_CLOSING) {
        return;
    }
    if (status != 0) {
        char target[64];
        SC_STAT_ADD(w->stats.conn_failed[dir][SC_MODE_MTLS], 1);
        sc_warn("conn.upstream_failed", "dir=%s target=%s error=%s", dir_name(dir),
                sc_format_addr((struct sockaddr *)&w->proxy->cfg.target, target, sizeof(target)),
                status == UV_ETIMEDOUT ? "connect timeout" : uv_strerror(status));
        // Closed at once. Not with uv_tcp_close_reset: on loopback the RST
        // can reach a client whose connect() has not returned yet, which then
        // fails as "connection reset" instead of seeing the close. A client
        // that already sent bytes gets a RST from the kernel anyway (unread
        // data at close).
        finalize(c, "upstream_connect_failed", false);
        return;
    }
    if (dir == SC_DIR_OUTBOUND) {
        c->state = SC_CONN_HANDSHAKE;
        int r = sc_stream_start_tls(up, w->ctx, false, w->proxy->cfg.sni,
                                    w->proxy->cfg.handshake_timeout_ms, on_handshake);
        if (r != 0) {
            sc_warn("tls.start_failed", "dir=outbound error=%s", sc_strerror(r));
            finalize(c, "tls_start_failed", false);
        }
        return;
    }
    start_pump(c);
}

void sc_conn__accept(struct sc_worker *w)
{
    struct sc_proxy *p = w->proxy;
    enum sc_dir dir = p->cfg.dir;
    struct sc_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        SC_STAT_ADD(w->stats.accept_errors, 1);
        return;
    }
    c->w = w;
    c->down = sc_stream_new(&w->loop, &w->pool);
    sc_stream_set_data(c->down, c);
    c->open_streams = 1;
    c->start_ms = uv_now(&w->loop);
    c->next = w->conns;
    if (w->conns != NULL) {
        w->conns->prev = c;
    }
    w->conns = c;
    atomic_fetch_add(&w->num_conns, 1);
    int r = sc_stream_accept(c->down, (uv_stream_t *)&w->listener);
    if (r != 0) {
        SC_STAT_ADD(w->stats.accept_errors, 1);
        c->state = SC_CONN_CLOSING;
        sc_stream_close(c->down, on_stream_closed);
        return;
    }
    SC_STAT_ADD(w->stats.conn_opened[dir][SC_MODE_MTLS], 1);
    if (dir == SC_DIR_INBOUND) {
        c->tls = c->down;
        sc_stream_peer_name(c->down, c->peer, sizeof(c->peer));
        c->state = SC_CONN_HANDSHAKE;
        r = sc_stream_start_tls(c->down, w->ctx, true, NULL, p->cfg.handshake_timeout_ms,
                                on_handshake);
        if (r != 0) {
            sc_warn("tls.start_failed", "dir=inbound error=%s", sc_strerror(r));
            finalize(c, "tls_start_failed", false);
        }
        return;
    }
    c->up = sc_stream_new(&w->loop, &w->pool);
    sc_stream_set_data(c->up, c);
    c->open_streams++;
    c->tls = c->up;
    sc_format_addr((struct sockaddr *)&p->cfg.target, c->peer, sizeof(c->peer));
    c->state = SC_CONN_CONNECTING;
    r = sc_stream_connect(c->up, (struct sockaddr *)&p->cfg.target, p->cfg.connect_timeout_ms,
                          on_upstream_connect);
    if (r != 0) {
        on_upstream_connect(c->up, r);
    }
}

// age_out starts the graceful end of a connection older than
// max_connection_age: no more bytes are taken from the downstream, the
// upstream gets a FIN, and once its answer has drained back (its FIN goes on
// to the downstream) the connection ends as after a half-close.
static void age_out(struct sc_conn *c, uint64_t now)
{
    c->aged = true;
    c->aged_ms = now;
    if (!c->eof[0]) {
        c->eof[0] = true;
        sc_stream_read_stop(c->down);
        sc_stream_shutdown(c->up);
    }
    maybe_done(c);
}

void sc_conn__sweep(struct sc_worker *w, bool force)
{
    uint64_t now = uv_now(&w->loop);
    uint64_t idle = w->proxy->cfg.idle_timeout_ms;
    uint64_t max_age = w->proxy->cfg.max_connection_age_ms;
    struct sc_conn *c = w->conns;
    while (c != NULL) {
        struct sc_conn *next = c->next; // finalize never frees synchronously
        if (force) {
            finalize(c, "drain_timeout", false);
        } else if (idle > 0 && c->state == SC_CONN_PUMP && now - c->last_active_ms >= idle) {
            finalize(c, "idle_timeout", false);
        } else if (max_age > 0 && c->state == SC_CONN_PUMP && !c->aged &&
                   now - c->start_ms >= max_age) {
            age_out(c, now);
        } else if (c->aged && c->state == SC_CONN_PUMP &&
                   now - c->aged_ms >= SC_MAX_AGE_GRACE_MS) {
            finalize(c, "max_connection_age", false);
        }
        c = next;
    }
}
