// worker.c — worker threads of the tunnel data path: one uv_loop and one
// SO_REUSEPORT listening socket each, TLS snapshots published from the main
// thread (uv_async + an atomic pointer), and the drain on SIGTERM.
#include "proxy/mux.h"
#include "proxy/proxy_int.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sc/log.h"
#include "sc/parse.h"
#include "sc/tcp_cc.h"

#define SC_TICK_MS 1000

// on_connection takes one pending connection. Out of fds (EMFILE/ENFILE,
// after libuv's own reserve-fd trick failed) or of kernel memory for the
// socket (ENOBUFS/ENOMEM), accept_pause closes the
// listening handle and reopens it on the same socket after a pause: without
// that, libuv would call accept() again at once for as long as connections
// are pending, and this worker's loop, with every connection on it, would
// stall. The pause is logged there (proxy.accept_paused, once per run of
// pauses); every failed accept is counted here.
static void on_connection(uv_stream_t *server, int status)
{
    struct sc_worker *w = server->data;
    bool paused = sc_accept_pause_on_status(&w->accept_pause, status);
    if (status < 0) {
        SC_STAT_ADD(w->stats.accept_errors, 1);
        if (!paused) {
            sc_warn("proxy.accept_failed", "worker=%d error=%s", w->id, uv_strerror(status));
        }
        return;
    }
    sc_conn__accept(w);
}

// make_listen_socket binds a non-blocking TCP socket with SO_REUSEPORT so
// every worker can own one on the same address; the kernel spreads
// connections over them. With |cc| (not NULL) the listener gets that
// congestion control, and with it every socket it accepts. Returns the fd or
// a negative UV_E* code.
static int make_listen_socket(const struct sockaddr *sa, const char *cc)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    int one = 1;
    socklen_t len = sc_addr_len(sa);
    // TCP_NODELAY on the listener is inherited by every accepted socket
    // (sc_stream_accept_inherited): one setsockopt per connection saved.
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
        bind(fd, sa, len) != 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    if (cc != NULL) {
        int r = sc_tcp_cc_set(fd, cc);
        if (r != 0) {
            // Checked at startup (sc_tcp_cc_probe): only the speed is lost.
            sc_warn("proxy.loopback_cc_failed", "cc=%s error=%s", cc, uv_strerror(r));
        }
    }
    return fd;
}

static void maybe_stop(struct sc_worker *w)
{
    if (!w->draining || w->stopping || atomic_load(&w->num_conns) > 0) {
        return;
    }
    w->stopping = true;
    uv_close((uv_handle_t *)&w->async, NULL);
    uv_close((uv_handle_t *)&w->tick, NULL);
    uv_close((uv_handle_t *)&w->poll_check, NULL);
    uv_close((uv_handle_t *)&w->poll_idle, NULL);
    sc_mux__worker_close(w);
}

void sc_worker__conn_gone(struct sc_worker *w)
{
    atomic_fetch_sub(&w->num_conns, 1);
    maybe_stop(w);
}

static void on_async(uv_async_t *a)
{
    struct sc_worker *w = a->data;
    SSL_CTX *ctx = atomic_exchange(&w->pending_ctx, NULL);
    if (ctx != NULL) {
        SSL_CTX_free(w->ctx);
        w->ctx = ctx;      // new connections use it; open ones keep theirs
        sc_mux__retire(w); // and new streams go on a session that uses it
    }
    void *snap = atomic_exchange(&w->pending_snap, NULL);
    if (snap != NULL) {
        const struct sc_proxy_router *rt = w->proxy->cfg.router;
        if (w->snap != NULL) {
            rt->snap_unref(w->snap);
        }
        w->snap = snap;
    }
    if (atomic_load(&w->drain_requested) && !w->draining) {
        w->draining = true;
        w->drain_deadline = uv_now(&w->loop) + atomic_load(&w->proxy->drain_timeout_ms);
        // Stop accepting: closes the listener whether it listens, is paused
        // or is closing for a pause, and the pause timer and spare fd.
        sc_accept_pause_close(&w->accept_pause, NULL, NULL);
        sc_mux__sweep(w, false); // GOAWAY, idle sessions closed
        maybe_stop(w);
    }
}

