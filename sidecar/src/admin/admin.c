// admin.c — the admin HTTP/1.1 server on the main thread's libuv loop (see
// sc/admin.h for the endpoints).
//
// One request per connection: read until the head (and any small body) is
// complete, answer, send FIN, then discard input until the peer closes or a
// short linger timer fires (closing with unread input would RST and could
// destroy the response before the client reads it). Every connection has a
// timer: the whole request must arrive within request_timeout_ms
// (slowloris). Concurrent connections are capped; above the cap a client gets
// 503, and above twice the cap it is closed without a response. None of this
// shares state with the workers, so a misbehaving admin client cannot
// disturb the proxy.
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin/admin_int.h"
#include "admin/http_parse.h"
#include "sc/accept_pause.h"
#include "sc/admin.h"
#include "sc/failures.h"
#include "sc/log.h"
#include "sc/parse.h"

#define DEFAULT_REQUEST_TIMEOUT_MS 10000
#define DEFAULT_MAX_WORKER_LAG_US 10000000ULL
#define DEFAULT_MAX_CONNECTIONS 64
#define LINGER_MS 2000
#define LAG_INTERVAL_MS 500

enum after_write { AFTER_NOTHING = 0, AFTER_QUIT };

struct admin_conn {
    struct sc_admin *admin;
    struct admin_conn *prev, *next;
    uv_tcp_t tcp;
    uv_timer_t timer; // request timeout, then linger
    int open_handles; // handles not yet closed; freed at 0
    bool closing;
    bool responded;     // a response is queued: ignore further requests
    bool loopback;      // the peer is 127.0.0.0/8 or ::1
    bool over_limit;    // answer 503 to whatever arrives
    bool write_pending; // the response is still being written
    bool peer_eof;      // the client half-closed (EOF read)
    enum after_write after;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    struct sc_admin_buf out; // response, alive until the write callback
    size_t in_len;
    char in[SC_HTTP_MAX_HEAD + SC_HTTP_MAX_BODY];
};

struct sc_admin {
    uv_loop_t *loop;
    uv_tcp_t listener;
    struct sc_accept_pause accept_pause; // closes and reopens listener on fd/memory shortage
    uv_timer_t lag_timer;
    int open_handles; // listener (with its pause timer) + lag timer
    bool stopping;
    struct sc_admin_hooks hooks;
    struct admin_conn *conns;
    int num_conns;
    uint64_t lag_last_ns; // when the lag timer last fired
    uint64_t main_lag_us; // last measured main-loop lag
    sc_admin_stop_cb stop_cb;
    void *stop_arg;
};

static void conn_close(struct admin_conn *c);

// maybe_free_admin frees the server once the listener, the lag timer and
// every connection are closed, then reports to sc_admin_stop's caller.
static void maybe_free_admin(struct sc_admin *a)
{
    if (!a->stopping || a->open_handles > 0 || a->num_conns > 0) {
        return;
    }
    sc_admin_stop_cb cb = a->stop_cb;
    void *arg = a->stop_arg;
    free(a);
    if (cb != NULL) {
        cb(arg);
    }
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    struct admin_conn *c = h->data;
    if (--c->open_handles > 0) {
        return;
    }
    struct sc_admin *a = c->admin;
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        a->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    a->num_conns--;
    sc_admin_buf_cleanup(&c->out);
    free(c);
    maybe_free_admin(a);
}

// conn_close is the one way a connection ends; idempotent.
static void conn_close(struct admin_conn *c)
{
    if (c->closing) {
        return;
    }
    c->closing = true;
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
}

static void on_linger_timeout(uv_timer_t *t)
{
    conn_close(t->data);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct admin_conn *c = req->data;
    if (status < 0) {
        conn_close(c);
    }
}

