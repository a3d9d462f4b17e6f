// sc/proxy.h — the tunnel data path: N worker threads, each with its own
// uv_loop and its own SO_REUSEPORT listening socket, pumping bytes between an
// accepted connection and an upstream one, with mTLS on one side.
//
//   inbound:  peer --mTLS--> [listen] seam [connect] --plain--> app (target)
//   outbound: app --plain--> [listen] seam [connect] --mTLS--> peer (target)
//
// A connection lives on one worker for its whole life; no locks on the data
// path. The main thread owns the struct sc_proxy and talks to workers only
// through sc_proxy_publish_tls and sc_proxy_drain (uv_async + atomics).
#ifndef SC_PROXY_H
#define SC_PROXY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "sc/stats.h"
#include "sc/tcp_cc.h"

// ---- routing (mesh mode) ---------------------------------------------------
//
// Without a router (tunnel mode) every connection goes to cfg.target, with
// mTLS on the peer side. With a router, each accepted connection is routed
// on its worker thread against the router's current snapshot (an opaque,
// ref-counted object such as a mesh config).

enum sc_route_kind {
    SC_ROUTE_REFUSE = 0, // close the connection at once (|reason| is logged)
    SC_ROUTE_PLAIN,      // plain TCP on both sides (passthrough)
    SC_ROUTE_MTLS,       // the peer side is mTLS: outbound connects with TLS and
                         // checks |peer_id|; inbound requires a client certificate
    SC_ROUTE_DETECT,     // inbound only: mTLS if the client's first byte starts a TLS
                         // record, plain passthrough otherwise (or if it sends nothing
                         // within detect_timeout_ms: server-first protocols)
};

struct sc_route {
    enum sc_route_kind kind;
    struct sockaddr_storage target; // where to connect
    const char *peer_id;            // outbound MTLS: the ID the server must present;
                                    // must stay valid while the snapshot is referenced
    uint16_t port;                  // inbound: the original destination port (authorize)
    const char *reason;             // SC_ROUTE_REFUSE: a static snake_case reason
    char orig[64];                  // the original destination, for logs ("-" if unknown)
};

// struct sc_proxy_router is the routing policy. Callbacks run on worker
// threads, concurrently: they must only read the snapshot.
struct sc_proxy_router {
    // route fills |out| (zeroed, orig "-") for the connection accepted on
    // socket |fd| in direction |dir|. |snap| may be NULL (no snapshot yet).
    void (*route)(void *snap, enum sc_dir dir, int fd, struct sc_route *out);
    // authorize decides whether the verified client |peer_id| may use the
    // inbound route |r|. NULL: the SSL_CTX's allow-list alone decides.
    bool (*authorize)(void *snap, const struct sc_route *r, const char *peer_id);
    // snap_ref / snap_unref keep a snapshot alive; thread-safe (atomic).
    void (*snap_ref)(void *snap);
    void (*snap_unref)(void *snap);
};

struct sc_proxy_config {
    enum sc_dir dir;                      // SC_DIR_INBOUND or SC_DIR_OUTBOUND
    struct sockaddr_storage listen;       // where to accept (port 0: pick one)
    struct sockaddr_storage target;       // where to connect
    int num_workers;                      // >= 1
    uint64_t connect_timeout_ms;          // 0: none
    uint64_t handshake_timeout_ms;        // 0: none
    uint64_t idle_timeout_ms;             // 0: none; no byte either way for this long closes
    const char *sni;                      // outbound: server name to send (NULL: none); copied
    uint64_t max_connection_age_ms;       // 0: none. An older connection ends gracefully: no more
                                          // bytes from the downstream, FIN to the upstream, closed
                                          // once the upstream finished (at most
                                          // SC_MAX_AGE_GRACE_MS later), so none outlives a
                                          // retired certificate for long.
    const struct sc_proxy_router *router; // NULL: tunnel mode (everything to |target|)
    void *route_snap;                     // the router's first snapshot (may be NULL); referenced
    uint64_t detect_timeout_ms;      // SC_ROUTE_DETECT: wait this long for a first byte (0: 500)
    uint64_t busy_poll_us;           // 0: off. A worker that forwarded a request polls instead
                                     // of sleeping for up to this long while the answer is
                                     // due (worker.c: lower latency for CPU)
    char loopback_cc[SC_TCP_CC_MAX]; // "": system default. Else the TCP congestion control of
                                     // the sockets whose other end is on this host: a loopback
                                     // listener's (and every accepted one), one to a loopback
                                     // target (sc/tcp_cc.h, --loopback-cc)
    bool mux;                        // outbound: carry the (mesh: mTLS-routed) connections as
                                     // streams of long-lived seam-mux sessions, one per
                                     // destination and identity (proxy/mux.c, docs/MUX.md).
                                     // Inbound accepts them when its context offers the ALPN.
    uint32_t mux_sessions;           // outbound, mux: sessions per destination at most while
                                     // the ones open carry bulk streams (a new stream avoids
                                     // those); 0: SC_MUX_SESSIONS_DEFAULT (2)
    bool clients_on_host;            // every client of the listener is on this host (mesh
                                     // outbound: the pod's own redirected connections), so
                                     // loopback_cc applies to it whatever its address
};