// on_tick runs every second: loop lag gauge, idle sweep, drain deadline.
static void on_tick(uv_timer_t *t)
{
    struct sc_worker *w = t->data;
    uint64_t now = uv_hrtime();
    if (w->last_tick != 0) {
        uint64_t elapsed_us = (now - w->last_tick) / 1000;
        uint64_t lag = elapsed_us > SC_TICK_MS * 1000 ? elapsed_us - SC_TICK_MS * 1000 : 0;
        SC_STAT_SET(w->stats.loop_lag_us, lag);
    }
    w->last_tick = now;
    SC_STAT_SET(w->stats.heartbeat_ns, now);
    bool force = w->draining && uv_now(&w->loop) >= w->drain_deadline;
    sc_conn__sweep(w, force);
    sc_mux__sweep(w, force);
}

// Busy poll. A request through the sidecar pair crosses cores several times,
// and each crossing wakes a sleeping CPU; in a VM an idle vCPU takes tens of
// microseconds to wake. With busy_poll_us set, a worker that forwarded a
// request (bytes downstream -> upstream) and waits for the answer keeps its
// loop polling with a zero timeout (an active idle handle) for up to that
// long, yielding the core between polls, so the answer finds it awake. It
// stops as soon as every answer arrived, so the price is CPU for the
// upstream's response time (bounded by busy_poll_us per request), not for
// the gaps between requests (HAProxy's busy-polling spins all the time).
//
// It also learns whether polling pays: every answer is scored as in the
// window or late (measured whether the worker polled or slept), and a worker
// whose recent answers were mostly late (a slow upstream: polling would only
// burn the window) sleeps until quick answers bring the score back.
enum {
    SC_POLL_ONE = 1024, // poll_score of "every answer in the window"
    SC_POLL_GAIN = 8,   // each answer moves the score 1/8 of the way
};

static void on_poll_idle(uv_idle_t *h)
{
    (void)h;       // its job is to make uv_run poll with timeout 0
    sched_yield(); // the other proxy of a pair may share this core
}

void sc_worker__awaiting(struct sc_worker *w, uint64_t *since, bool awaiting)
{
    uint64_t window = w->proxy->cfg.busy_poll_us * 1000;
    if (window == 0) {
        return; // off: no clock read, no count
    }
    uint64_t now = uv_hrtime();
    if (awaiting) {
        w->poll_until = now + window;
        if (*since == 0) {
            *since = now;
            w->awaiting++;
        }
    } else if (*since != 0) {
        int target = now - *since <= window ? SC_POLL_ONE : 0;
        w->poll_score += (target - w->poll_score) / SC_POLL_GAIN;
        *since = 0;
        w->awaiting--;
    }
}

void sc_worker__await_end(struct sc_worker *w, uint64_t *since)
{
    if (*since != 0) {
        *since = 0;
        w->awaiting--;
    }
}

// on_poll_check runs after every poll: it keeps the loop polling while an
// answer is due and the window is open, and lets it sleep otherwise.
static void on_poll_check(uv_check_t *c)
{
    struct sc_worker *w = c->data;
    bool spin = w->awaiting > 0 && w->poll_score >= SC_POLL_ONE / 2 && uv_hrtime() < w->poll_until;
    if (spin != (bool)uv_is_active((uv_handle_t *)&w->poll_idle)) {
        if (spin) {
            uv_idle_start(&w->poll_idle, on_poll_idle);
        } else {
            uv_idle_stop(&w->poll_idle);
        }
    }
}

static void worker_main(void *arg)
{
    struct sc_worker *w = arg;
    // The heartbeat tells liveness this loop turns; a worker stuck in a
    // blocking call stops refreshing it (its lag gauge would just freeze).
    SC_STAT_SET(w->stats.heartbeat_ns, uv_hrtime());
    uv_run(&w->loop, UV_RUN_DEFAULT);
    SC_STAT_SET(w->stats.heartbeat_ns, 0); // finished (drained): nothing to watch
    SSL_CTX_free(w->ctx);
    w->ctx = NULL;
    SSL_CTX_free(atomic_exchange(&w->pending_ctx, NULL));
    const struct sc_proxy_router *rt = w->proxy->cfg.router;
    void *pending = atomic_exchange(&w->pending_snap, NULL);
    if (rt != NULL && pending != NULL) {
        rt->snap_unref(pending);
    }
    if (rt != NULL && w->snap != NULL) {
        rt->snap_unref(w->snap);
        w->snap = NULL;
    }
    if (uv_loop_close(&w->loop) != 0) {
        sc_warn("proxy.worker_leak", "worker=%d loop closed with open handles", w->id);
    }
    sc_bufpool_cleanup(&w->pool);
    atomic_fetch_add(&w->proxy->workers_done, 1);
    uv_async_send(&w->proxy->done_async);
}

