// proxy_int.h — the worker and connection layouts shared by worker.c
// (threads, listeners, snapshots, drain) and forward.c (one proxied
// connection: accept -> connect/handshake -> pump -> finalize).
#ifndef SC_PROXY_INT_H
#define SC_PROXY_INT_H

#include <stdatomic.h>

#include "sc/accept_pause.h"
#include "sc/buf.h"
#include "sc/proxy.h"
#include "sc/stream.h"

struct sc_conn;
struct sc_mux_sess;

// SC_MUX_OFF_SLOTS: mesh destinations per worker remembered as not speaking
// seam-mux (beyond it the oldest is forgotten: one more failed offer).
#define SC_MUX_OFF_SLOTS 16

struct sc_worker {
    struct sc_worker_stats stats; // first: cache-line aligned, only this thread writes
    struct sc_proxy *proxy;
    int id;
    uv_loop_t loop;
    uv_tcp_t listener;
    struct sc_accept_pause accept_pause; // closes and reopens listener on fd/memory shortage
    uv_async_t async;                    // main -> worker: new snapshot, drain
    uv_timer_t tick;                     // 1 s: idle sweep, loop lag, drain deadline
    uv_check_t poll_check;               // busy poll: after each poll, go on polling or sleep?
    uv_idle_t poll_idle;                 // busy poll: active = the loop polls with timeout 0
    uint64_t awaiting;                   // connections waiting for an answer
    uint64_t poll_until;                 // uv_hrtime: keep polling until then
    int poll_score;                      // 0..SC_POLL_ONE: how often answers came in the window
    uv_thread_t thread;
    struct sc_bufpool pool;
    SSL_CTX *ctx;                   // current snapshot (worker's reference)
    _Atomic(SSL_CTX *) pending_ctx; // published by main, picked up in on_async
    void *snap;                     // router snapshot (worker's reference), may be NULL
    _Atomic(void *) pending_snap;   // published by main, picked up in on_async
    atomic_bool drain_requested;
    bool draining;
    bool stopping;
    bool loopback_cc_warned;          // a loopback_cc failure was logged (once per worker)
    uv_check_t mux_check;             // seam-mux: writes sessions' frames once per loop turn,
    uv_prepare_t mux_prepare;         // after the I/O callbacks and before polling
    struct sc_mux_sess *mux_sessions; // open seam-mux sessions (mux.c)
    struct sc_mux_sess *mux_flush;    // sessions with frames to write this turn
    struct sc_mux_off {               // mesh: destinations that refused seam-mux (mux.c)
        struct sockaddr_storage addr;
        uint64_t until_ms; // uv_now: carried 1:1 until then
    } mux_off[SC_MUX_OFF_SLOTS];
    unsigned mux_off_next;      // the slot the next refusal overwrites (oldest first)
    uint64_t mux_spread_off_ms; // uv_now: no session opened beside busy ones until then (mux.c)
    size_t mux_window_extra;    // sum over streams of their window beyond 256 KiB (mux.c)
    uint64_t drain_deadline;    // uv_now ms
    uint64_t last_tick;         // uv_hrtime of the last tick (loop lag)
    struct sc_conn *conns;      // doubly linked list of open connections
    atomic_uint_fast64_t num_conns;
};

struct sc_proxy {
    struct sc_proxy_config cfg;
    char *sni;
    int port;
    uv_loop_t *main_loop;
    uv_async_t done_async; // worker -> main: a worker finished
    atomic_int workers_done;
    bool done_reported;
    bool drain_started;
    atomic_uint_fast64_t drain_timeout_ms;
    atomic_uint_fast64_t mux_off_until_ms; // the peer refused seam-mux: 1:1 until (uv_now ms)
    sc_proxy_done_cb done_cb;
    void *done_arg;
    int num_workers;
    struct sc_worker **workers;
    struct sc_worker_stats **stats; // &workers[i]->stats
};

// sc_conn__accept takes one pending connection from the worker's listener.
void sc_conn__accept(struct sc_worker *w);

// sc_conn__adopt_outbound carries |down|, a tunnel outbound client
// connection mux.c accepted, admitted and counted, as a 1:1 mTLS connection
// (the peer does not speak seam-mux), accepted at |start_ms| (uv_now). 0,
// or SC_ENOMEM: |down| is still the caller's.
int sc_conn__adopt_outbound(struct sc_worker *w, struct sc_stream *down, uint64_t start_ms);
// (Mesh mode: |down| is routed again by its original destination, which
// mux.c has marked 1:1 meanwhile.)

// sc_conn__sweep closes connections idle longer than the idle timeout, and
// all of them if |force| (drain deadline).
void sc_conn__sweep(struct sc_worker *w, bool force);

// sc_worker__awaiting records that a connection of |w| forwarded request
// bytes (downstream -> upstream) and waits for the answer (|awaiting|), or
// that its answer arrived (!|awaiting|). |*since|, the connection's own, is 0
// or the uv_hrtime when it began to wait; the worker counts the waiting ones.
// With busy polling on, a worker that has such connections polls instead of
// sleeping for up to busy_poll_us after the last request bytes, as long as
// most answers came within that window; with it off this does nothing.
void sc_worker__awaiting(struct sc_worker *w, uint64_t *since, bool awaiting);

// sc_worker__await_end: the connection ends; if it waited, it no longer does
// (no answer to learn from).
void sc_worker__await_end(struct sc_worker *w, uint64_t *since);

// sc_proxy__handshake_failed counts and logs the failed TLS handshake of
// |tls| (peer address |peer|) like every failed handshake of the data path;
// with |count_conn| also as a failed connection.
void sc_proxy__handshake_failed(struct sc_worker *w, struct sc_stream *tls, const char *peer,
                                enum sc_conn_mode mode, bool count_conn);

// sc_proxy__set_loopback_cc gives |s|, connected to |target|, the loopback
// congestion control when |target| is on this host (sc/tcp_cc.h); a failure
// is logged once per worker.
void sc_proxy__set_loopback_cc(struct sc_worker *w, const struct sockaddr *target,
                               struct sc_stream *s);

// sc_worker__conn_gone is called by forward.c when a connection is freed.
void sc_worker__conn_gone(struct sc_worker *w);

#endif
