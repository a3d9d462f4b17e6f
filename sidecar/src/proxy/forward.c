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
#include "proxy/mux.h"
#include "proxy/proxy_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc/err.h"
#include "sc/limits.h"
#include "sc/log.h"
#include "sc/mesh.h"
#include "sc/parse.h"
#include "sc/tcp_cc.h"
#include "sc/tls.h"

#if __has_include("sc/failures.h")
#include "sc/failures.h"
#define SC_HAVE_FAILURES 1
#endif

enum sc_conn_state {
    SC_CONN_CONNECTING = 0,
    SC_CONN_HANDSHAKE,
    SC_CONN_DETECT, // inbound DETECT: waiting for the client's first bytes
    SC_CONN_PUMP,
    SC_CONN_CLOSING,
};

struct sc_conn {
    struct sc_conn *next; // worker's list of open connections
    struct sc_conn *prev;
    struct sc_worker *w;
    struct sc_stream *down; // accepted side (NULL once closed)
    struct sc_stream *up;   // upstream side (NULL if not created or closed)
    struct sc_stream *tls;  // the mTLS side: down (inbound) or up (outbound)
    enum sc_conn_state state;
    int open_streams;       // handles (streams, detect timer) not yet closed
    enum sc_conn_mode mode; // mTLS or plain, once decided (stats)
    bool counted;           // conn_opened was counted (conn_closed will be)
    struct sc_route route;  // routed connections: the decision
    void *snap;             // routed connections: the snapshot's reference
    uv_timer_t detect;      // SC_CONN_DETECT timeout (initialised only then)
    char *first;            // plain after detection: the bytes already read
    size_t first_len;
    bool eof[2];     // source of direction d reported its end
    bool paused[2];  // source of direction d not read (backpressure)
    int inflight[2]; // writes in flight in direction d
    uint64_t start_ms;
    uint64_t last_active_ms;
    bool aged;            // past max_connection_age: closing gracefully
    uint64_t await_since; // forwarded downstream bytes, no answer yet (busy poll)
    uint64_t aged_ms;
    uint64_t bytes_in;  // from the downstream side
    uint64_t bytes_out; // to the downstream side
    char peer[64];      // address of the TLS peer
};

static const char *dir_name(enum sc_dir d)
{
    return d == SC_DIR_INBOUND ? "inbound" : "outbound";
}