static void on_done_closed(uv_handle_t *h)
{
    struct sc_proxy *p = h->data;
    if (p->done_cb != NULL) {
        p->done_cb(p, p->done_arg);
    }
}

static void on_done_async(uv_async_t *a)
{
    struct sc_proxy *p = a->data;
    if (!p->done_reported && atomic_load(&p->workers_done) == p->num_workers) {
        p->done_reported = true;
        uv_close((uv_handle_t *)&p->done_async, on_done_closed);
    }
}

// free_worker releases a worker whose loop never ran (start failed).
static void free_unstarted_worker(struct sc_worker *w)
{
    sc_accept_pause_close(&w->accept_pause, NULL, NULL);
    uv_close((uv_handle_t *)&w->async, NULL);
    uv_close((uv_handle_t *)&w->tick, NULL);
    uv_close((uv_handle_t *)&w->poll_check, NULL);
    uv_close((uv_handle_t *)&w->poll_idle, NULL);
    sc_mux__worker_close(w);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    uv_loop_close(&w->loop);
    SSL_CTX_free(w->ctx);
    if (w->snap != NULL) {
        w->proxy->cfg.router->snap_unref(w->snap);
    }
    sc_bufpool_cleanup(&w->pool);
    free(w);
}

static void free_proxy(struct sc_proxy *p)
{
    free(p->workers);
    free(p->stats);
    free(p->sni);
    free(p);
}

int sc_proxy_start(const struct sc_proxy_config *cfg, SSL_CTX *ctx, uv_loop_t *main_loop,
                   sc_proxy_done_cb done_cb, void *arg, struct sc_proxy **out)
{
    int r = 0;
    struct sc_proxy *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return UV_ENOMEM;
    }
    p->cfg = *cfg;
    p->sni = cfg->sni ? strdup(cfg->sni) : NULL;
    p->cfg.sni = p->sni;
    p->main_loop = main_loop;
    p->done_cb = done_cb;
    p->done_arg = arg;
    p->num_workers = cfg->num_workers > 0 ? cfg->num_workers : 1;
    p->workers = calloc((size_t)p->num_workers, sizeof(*p->workers));
    p->stats = calloc((size_t)p->num_workers, sizeof(*p->stats));
    if (p->workers == NULL || p->stats == NULL) {
        free_proxy(p);
        return UV_ENOMEM;
    }
    struct sockaddr_storage la = cfg->listen;
    int started = 0;
    for (int i = 0; i < p->num_workers; i++) {
        struct sc_worker *w = aligned_alloc(64, (sizeof(*w) + 63) & ~(size_t)63);
        if (w == NULL) {
            r = UV_ENOMEM;
            goto out_fail;
        }
        memset(w, 0, sizeof(*w));
        w->proxy = p;
        w->id = i;
        uv_loop_init(&w->loop);
        sc_bufpool_init(&w->pool, 256);
        sc_accept_pause_init(&w->accept_pause, &w->loop, &w->listener);
        uv_async_init(&w->loop, &w->async, on_async);
        uv_timer_init(&w->loop, &w->tick);
        uv_check_init(&w->loop, &w->poll_check);
        uv_idle_init(&w->loop, &w->poll_idle);
        sc_mux__worker_init(w);
        w->poll_check.data = w;
        w->poll_score = SC_POLL_ONE; // until answers say otherwise, polling pays
        w->listener.data = w;
        w->async.data = w;
        w->tick.data = w;
        SSL_CTX_up_ref(ctx);
        w->ctx = ctx;
        atomic_init(&w->pending_ctx, NULL);
        atomic_init(&w->pending_snap, NULL);
        if (cfg->router != NULL && cfg->route_snap != NULL) {
            cfg->router->snap_ref(cfg->route_snap);
            w->snap = cfg->route_snap;
        }
        atomic_init(&w->drain_requested, false);
        atomic_init(&w->num_conns, 0);
        p->workers[i] = w;
        p->stats[i] = &w->stats;
        started = i + 1;

        // The loopback congestion control goes on a listener whose clients
        // are all on this host; a wildcard one also takes other hosts'.
        bool on_host = cfg->clients_on_host || sc_addr_is_loopback((struct sockaddr *)&la);
        int fd =
            make_listen_socket((struct sockaddr *)&la,
                               cfg->loopback_cc[0] != '\0' && on_host ? cfg->loopback_cc : NULL);
        if (fd < 0) {
            r = fd;
            goto out_fail;
        }
        if ((r = uv_tcp_open(&w->listener, fd)) != 0) {
            close(fd);
            goto out_fail;
        }
        char label[24];
        snprintf(label, sizeof(label), "worker=%d", i);
        r = sc_accept_pause_listen(&w->accept_pause, 1024, on_connection, "proxy", label);
        if (r != 0) {
            goto out_fail;
        }
        if (i == 0) {
            // With port 0 the first bind picks the port; the others share it.
            int len = sizeof(la);
            uv_tcp_getsockname(&w->listener, (struct sockaddr *)&la, &len);
            p->port = ntohs(la.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&la)->sin6_port
                                                     : ((struct sockaddr_in *)&la)->sin_port);
        }
        uv_timer_start(&w->tick, on_tick, SC_TICK_MS, SC_TICK_MS);
        if (cfg->busy_poll_us > 0) {
            uv_check_start(&w->poll_check, on_poll_check);
            uv_unref((uv_handle_t *)&w->poll_check);
            uv_unref((uv_handle_t *)&w->poll_idle);
        }
    }
    uv_async_init(main_loop, &p->done_async, on_done_async);
    p->done_async.data = p;
    atomic_init(&p->workers_done, 0);
    for (int i = 0; i < p->num_workers; i++) {
        if (uv_thread_create(&p->workers[i]->thread, worker_main, p->workers[i]) != 0) {
            // Threads already running cannot be unwound cheaply: give up.
            fprintf(stderr, "seam: cannot start worker thread\n");
            abort();
        }
    }
    *out = p;
    return 0;