static void on_write(uv_write_t *req, int status)
{
    struct admin_conn *c = req->data;
    struct sc_admin *a = c->admin;
    c->write_pending = false;
    sc_admin_buf_cleanup(&c->out);
    if (c->after == AFTER_QUIT && status != UV_ECANCELED) {
        // The reply is on its way; now let the process exit. The hook may
        // stop the admin server (which closes this connection) or exit().
        void (*quit)(void *) = a->hooks.quit;
        void *ctx = a->hooks.ctx;
        conn_close(c);
        quit(ctx);
        return;
    }
    if (status < 0 || c->closing || c->peer_eof) {
        // After the client's EOF nothing is left unread, so closing now
        // sends FIN, not RST.
        conn_close(c);
        return;
    }
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_linger_timeout, LINGER_MS, 0);
}

// respond queues one complete response and marks the connection done.
// |extra_headers| is "" or CRLF-terminated header lines.
static void on_write_timeout(uv_timer_t *t)
{
    // The client does not read its response: give up (cancels the write).
    conn_close(t->data);
}

static void respond(struct admin_conn *c, int status, const char *content_type,
                    const char *extra_headers, const char *body, size_t body_len, bool head_only)
{
    struct sc_admin *a = c->admin;
    c->responded = true;
    // A client that never reads must not hold the connection forever either.
    uv_timer_start(
        &c->timer, on_write_timeout,
        a->hooks.request_timeout_ms ? a->hooks.request_timeout_ms : DEFAULT_REQUEST_TIMEOUT_MS, 0);
    sc_admin_buf_printf(&c->out,
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                        "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
                        status, sc_http_status_text(status), content_type, body_len, extra_headers);
    if (!head_only && body_len > 0) {
        sc_admin_buf_append(&c->out, body, body_len);
    }
    uv_buf_t buf = uv_buf_init(c->out.data, (unsigned)c->out.len);
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &buf, 1, on_write) != 0) {
        c->after = AFTER_NOTHING;
        conn_close(c);
        return;
    }
    c->write_pending = true;
}

static void respond_text(struct admin_conn *c, int status, const char *text)
{
    respond(c, status, "text/plain; charset=utf-8", "", text, strlen(text), false);
}

static void respond_error(struct admin_conn *c, int status)
{
    char body[96];
    snprintf(body, sizeof(body), "%d %s\n", status, sc_http_status_text(status));
    respond_text(c, status, body);
}

// admin_ready: the hook decides; with file certificates (tunnel mode) the
// leaf in the --cert file must also be valid now.
static bool admin_ready(struct sc_admin *a)
{
    if (a->hooks.ready != NULL && !a->hooks.ready(a->hooks.ctx)) {
        return false;
    }
    if (a->hooks.certs_json == NULL && a->hooks.cert_path != NULL) {
        return sc_admin__file_cert_valid(a->hooks.cert_path, (int64_t)time(NULL));
    }
    return true;
}

// admin_live: the main loop answered, so it turns; every running worker must
// have ticked recently (its heartbeat) with a bounded loop lag, and the hook
// (if any) must agree. A worker blocked in a system call stops ticking, so
// its last lag value alone would look fine.
static bool admin_live(struct sc_admin *a, char *why, size_t cap)
{
    uint64_t max =
        a->hooks.max_worker_lag_us ? a->hooks.max_worker_lag_us : DEFAULT_MAX_WORKER_LAG_US;
    uint64_t now_ns = uv_hrtime();
    for (int w = 0; w < a->hooks.num_workers; w++) {
        struct sc_worker_stats *s = a->hooks.worker_stats ? a->hooks.worker_stats[w] : NULL;
        if (s == NULL) {
            continue;
        }
        if (SC_STAT_GET(s->loop_lag_us) > max) {
            snprintf(why, cap, "worker %d loop lag %.3fs above %.3fs\n", w,
                     (double)SC_STAT_GET(s->loop_lag_us) / 1e6, (double)max / 1e6);
            return false;
        }
        // One tick period (1 s) plus the lag bound: no tick for longer is a stall.
        uint64_t hb = SC_STAT_GET(s->heartbeat_ns);
        if (hb != 0 && now_ns > hb && (now_ns - hb) / 1000 > max + 1000000) {
            snprintf(why, cap, "worker %d has not ticked for %.3fs\n", w,
                     (double)(now_ns - hb) / 1e9);
            return false;
        }
    }
    if (a->hooks.live != NULL && !a->hooks.live(a->hooks.ctx)) {
        snprintf(why, cap, "not live\n");
        return false;
    }
    return true;
}