#define SC_MAX_AGE_GRACE_MS 10000

// SC_MUX_SESSIONS_DEFAULT: seam-mux sessions the outbound opens at most to
// one destination while the ones it has carry bulk streams (mux_sessions 0;
// proxy/mux.c out_session, docs/MUX.md "Bulk streams"); the flag's bound.
#define SC_MUX_SESSIONS_DEFAULT 2
#define SC_MUX_SESSIONS_MAX 16

struct sc_proxy;

// sc_proxy_done_cb runs on the main loop once every worker has stopped after
// sc_proxy_drain.
typedef void (*sc_proxy_done_cb)(struct sc_proxy *p, void *arg);

// sc_proxy_start binds one listening socket per worker (SO_REUSEPORT) and
// starts the workers. |ctx| is the initial TLS snapshot (a server context for
// inbound, a client context for outbound); each worker takes its own
// reference. |main_loop| is where |done_cb| will run. Returns 0 and the
// proxy in |*out|, or a UV_E* code (e.g. UV_EADDRINUSE) with nothing started.
int sc_proxy_start(const struct sc_proxy_config *cfg, SSL_CTX *ctx, uv_loop_t *main_loop,
                   sc_proxy_done_cb done_cb, void *arg, struct sc_proxy **out);

// sc_proxy_listen_port returns the bound listening port.
int sc_proxy_listen_port(const struct sc_proxy *p);

// sc_proxy_publish_tls makes |ctx| the snapshot for new connections on every
// worker (each takes a reference; the caller keeps its own). Open
// connections keep the SSL_CTX they started with. Main thread only.
void sc_proxy_publish_tls(struct sc_proxy *p, SSL_CTX *ctx);

// sc_proxy_publish_route makes |snap| (not NULL) the router's snapshot for
// new connections on every worker (each takes a reference with snap_ref; the
// caller keeps its own). Open connections keep the one they were routed
// with. Main thread only.
void sc_proxy_publish_route(struct sc_proxy *p, void *snap);

// sc_proxy_drain stops accepting on every worker, lets open connections
// finish for up to |timeout_ms|, then closes the rest; when all workers are
// done |done_cb| runs on the main loop. Idempotent. Main thread only.
void sc_proxy_drain(struct sc_proxy *p, uint64_t timeout_ms);

// sc_proxy_num_workers / sc_proxy_worker_stats give the per-worker counters
// (valid until sc_proxy_free) for the admin server.
int sc_proxy_num_workers(const struct sc_proxy *p);
struct sc_worker_stats **sc_proxy_worker_stats(struct sc_proxy *p);

// sc_proxy_active_connections returns the number of open connections (sum
// over workers, relaxed).
uint64_t sc_proxy_active_connections(const struct sc_proxy *p);

// sc_proxy_free joins the worker threads (after |done_cb|) and frees |p|.
// NULL is ignored.
void sc_proxy_free(struct sc_proxy *p);

#endif