out_fail:
    for (int i = 0; i < started; i++) {
        free_unstarted_worker(p->workers[i]);
    }
    free_proxy(p);
    return r;
}

int sc_proxy_listen_port(const struct sc_proxy *p)
{
    return p->port;
}

void sc_proxy_publish_tls(struct sc_proxy *p, SSL_CTX *ctx)
{
    for (int i = 0; i < p->num_workers; i++) {
        struct sc_worker *w = p->workers[i];
        SSL_CTX_up_ref(ctx);
        SSL_CTX *old = atomic_exchange(&w->pending_ctx, ctx);
        SSL_CTX_free(old); // never picked up: superseded
        uv_async_send(&w->async);
    }
}

void sc_proxy_publish_route(struct sc_proxy *p, void *snap)
{
    const struct sc_proxy_router *rt = p->cfg.router;
    if (rt == NULL || snap == NULL) {
        return;
    }
    for (int i = 0; i < p->num_workers; i++) {
        struct sc_worker *w = p->workers[i];
        rt->snap_ref(snap);
        void *old = atomic_exchange(&w->pending_snap, snap);
        if (old != NULL) {
            rt->snap_unref(old); // never picked up: superseded
        }
        uv_async_send(&w->async);
    }
}

void sc_proxy_drain(struct sc_proxy *p, uint64_t timeout_ms)
{
    if (p->drain_started) {
        return;
    }
    p->drain_started = true;
    atomic_store(&p->drain_timeout_ms, timeout_ms);
    for (int i = 0; i < p->num_workers; i++) {
        atomic_store(&p->workers[i]->drain_requested, true);
        uv_async_send(&p->workers[i]->async);
    }
}

int sc_proxy_num_workers(const struct sc_proxy *p)
{
    return p->num_workers;
}

struct sc_worker_stats **sc_proxy_worker_stats(struct sc_proxy *p)
{
    return p->stats;
}

uint64_t sc_proxy_active_connections(const struct sc_proxy *p)
{
    uint64_t n = 0;
    for (int i = 0; i < p->num_workers; i++) {
        n += atomic_load_explicit(&p->workers[i]->num_conns, memory_order_relaxed);
    }
    return n;
}

void sc_proxy_free(struct sc_proxy *p)
{
    if (p == NULL) {
        return;
    }
    for (int i = 0; i < p->num_workers; i++) {
        uv_thread_join(&p->workers[i]->thread);
        free(p->workers[i]);
    }
    free_proxy(p);
}
