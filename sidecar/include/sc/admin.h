// sc/admin.h — the admin HTTP/1.1 server: metrics, health, debug endpoints and
// lifecycle (drain, quit). It runs on the MAIN thread's libuv loop and never
// touches a worker loop: it only reads the per-worker counters (sc/stats.h)
// with relaxed loads on scrape, and calls back into the sidecar through
// |struct sc_admin_hooks|.
//
// Endpoints:
//   GET  /metrics             Prometheus text format 0.0.4 (see metrics.c for the families)
//   GET  /healthz/ready       200 "ready" / 503 "not ready"      (hooks->ready)
//   GET  /healthz/live        200 "live" / 503 (a worker's loop lag is above the bound)
//   GET  /certs               JSON (hooks->certs_json, or the cert/trust files)
//   GET  /config              JSON (hooks->config_json)
//   GET  /debug/tls-failures  JSON: the last SC_FAILURES_MAX refused handshakes (sc/failures.h)
//   POST /drain               loopback clients only (403 otherwise); calls hooks->drain
//   POST /quitquitquit        loopback clients only (403 otherwise); calls hooks->quit
// HEAD is accepted wherever GET is. Errors: 400 malformed, 404 unknown path,
// 405 wrong method, 413 body too large, 431 header section too large, 505
// version, 503 too many admin connections. Every response carries
// "Connection: close" and the connection is closed after it is written. A
// client that does not finish its request within the request timeout is
// answered 408 (or just closed if it sent nothing); a client that does not
// read its response within the same timeout is disconnected (slowloris).
#ifndef SC_ADMIN_H
#define SC_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "sc/stats.h"

// struct sc_admin_buf is a growable byte buffer the hooks append to. Appends
// never fail: on allocation failure the process aborts (like sc_xmalloc).
struct sc_admin_buf {
    char *data; // NUL-terminated when len > 0; owned by the buffer
    size_t len;
    size_t cap;
};