static bool path_is(const struct sc_http_request *r, const char *p)
{
    size_t n = strlen(p);
    return r->path_len == n && memcmp(r->target, p, n) == 0;
}

static void respond_json(struct admin_conn *c, struct sc_admin_buf *body, bool head_only)
{
    sc_admin_buf_append(body, "\n", 1);
    respond(c, 200, "application/json", "", body->data, body->len, head_only);
    sc_admin_buf_cleanup(body);
}

// route dispatches a complete, valid request.
static void route(struct admin_conn *c, const struct sc_http_request *r)
{
    struct sc_admin *a = c->admin;
    bool is_get = r->method == SC_HTTP_GET || r->method == SC_HTTP_HEAD;
    bool head = r->method == SC_HTTP_HEAD;
    struct sc_admin_buf body;
    sc_admin_buf_init(&body);

    static const char *const get_paths[] = {
        "/",      "/metrics", "/healthz/ready",     "/healthz/live",
        "/certs", "/config",  "/debug/tls-failures"};
    static const char *const post_paths[] = {"/drain", "/quitquitquit"};
    bool known_get = false, known_post = false;
    for (size_t i = 0; i < sizeof(get_paths) / sizeof(get_paths[0]); i++) {
        known_get |= path_is(r, get_paths[i]);
    }
    for (size_t i = 0; i < sizeof(post_paths) / sizeof(post_paths[0]); i++) {
        known_post |= path_is(r, post_paths[i]);
    }
    if (!known_get && !known_post) {
        respond_error(c, 404);
        return;
    }
    if (known_get && !is_get) {
        const char *allow = "Allow: GET, HEAD\r\n";
        respond(c, 405, "text/plain; charset=utf-8", allow, "405 Method Not Allowed\n", 23, false);
        return;
    }
    if (known_post && r->method != SC_HTTP_POST) {
        respond(c, 405, "text/plain; charset=utf-8", "Allow: POST\r\n", "405 Method Not Allowed\n",
                23, head);
        return;
    }

    if (known_post) {
        // Mutating endpoints: loopback clients only.
        if (!c->loopback) {
            respond_text(c, 403, "403 Forbidden: only loopback clients may do this\n");
            return;
        }
        if (path_is(r, "/drain")) {
            if (a->hooks.drain == NULL) {
                respond_error(c, 501);
                return;
            }
            sc_info("admin.drain", "requested via POST /drain");
            respond_text(c, 200, "draining\n");
            a->hooks.drain(a->hooks.ctx);
            return;
        }
        if (a->hooks.quit == NULL) {
            respond_error(c, 501);
            return;
        }
        sc_info("admin.quit", "requested via POST /quitquitquit");
        c->after = AFTER_QUIT;
        respond_text(c, 200, "quitting\n");
        return;
    }

    if (path_is(r, "/metrics")) {
        sc_metrics_render(&body, &a->hooks, a->main_lag_us);
        respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", "", body.data, body.len, head);
        sc_admin_buf_cleanup(&body);
    } else if (path_is(r, "/healthz/ready")) {
        bool ok = admin_ready(a);
        const char *t = ok ? "ready\n" : "not ready\n";
        respond(c, ok ? 200 : 503, "text/plain; charset=utf-8", "", t, strlen(t), head);
    } else if (path_is(r, "/healthz/live")) {
        char why[128];
        bool ok = admin_live(a, why, sizeof(why));
        const char *t = ok ? "live\n" : why;
        respond(c, ok ? 200 : 503, "text/plain; charset=utf-8", "", t, strlen(t), head);
    } else if (path_is(r, "/certs")) {
        if (a->hooks.certs_json != NULL) {
            a->hooks.certs_json(a->hooks.ctx, &body);
        } else if (a->hooks.cert_path != NULL) {
            sc_admin__file_certs_json(&body, a->hooks.cert_path, a->hooks.trust_path);
        } else {
            sc_admin_buf_append(&body, "{}", 2);
        }
        respond_json(c, &body, head);
    } else if (path_is(r, "/config")) {
        if (a->hooks.config_json != NULL) {
            a->hooks.config_json(a->hooks.ctx, &body);
        } else {
            sc_admin_buf_append(&body, "{}", 2);
        }
        respond_json(c, &body, head);
    } else if (path_is(r, "/debug/tls-failures")) {
        sc_failures_render_json(&body);
        respond_json(c, &body, head);
    } else {
        const char *idx = "seam admin\n"
                          "GET  /metrics\nGET  /healthz/ready\nGET  /healthz/live\nGET  /certs\n"
                          "GET  /config\nGET  /debug/tls-failures\n"
                          "POST /drain\nPOST /quitquitquit\n";
        respond(c, 200, "text/plain; charset=utf-8", "", idx, strlen(idx), head);
    }
}

