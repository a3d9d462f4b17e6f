// sc/stats.h — per-worker counters. Each worker thread owns one struct
// sc_worker_stats and is its only writer (SC_STAT_ADD, relaxed atomics on a
// cache line no other thread writes: no contention, no locks). The admin
// thread sums all workers on scrape with relaxed loads (SC_STAT_GET).
#ifndef SC_STATS_H
#define SC_STATS_H

#include <stdint.h>

enum sc_dir { SC_DIR_INBOUND = 0, SC_DIR_OUTBOUND, SC_DIR_MAX };
// How a proxied connection is carried between the sidecars: mutual TLS, or
// plain TCP (passthrough / PERMISSIVE plain clients).
enum sc_conn_mode { SC_MODE_MTLS = 0, SC_MODE_PLAIN, SC_MODE_MAX };

// Why a TLS handshake was refused. Every failed handshake maps to exactly one
// reason; the names (sc_tls_fail_name) are the metric label values and the
// "reason=" of the log line.
enum sc_tls_fail {
    SC_TLS_FAIL_NO_PEER_CERT = 0, // "no_peer_cert": the client sent no certificate
    SC_TLS_FAIL_UNKNOWN_CA,       // "unknown_ca": chain does not lead to the trust bundle
    SC_TLS_FAIL_EXPIRED,          // "expired"
    SC_TLS_FAIL_NOT_YET_VALID,    // "not_yet_valid"
    SC_TLS_FAIL_BAD_SVID,    // "bad_svid": not exactly one URI SAN, bad SPIFFE syntax, CA leaf,
                             // keyCertSign
    SC_TLS_FAIL_ID_MISMATCH, // "spiffe_id_mismatch": outbound, server ID != expected
    SC_TLS_FAIL_NOT_ALLOWED, // "not_allowed": inbound, client ID not in allow-list
    SC_TLS_FAIL_PROTOCOL_VERSION, // "protocol_version": e.g. a TLS 1.2 peer
    SC_TLS_FAIL_NOT_TLS,          // "not_tls": plain text where TLS was required
    SC_TLS_FAIL_TIMEOUT,          // "handshake_timeout"
    SC_TLS_FAIL_PEER_CLOSED,      // "peer_closed": EOF or reset mid-handshake
    SC_TLS_FAIL_PEER_ALERT,       // "peer_alert": the peer refused us (alert received)
    SC_TLS_FAIL_OTHER,            // "other"
    SC_TLS_FAIL_MAX
};

// sc_tls_fail_name returns the stable snake_case name of |r|.
const char *sc_tls_fail_name(enum sc_tls_fail r);

// Handshake duration histogram upper bounds, in seconds (le labels).
#define SC_HS_BUCKETS 12
extern const double sc_hs_bucket_bounds[SC_HS_BUCKETS]; // 0.0005 ... 5; +Inf implied

struct sc_worker_stats {
    uint64_t conn_opened[SC_DIR_MAX][SC_MODE_MAX];
    uint64_t conn_closed[SC_DIR_MAX][SC_MODE_MAX];
    uint64_t conn_failed[SC_DIR_MAX][SC_MODE_MAX]; // upstream connect/handshake failed
    uint64_t bytes_received[SC_DIR_MAX];           // from the downstream (accepted) side
    uint64_t bytes_sent[SC_DIR_MAX];               // to the downstream side
    uint64_t hs_failures[SC_DIR_MAX][SC_TLS_FAIL_MAX];
    uint64_t hs_bucket[SC_HS_BUCKETS + 1]; // non-cumulative; last = +Inf
    uint64_t hs_count;
    uint64_t hs_sum_us; // sum of durations, microseconds
    uint64_t authz_allow;
    uint64_t authz_deny;
    uint64_t refused_limit;                  // new work refused by a limit
    uint64_t accept_errors;                  // accept() failed (e.g. EMFILE)
    uint64_t mux_opened[SC_DIR_MAX];         // seam-mux sessions opened (handshake done)
    uint64_t mux_closed[SC_DIR_MAX];         // ... and closed again
    uint64_t mux_waits[SC_DIR_MAX];          // a stream stopped reading: session backed up
    uint64_t mux_window_grows[SC_DIR_MAX];   // a stream's receive window grew (mux.c)
    uint64_t mux_window_shrinks[SC_DIR_MAX]; // a WINDOW gave part of that growth back
    uint64_t mux_detours;                    // outbound: new streams kept off a session
                                             // carrying bulk (another one, or a new one)
    uint64_t loop_lag_us;                    // gauge: last measured loop lag
    uint64_t heartbeat_ns;                   // uv_hrtime() of the worker's last tick;
                                             // 0 while its loop is not running
} __attribute__((aligned(64)));

#define SC_STAT_ADD(field, n) __atomic_fetch_add(&(field), (n), __ATOMIC_RELAXED)
#define SC_STAT_SET(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)
#define SC_STAT_GET(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

// Active connections are derived on scrape: opened - closed (per dir/mode).

// sc_stats_observe_handshake records one successful handshake of |us| microseconds.
void sc_stats_observe_handshake(struct sc_worker_stats *st, uint64_t us);

#endif