// sc_admin_buf_init sets |b| to an empty buffer.
void sc_admin_buf_init(struct sc_admin_buf *b);
// sc_admin_buf_cleanup frees the storage of |b| and empties it.
void sc_admin_buf_cleanup(struct sc_admin_buf *b);
// sc_admin_buf_append appends |len| bytes from |s|.
void sc_admin_buf_append(struct sc_admin_buf *b, const void *s, size_t len);
// sc_admin_buf_printf appends printf-style formatted text.
void sc_admin_buf_printf(struct sc_admin_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
// sc_admin_buf_json_string appends |s| as a quoted, escaped JSON string, or
// `null` if |s| is NULL. Bytes >= 0x80 that are not valid UTF-8 are escaped as
// \u00XX so the output is always valid JSON.
void sc_admin_buf_json_string(struct sc_admin_buf *b, const char *s);
// sc_admin_buf_label_value appends |s| escaped for a Prometheus label value
// (backslash, double quote and newline), without the surrounding quotes.
void sc_admin_buf_label_value(struct sc_admin_buf *b, const char *s);

// Helpers for hooks that render certificates (identity manager, mesh mode).
struct x509_st; // BoringSSL's X509

// sc_admin_buf_cert_json appends one JSON object describing |cert|:
// {"spiffe_id":…|null,"serial":"HEX","subject":…,"issuer":…,"not_before":"…Z",
//  "not_before_unix":N,"not_after":"…Z","not_after_unix":N} — the shape /certs
// uses for "leaf", "chain" and "roots" entries. Never key material.
void sc_admin_buf_cert_json(struct sc_admin_buf *out, struct x509_st *cert);

// struct sc_admin_cert_expiry is one sample of seam_cert_expiry_timestamp_seconds.
struct sc_admin_cert_expiry {
    const char *role;      // bounded set: "leaf", "intermediate", "root"
    const char *spiffe_id; // SPIFFE ID of the cert ("" for roots without one)
    int64_t not_after;     // Unix seconds
};

// sc_admin_buf_cert_expiry_family appends the whole family
// seam_cert_expiry_timestamp_seconds (HELP, TYPE, |num| samples, label values
// escaped). Samples must have distinct (role, spiffe_id) pairs. For use from
// hooks->extra_metrics.
void sc_admin_buf_cert_expiry_family(struct sc_admin_buf *out,
                                     const struct sc_admin_cert_expiry *items, size_t num);

// struct sc_admin_hooks is filled in by the sidecar (main.c) and copied by
// sc_admin_start. Every callback is optional (NULL) and is called on the main
// thread with |ctx|. Pointers it holds (worker_stats, cert_path, trust_path)
// must stay valid until the admin server is stopped.
struct sc_admin_hooks {
    void *ctx;

    // Per-worker counters, summed on every scrape. worker_stats[i] for
    // 0 <= i < num_workers; entries may be NULL (worker not started yet).
    int num_workers;
    struct sc_worker_stats **worker_stats;

    // ready returns whether the sidecar is ready to serve (a valid
    // certificate, and in mesh mode a config snapshot; false while draining).
    // NULL counts as true. In addition, when certs_json is NULL and cert_path
    // is set (file certificates), the leaf in cert_path must be valid now for
    // /healthz/ready to answer 200.
    bool (*ready)(void *ctx);

    // live returns false when the sidecar is wedged. NULL: always live. In any
    // case /healthz/live answers 503 when a worker's loop_lag_us exceeds
    // max_worker_lag_us (the main loop is alive if it answers at all).
    bool (*live)(void *ctx);

    // certs_json appends ONE JSON value (an object) describing the
    // certificates in force: SPIFFE ID, serial, not-before, not-after of the
    // leaf, chain and roots. Never key material. NULL: rendered from
    // cert_path/trust_path when set, `{}` otherwise.
    void (*certs_json)(void *ctx, struct sc_admin_buf *out);

    // config_json appends ONE JSON value: the snapshot in force and its
    // version. NULL: `{}`.
    void (*config_json)(void *ctx, struct sc_admin_buf *out);

    // extra_metrics appends complete Prometheus metric families (each with
    // its own "# HELP" and "# TYPE" lines, names prefixed seam_, base units):
    // identity and control-plane metrics (seam_cert_expiry_timestamp_seconds
    // {role,spiffe_id}, renewals by result, last renewal time, trust bundle
    // roots, control-plane state, config version, ACK/NACK counts). Must not
    // repeat a family the admin server renders itself (see metrics.c); when
    // certs_json is NULL and cert_path is set the admin server renders
    // seam_cert_expiry_timestamp_seconds and seam_trust_bundle_roots itself.
    void (*extra_metrics)(void *ctx, struct sc_admin_buf *out);

    // drain starts a graceful drain (as SIGTERM does): stop accepting, let
    // open connections finish up to --drain-timeout, exit 0. Called after the
    // 200 response has been queued. NULL: POST /drain answers 501.
    void (*drain)(void *ctx);

    // quit makes the process exit promptly. Called after the 200 response
    // has been written (or failed). NULL: POST /quitquitquit answers 501.
    void (*quit)(void *ctx);

    // Tunnel mode with file certificates: PEM paths of the leaf (+ chain) and
    // of the trust bundle. Used only when certs_json is NULL. Read
    // on each request, so a SIGHUP reload shows up. May be NULL.
    const char *cert_path;
    const char *trust_path;

    // Limits; 0 selects the default shown.
    uint64_t request_timeout_ms; // 10000: for the whole request, then again for the response
    uint64_t max_worker_lag_us;  // 10000000: /healthz/live bound on worker loop lag
    int max_connections;         // 64 concurrent admin connections
};

struct sc_admin;

// sc_admin_start binds |addr| (IPv4 or IPv6, port 0 allowed), starts
// listening on |loop| (the main thread's loop) and returns the server in
// |*out|. |hooks| is copied. Returns 0 or a negative UV_E* code (e.g.
// UV_EADDRINUSE), in which case nothing is left allocated.
int sc_admin_start(uv_loop_t *loop, const struct sockaddr *addr, const struct sc_admin_hooks *hooks,
                   struct sc_admin **out);

// sc_admin_bound_port returns the local port the server listens on (useful
// with port 0), or -1.
int sc_admin_bound_port(const struct sc_admin *admin);

// sc_admin_stop_cb is called once all of the admin server's handles are
// closed and its memory freed.
typedef void (*sc_admin_stop_cb)(void *arg);

// sc_admin_stop closes the listener and every admin connection. The server is
// freed in the last close callback, after which |cb| (may be NULL) runs with
// |arg|; the loop must keep running until then. sc_admin_stop(NULL, ...) does
// nothing (and does not call |cb|). Call it at most once.
void sc_admin_stop(struct sc_admin *admin, sc_admin_stop_cb cb, void *arg);

// sc_metrics_render appends the admin server's own metric families (see
// metrics.c) for |hooks|' workers to |out|, then hooks->extra_metrics.
// |main_lag_us| is the main loop's last measured lag. Pure apart from reading
// /proc/self; exposed for tests.
void sc_metrics_render(struct sc_admin_buf *out, const struct sc_admin_hooks *hooks,
                       uint64_t main_lag_us);

#endif