// handle_input parses what has arrived so far and answers once the request
// is complete (or is known to be bad).
static void handle_input(struct admin_conn *c)
{
    if (c->over_limit) {
        respond_text(c, 503, "503 Service Unavailable: too many admin connections\n");
        return;
    }
    struct sc_http_request req;
    int rc = sc_http_parse_request(&req, c->in, c->in_len);
    if (rc == SC_HTTP_INCOMPLETE) {
        return;
    }
    if (rc < 0) {
        sc_debug("admin.bad_request", "status=%d", -rc);
        respond_error(c, -rc);
        return;
    }
    if (c->in_len < req.head_len + req.content_length) {
        return; // body still arriving; bounded by SC_HTTP_MAX_BODY
    }
    route(c, &req);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct admin_conn *c = h->data;
    if (c->responded) {
        // Discarding input after the response: reuse the whole buffer.
        *buf = uv_buf_init(c->in, sizeof(c->in));
        return;
    }
    *buf = uv_buf_init(c->in + c->in_len, (unsigned)(sizeof(c->in) - c->in_len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct admin_conn *c = s->data;
    if (nread == 0) {
        return; // EAGAIN, not EOF
    }
    if (nread < 0) {
        if (nread == UV_EOF && c->write_pending) {
            // The client sent its request and half-closed: finish writing
            // the response first (on_write closes).
            c->peer_eof = true;
            uv_read_stop(s);
            return;
        }
        // EOF or error. Before a response there is nobody to answer; after
        // it, the peer has read it and hung up.
        conn_close(c);
        return;
    }
    if (c->responded || c->closing) {
        return;
    }
    c->in_len += (size_t)nread;
    handle_input(c);
    // The buffer holds the largest valid request, so a full buffer always
    // produced a response above; this is only a safety net.
    if (!c->responded && c->in_len >= sizeof(c->in)) {
        respond_error(c, 413);
    }
}

static void on_request_timeout(uv_timer_t *t)
{
    struct admin_conn *c = t->data;
    sc_debug("admin.timeout", "request not complete after the request timeout");
    if (c->in_len > 0 && !c->responded) {
        respond_error(c, 408);
        return;
    }
    conn_close(c);
}

static void on_reject_closed(uv_handle_t *h)
{
    free(h);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct sc_admin *a = server->data;
    // Out of fds, accept_pause stops libuv's accept loop from spinning the
    // main loop, and logs admin.accept_paused.
    if (sc_accept_pause_on_status(&a->accept_pause, status)) {
        return;
    }
    if (status < 0) {
        sc_warn("admin.accept_failed", "error=%s", uv_strerror(status));
        return;
    }
    int max = a->hooks.max_connections > 0 ? a->hooks.max_connections : DEFAULT_MAX_CONNECTIONS;
    if (a->num_conns >= 2 * max) {
        // Far over the limit: accept and drop, spending no buffer on it.
        uv_tcp_t *t = malloc(sizeof(*t));
        if (t == NULL) {
            return;
        }
        uv_tcp_init(a->loop, t);
        (void)uv_accept(server, (uv_stream_t *)t);
        uv_close((uv_handle_t *)t, on_reject_closed);
        return;
    }
    struct admin_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return;
    }
    c->admin = a;
    sc_admin_buf_init(&c->out);
    uv_tcp_init(a->loop, &c->tcp);
    uv_timer_init(a->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    c->next = a->conns;
    if (a->conns != NULL) {
        a->conns->prev = c;
    }
    a->conns = c;
    a->num_conns++;
    c->over_limit = a->num_conns > max;

    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    struct sockaddr_storage peer;
    int len = sizeof(peer);
    c->loopback = uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&peer, &len) == 0 &&
                  sc_addr_is_loopback((struct sockaddr *)&peer);
    uint64_t timeout =
        a->hooks.request_timeout_ms ? a->hooks.request_timeout_ms : DEFAULT_REQUEST_TIMEOUT_MS;
    uv_timer_start(&c->timer, on_request_timeout, timeout, 0);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        conn_close(c);
    }
}