// release_handle is called once per closed handle; the last one frees |c|.
static void release_handle(struct sc_conn *c)
{
    if (--c->open_streams > 0) {
        return;
    }
    struct sc_worker *w = c->w;
    if (c->snap != NULL) {
        w->proxy->cfg.router->snap_unref(c->snap);
    }
    sc_buf_release(c->first);
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

static void on_stream_closed(struct sc_stream *s)
{
    struct sc_conn *c = sc_stream_get_data(s);
    if (s == c->down) {
        c->down = NULL;
    } else if (s == c->up) {
        c->up = NULL;
    }
    release_handle(c);
}

static void on_detect_closed(uv_handle_t *h)
{
    release_handle(h->data);
}

// hand_off forgets |c| once mux.c has taken its socket (a session's TLS
// stream, or a client carried as a stream): its count and place in
// num_conns go on there.
static void hand_off(struct sc_conn *c)
{
    c->counted = false;
    c->state = SC_CONN_CLOSING;
    c->down = NULL;
    c->tls = NULL;
    release_handle(c);
}

// count_open records the connection's mode once it is known. A connection
// mux.c handed back is counted already; if the newest config routes it in
// another mode now, its old count is closed so opened minus closed still
// sums to the open connections of each mode.
static void count_open(struct sc_conn *c, enum sc_conn_mode mode)
{
    if (c->counted && c->mode != mode) {
        SC_STAT_ADD(c->w->stats.conn_closed[c->w->proxy->cfg.dir][c->mode], 1);
        c->counted = false;
    }
    c->mode = mode;
    if (!c->counted) {
        c->counted = true;
        SC_STAT_ADD(c->w->stats.conn_opened[c->w->proxy->cfg.dir][mode], 1);
    }
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
    if (c->state == SC_CONN_DETECT) {
        uv_close((uv_handle_t *)&c->detect, on_detect_closed);
    }
    c->state = SC_CONN_CLOSING;
    sc_worker__await_end(w, &c->await_since);
    if (c->counted) {
        SC_STAT_ADD(w->stats.conn_closed[dir][c->mode], 1);
    }
    if (pumped) {
        SSL *ssl = c->tls ? sc_stream_get0_ssl(c->tls) : NULL;
        sc_info("conn.close",
                "dir=%s peer=%s peer_id=%s tls=%s bytes_in=%llu bytes_out=%llu "
                "duration_ms=%llu reason=%s",
                dir_name(dir), c->peer, sc_tls_peer_id(ssl),
                c->tls ? sc_stream_tls_version(c->tls) : "plain", (unsigned long long)c->bytes_in,
                (unsigned long long)c->bytes_out,
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
    sc_worker__awaiting(w, &c->await_since, d == 0);
    if (d == 0) {
        c->bytes_in += (uint64_t)nread;
        SC_STAT_ADD(w->stats.bytes_received[dir], (uint64_t)nread);
    } else {
        c->bytes_out += (uint64_t)nread;
        SC_STAT_ADD(w->stats.bytes_sent[dir], (uint64_t)nread);
    }
    uv_buf_t b = uv_buf_init(buf->base, (unsigned)nread);
    // The stream releases the buffer as soon as the bytes are out of it
    // (also on error), not in the callback of the next loop turn.
    int r = sc_stream_write_owned(dst, &b, 1, buf->base, on_pump_written, NULL);
    if (r != 0) {
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
    if (c->first != NULL) {
        // Plain after detection: the bytes read to decide go first.
        char *first = c->first;
        uv_buf_t b = uv_buf_init(first, (unsigned)c->first_len);
        c->first = NULL;
        c->bytes_in += b.len;
        sc_worker__awaiting(c->w, &c->await_since, true);
        SC_STAT_ADD(c->w->stats.bytes_received[c->w->proxy->cfg.dir], b.len);
        if (sc_stream_write_owned(c->up, &b, 1, first, on_pump_written, NULL) != 0) {
            finalize(c, "upstream_write_error", false);
            return;
        }
        c->inflight[0]++;
    }
    if (sc_stream_read_start(c->down, on_pump_read) != 0 ||
        sc_stream_read_start(c->up, on_pump_read) != 0) {
        finalize(c, "read_error", false);
    }
}

// ---- handshake and connect ----------------------------------------------

void sc_proxy__handshake_failed(struct sc_worker *w, struct sc_stream *tls, const char *peer,
                                enum sc_conn_mode mode, bool count_conn)
{
    enum sc_dir dir = w->proxy->cfg.dir;
    const char *detail = "-";
    enum sc_tls_fail reason = sc_stream_tls_fail(tls, &detail);
    const char *peer_id = sc_tls_peer_id(sc_stream_get0_ssl(tls));
    SC_STAT_ADD(w->stats.hs_failures[dir][reason], 1);
    if (count_conn) {
        SC_STAT_ADD(w->stats.conn_failed[dir][mode], 1);
    }
    if (reason == SC_TLS_FAIL_NOT_ALLOWED) {
        SC_STAT_ADD(w->stats.authz_deny, 1);
    }
    sc_warn("tls.handshake_failed", "dir=%s reason=%s peer=%s peer_id=%s detail=%s", dir_name(dir),
            sc_tls_fail_name(reason), peer, peer_id, detail);
#ifdef SC_HAVE_FAILURES
    sc_failures_record(dir, reason, peer, peer_id, detail);
#endif
}

static void on_upstream_connect(struct sc_stream *up, int status);

static const struct sockaddr *target_of(const struct sc_conn *c)
{
    return (const struct sockaddr *)(c->w->proxy->cfg.router != NULL ? &c->route.target
                                                                     : &c->w->proxy->cfg.target);
}

// connect_upstream opens the upstream side of |c| (plain TCP first; the
// outbound mTLS handshake follows in on_upstream_connect).
static void connect_upstream(struct sc_conn *c)
{
    struct sc_worker *w = c->w;
    c->up = sc_stream_new(&w->loop, &w->pool);
    sc_stream_set_data(c->up, c);
    c->open_streams++;
    c->state = SC_CONN_CONNECTING;
    int r = sc_stream_connect(c->up, target_of(c), w->proxy->cfg.connect_timeout_ms,
                              on_upstream_connect);
    if (r != 0) {
        on_upstream_connect(c->up, r); // the stream made no call: not re-entrant
    }
}

static void on_handshake(struct sc_stream *s, int status)
{
    struct sc_conn *c = sc_stream_get_data(s);
    struct sc_worker *w = c->w;
    enum sc_dir dir = w->proxy->cfg.dir;
    if (status != 0) {
        sc_proxy__handshake_failed(w, c->tls, c->peer, c->mode, true);
        // An orderly close: the app sees EOF without a byte. (A RST can
        // reach a loopback client before its connect() returns and look like
        // a connection error instead of a refusal.)
        finalize(c, "handshake_failed", false);
        return;
    }
    sc_stats_observe_handshake(&w->stats, sc_stream_handshake_us(s));
    if (dir == SC_DIR_INBOUND) {
        const struct sc_proxy_router *rt = w->proxy->cfg.router;
        const char *peer_id = sc_tls_peer_id(sc_stream_get0_ssl(s));
        if (rt != NULL && rt->authorize != NULL && !rt->authorize(c->snap, &c->route, peer_id)) {
            // Verified but not authorized for this port: refused like an
            // allow-list miss, with the same log line and counters.
            const char *detail = "client SPIFFE ID not allowed on this port";
            SC_STAT_ADD(w->stats.hs_failures[dir][SC_TLS_FAIL_NOT_ALLOWED], 1);
            SC_STAT_ADD(w->stats.conn_failed[dir][c->mode], 1);
            SC_STAT_ADD(w->stats.authz_deny, 1);
            sc_warn("tls.handshake_failed", "dir=%s reason=%s peer=%s peer_id=%s detail=%s",
                    dir_name(dir), sc_tls_fail_name(SC_TLS_FAIL_NOT_ALLOWED), c->peer, peer_id,
                    detail);
#ifdef SC_HAVE_FAILURES
            sc_failures_record(dir, SC_TLS_FAIL_NOT_ALLOWED, c->peer, peer_id, detail);
#endif
            finalize(c, "not_allowed", false);
            return;
        }
        bool mux = sc_mux__negotiated(s);
        if (rt == NULL || !mux) {
            // (Mesh mode authorizes each seam-mux stream: counted there.)
            SC_STAT_ADD(w->stats.authz_allow, 1);
        }
        if (mux) {
            // A seam-mux session: its streams are the connections (each
            // counted as one); this TLS connection is handed over to it.
            SC_STAT_ADD(w->stats.conn_closed[dir][c->mode], 1);
            sc_mux__serve(w, s, c->peer);
            hand_off(c);
            return;
        }
        // Authenticated and authorized: only now reach the app.
        connect_upstream(c);
        return;
    }
    start_pump(c);
}

void sc_proxy__set_loopback_cc(struct sc_worker *w, const struct sockaddr *target,
                               struct sc_stream *s)
{
    const char *cc = w->proxy->cfg.loopback_cc;
    if (cc[0] == '\0' || !sc_addr_is_loopback(target)) {
        return;
    }
    uv_os_fd_t fd;
    int r = uv_fileno((uv_handle_t *)sc_stream_get0_tcp(s), &fd);
    if (r == 0) {
        r = sc_tcp_cc_set(fd, cc);
    }
    if (r != 0 && !w->loopback_cc_warned) {
        w->loopback_cc_warned = true;
        sc_warn("proxy.loopback_cc_failed", "worker=%d cc=%s error=%s", w->id, cc, uv_strerror(r));
    }
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
        SC_STAT_ADD(w->stats.conn_failed[dir][c->mode], 1);
        sc_warn("conn.upstream_failed", "dir=%s target=%s error=%s", dir_name(dir),
                sc_format_addr(target_of(c), target, sizeof(target)),
                status == UV_ETIMEDOUT ? "connect timeout" : uv_strerror(status));
        // Closed at once. Not with uv_tcp_close_reset: on loopback the RST
        // can reach a client whose connect() has not returned yet, which then
        // fails as "connection reset" instead of seeing the close. A client
        // that already sent bytes gets a RST from the kernel anyway (unread
        // data at close).
        finalize(c, "upstream_connect_failed", false);
        return;
    }
    sc_proxy__set_loopback_cc(w, target_of(c), up);
    if (dir == SC_DIR_OUTBOUND && c->mode == SC_MODE_MTLS) {
        c->state = SC_CONN_HANDSHAKE;
        int r = sc_stream_start_tls(up, w->ctx, false, w->proxy->cfg.sni,
                                    w->proxy->cfg.handshake_timeout_ms, on_handshake);
        if (r == 0 && c->route.peer_id != NULL) {
            // Secure naming: this destination's own expected identity.
            r = sc_tls_set_expected_peer_id(sc_stream_get0_ssl(up), c->route.peer_id);
        }
        if (r != 0) {
            sc_warn("tls.start_failed", "dir=outbound error=%s", sc_strerror(r));
            finalize(c, "tls_start_failed", false);
        }
        return;
    }
    start_pump(c);
}

// ---- protocol detection (inbound DETECT routes) -------------------------

// refuse logs and closes a connection the router (or its authorization)
// turned away before any byte reached the upstream.
static void refuse(struct sc_conn *c, const char *reason, const char *detail)
{
    struct sc_worker *w = c->w;
    enum sc_dir dir = w->proxy->cfg.dir;
    char client[64];
    SC_STAT_ADD(w->stats.conn_failed[dir][SC_MODE_PLAIN], 1);
    sc_warn("conn.refused", "dir=%s peer=%s orig=%s reason=%s detail=%s", dir_name(dir),
            sc_stream_peer_name(c->down, client, sizeof(client)), c->route.orig, reason, detail);
    finalize(c, "refused", false);
}

// plain_allowed asks the router whether a client without an identity may
// use this inbound route (a port with allow rules admits only mTLS peers).
static bool plain_allowed(struct sc_conn *c)
{
    const struct sc_proxy_router *rt = c->w->proxy->cfg.router;
    if (c->w->proxy->cfg.dir != SC_DIR_INBOUND || rt == NULL || rt->authorize == NULL ||
        rt->authorize(c->snap, &c->route, "-")) {
        return true;
    }
    SC_STAT_ADD(c->w->stats.authz_deny, 1);
    refuse(c, "not_allowed", "plain_client");
    return false;
}

static void detected_plain(struct sc_conn *c)
{
    if (!plain_allowed(c)) {
        return;
    }
    count_open(c, SC_MODE_PLAIN);
    c->tls = NULL;
    connect_upstream(c);
}

static void on_detect_timeout(uv_timer_t *t)
{
    struct sc_conn *c = t->data;
    if (c->state != SC_CONN_DETECT) {
        return;
    }
    // Nothing from the client: a server-first protocol. Plain passthrough.
    sc_stream_read_stop(c->down);
    uv_close((uv_handle_t *)&c->detect, on_detect_closed);
    detected_plain(c);
}

static void on_detect_read(struct sc_stream *s, ssize_t nread, const uv_buf_t *buf)
{
    struct sc_conn *c = sc_stream_get_data(s);
    struct sc_worker *w = c->w;
    if (nread < 0) {
        finalize(c, "closed_before_data", false);
        return;
    }
    sc_stream_read_stop(s);
    uv_close((uv_handle_t *)&c->detect, on_detect_closed);
    c->state = SC_CONN_HANDSHAKE;
    // A TLS client starts with a ClientHello record (sc/mesh.h, fuzzed).
    // With fewer bytes than the detector needs (rare: a ClientHello comes
    // in one segment) the record type decides; TLS refuses the rest anyway.
    enum sc_mesh_detect d = sc_mesh_detect_client_hello((const uint8_t *)buf->base, (size_t)nread);
    if (d == SC_DETECT_TLS || (d == SC_DETECT_NEED_MORE && (uint8_t)buf->base[0] == 0x16)) {
        count_open(c, SC_MODE_MTLS);
        c->tls = s;
        int r =
            sc_stream_start_tls_prefixed(s, w->ctx, true, NULL, w->proxy->cfg.handshake_timeout_ms,
                                         on_handshake, buf->base, (size_t)nread);
        if (r != 0) {
            sc_warn("tls.start_failed", "dir=inbound error=%s", sc_strerror(r));
            finalize(c, "tls_start_failed", false);
        }
        return;
    }
    c->first = buf->base;
    c->first_len = (size_t)nread;
    detected_plain(c);
}

static void start_detect(struct sc_conn *c)
{
    struct sc_worker *w = c->w;
    uint64_t ms = w->proxy->cfg.detect_timeout_ms ? w->proxy->cfg.detect_timeout_ms : 500;
    uv_timer_init(&w->loop, &c->detect);
    c->detect.data = c;
    c->open_streams++;
    c->state = SC_CONN_DETECT;
    uv_timer_start(&c->detect, on_detect_timeout, ms, 0);
    if (sc_stream_read_start(c->down, on_detect_read) != 0) {
        finalize(c, "read_error", false);
    }
}

// start_routed starts a connection of a router: refuse, plain, mTLS or detect.
static void start_routed(struct sc_conn *c)
{
    struct sc_worker *w = c->w;
    enum sc_dir dir = w->proxy->cfg.dir;
    const struct sc_proxy_router *rt = w->proxy->cfg.router;
    snprintf(c->route.orig, sizeof(c->route.orig), "-");
    if (w->snap != NULL) {
        rt->snap_ref(w->snap);
        c->snap = w->snap;
    }
    uv_os_fd_t fd = -1;
    uv_fileno((uv_handle_t *)sc_stream_get0_tcp(c->down), &fd);
    rt->route(c->snap, dir, fd, &c->route);
    if (dir == SC_DIR_OUTBOUND) {
        sc_format_addr((struct sockaddr *)&c->route.target, c->peer, sizeof(c->peer));
    }
    switch (c->route.kind) {
    case SC_ROUTE_PLAIN:
        if (!plain_allowed(c)) {
            return;
        }
        count_open(c, SC_MODE_PLAIN);
        connect_upstream(c);
        return;
    case SC_ROUTE_MTLS:
        count_open(c, SC_MODE_MTLS);
        if (dir == SC_DIR_OUTBOUND && w->proxy->cfg.mux &&
            sc_mux__wanted(w, (const struct sockaddr *)&c->route.target) &&
            sc_mux__carry(w, c->down, (const struct sockaddr *)&c->route.target, c->route.peer_id,
                          c->start_ms) == 0) {
            hand_off(c); // a stream of a session to this destination now
            return;
        }
        if (dir == SC_DIR_OUTBOUND) {
            c->tls = NULL; // set once the upstream stream exists
            connect_upstream(c);
            c->tls = c->up;
            return;
        }
        c->tls = c->down;
        c->state = SC_CONN_HANDSHAKE;
        if (sc_stream_start_tls(c->down, w->ctx, true, NULL, w->proxy->cfg.handshake_timeout_ms,
                                on_handshake) != 0) {
            finalize(c, "tls_start_failed", false);
        }
        return;
    case SC_ROUTE_DETECT:
        if (dir == SC_DIR_INBOUND) {
            start_detect(c);
            return;
        }
        break;
    case SC_ROUTE_REFUSE:
        break;
    }
    refuse(c, c->route.kind == SC_ROUTE_REFUSE && c->route.reason ? c->route.reason : "bad_route",
           "-");
}

// conn_new links a connection around |down| (an accepted client stream, or
// NULL: a new one) into the worker's list.
static struct sc_conn *conn_new(struct sc_worker *w, struct sc_stream *down)
{
    struct sc_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return NULL;
    }
    c->w = w;
    c->down = down != NULL ? down : sc_stream_new(&w->loop, &w->pool);
    sc_stream_set_data(c->down, c);
    c->open_streams = 1;
    c->start_ms = uv_now(&w->loop);
    c->next = w->conns;
    if (w->conns != NULL) {
        w->conns->prev = c;
    }
    w->conns = c;
    return c;
}

// connect_outbound starts a tunnel outbound connection's upstream leg: the
// inbound proxy, then the mTLS handshake (on_upstream_connect).
static void connect_outbound(struct sc_conn *c)
{
    struct sc_worker *w = c->w;
    struct sc_proxy *p = w->proxy;
    c->up = sc_stream_new(&w->loop, &w->pool);
    sc_stream_set_data(c->up, c);
    c->open_streams++;
    c->tls = c->up;
    sc_format_addr((struct sockaddr *)&p->cfg.target, c->peer, sizeof(c->peer));
    c->state = SC_CONN_CONNECTING;
    int r = sc_stream_connect(c->up, (struct sockaddr *)&p->cfg.target, p->cfg.connect_timeout_ms,
                              on_upstream_connect);
    if (r != 0) {
        on_upstream_connect(c->up, r);
    }
}

int sc_conn__adopt_outbound(struct sc_worker *w, struct sc_stream *down, uint64_t start_ms)
{
    struct sc_conn *c = conn_new(w, down);
    if (c == NULL) {
        return SC_ENOMEM;
    }
    c->start_ms = start_ms; // its age counts from the accept
    // Admitted, counted as opened and in num_conns already (mux.c).
    c->mode = SC_MODE_MTLS;
    c->counted = true;
    if (w->proxy->cfg.router != NULL) {
        start_routed(c); // mux.c marked its destination 1:1
        return 0;
    }
    connect_outbound(c);
    return 0;
}

void sc_conn__accept(struct sc_worker *w)
{
    struct sc_proxy *p = w->proxy;
    enum sc_dir dir = p->cfg.dir;
    if (p->cfg.mux && p->cfg.router == NULL && dir == SC_DIR_OUTBOUND &&
        sc_mux__wanted(w, (const struct sockaddr *)&p->cfg.target)) {
        sc_mux__accept(w);
        return;
    }
    struct sc_conn *c = conn_new(w, NULL);
    if (c == NULL) {
        SC_STAT_ADD(w->stats.accept_errors, 1);
        return;
    }
    atomic_fetch_add(&w->num_conns, 1);
    int r = sc_stream_accept_inherited(c->down, (uv_stream_t *)&w->listener);
    if (r != 0) {
        SC_STAT_ADD(w->stats.accept_errors, 1);
        c->state = SC_CONN_CLOSING;
        sc_stream_close(c->down, on_stream_closed);
        return;
    }
    if (sc_limits_admit_conn(w, c->down) != 0) { // counted and logged by limits.c
        c->state = SC_CONN_CLOSING;
        sc_stream_close(c->down, on_stream_closed);
        return;
    }
    if (dir == SC_DIR_INBOUND) {
        sc_stream_peer_name(c->down, c->peer, sizeof(c->peer));
    }
    if (p->cfg.router != NULL) {
        start_routed(c);
        return;
    }
    count_open(c, SC_MODE_MTLS);
    if (dir == SC_DIR_INBOUND) {
        c->tls = c->down;
        c->state = SC_CONN_HANDSHAKE;
        r = sc_stream_start_tls(c->down, w->ctx, true, NULL, p->cfg.handshake_timeout_ms,
                                on_handshake);
        if (r != 0) {
            sc_warn("tls.start_failed", "dir=inbound error=%s", sc_strerror(r));
            finalize(c, "tls_start_failed", false);
        }
        return;
    }
    connect_outbound(c);
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
        } else if (c->aged && c->state == SC_CONN_PUMP && now - c->aged_ms >= SC_MAX_AGE_GRACE_MS) {
            finalize(c, "max_connection_age", false);
        }
        c = next;
    }
}