// on_lag_tick measures how late the main loop runs a timer that should fire
// every LAG_INTERVAL_MS: a blocked main loop shows up as lag.
static void on_lag_tick(uv_timer_t *t)
{
    struct sc_admin *a = t->data;
    uint64_t now = uv_hrtime();
    uint64_t expected = a->lag_last_ns + (uint64_t)LAG_INTERVAL_MS * 1000000;
    a->main_lag_us = now > expected ? (now - expected) / 1000 : 0;
    a->lag_last_ns = now;
}

static void on_admin_handle_closed(uv_handle_t *h)
{
    struct sc_admin *a = h->data;
    a->open_handles--;
    maybe_free_admin(a);
}

static void on_listener_closed(struct sc_accept_pause *ap, void *arg)
{
    struct sc_admin *a = arg;
    a->open_handles--;
    maybe_free_admin(a);
}

int sc_admin_start(uv_loop_t *loop, const struct sockaddr *addr, const struct sc_admin_hooks *hooks,
                   struct sc_admin **out)
{
    struct sc_admin *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        return UV_ENOMEM;
    }
    a->loop = loop;
    a->hooks = *hooks;
    int rc = sc_accept_pause_init(&a->accept_pause, loop, &a->listener);
    if (rc != 0) {
        free(a);
        return rc;
    }
    a->listener.data = a;
    a->open_handles = 1;
    rc = uv_tcp_bind(&a->listener, addr, 0);
    if (rc == 0) {
        rc =
            sc_accept_pause_listen(&a->accept_pause, 128, on_connection, "admin", "listener=admin");
    }
    if (rc != 0) {
        // Close the listener, free in its callback (needs the loop to run:
        // the caller runs it anyway), and report the error now.
        a->stopping = true;
        sc_accept_pause_close(&a->accept_pause, on_listener_closed, a);
        return rc;
    }
    uv_timer_init(loop, &a->lag_timer);
    a->lag_timer.data = a;
    a->open_handles++;
    a->lag_last_ns = uv_hrtime();
    uv_timer_start(&a->lag_timer, on_lag_tick, LAG_INTERVAL_MS, LAG_INTERVAL_MS);
    uv_unref((uv_handle_t *)&a->lag_timer);
    *out = a;
    return 0;
}

int sc_admin_bound_port(const struct sc_admin *admin)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (admin == NULL || uv_tcp_getsockname(&admin->listener, (struct sockaddr *)&ss, &len) != 0) {
        return -1;
    }
    if (ss.ss_family == AF_INET) {
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    if (ss.ss_family == AF_INET6) {
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return -1;
}

void sc_admin_stop(struct sc_admin *admin, sc_admin_stop_cb cb, void *arg)
{
    if (admin == NULL || admin->stopping) {
        return;
    }
    admin->stopping = true;
    admin->stop_cb = cb;
    admin->stop_arg = arg;
    sc_accept_pause_close(&admin->accept_pause, on_listener_closed, admin);
    uv_close((uv_handle_t *)&admin->lag_timer, on_admin_handle_closed);
    for (struct admin_conn *c = admin->conns; c != NULL; c = c->next) {
        conn_close(c);
    }
}
