// sc/failures.h — the last refused TLS handshakes, for GET /debug/tls-failures.
//
// A small mutex-protected ring of the last SC_FAILURES_MAX failures with their
// wall-clock time. Failures are rare, so a mutex is fine; any thread may record.
//
// Division of work on a refused handshake (data path):
//   1. SC_STAT_ADD(stats->hs_failures[dir][reason], 1)            (the metric)
//   2. sc_warn("tls.handshake_failed", "dir=%s reason=%s peer=%s peer_id=%s detail=%s", ...)
//                                                                 (the log line, once)
//   3. sc_failures_record(dir, reason, peer, peer_id, detail)     (this ring)
// sc_failures_record does NOT log and does NOT touch the counters.
#ifndef SC_FAILURES_H
#define SC_FAILURES_H

#include <stddef.h>
#include <stdint.h>

#include "sc/stats.h"

#define SC_FAILURES_MAX 64

struct sc_admin_buf;

// sc_failures_record stores one refused handshake with the current wall-clock
// time, evicting the oldest entry once SC_FAILURES_MAX are held. |peer_addr|
// is "127.0.0.1:5555" / "[::1]:5555"; |peer_id| is the peer's SPIFFE ID or
// NULL (or "-") when unknown; |detail| is a short free-form reason (may be
// NULL). Strings are copied (truncated: peer 63, peer_id 511, detail 255
// bytes). Never pass key material. Thread-safe.
void sc_failures_record(enum sc_dir dir, enum sc_tls_fail reason, const char *peer_addr,
                        const char *peer_id, const char *detail);

// sc_failures_total returns how many failures were recorded since start
// (including evicted ones). Thread-safe.
uint64_t sc_failures_total(void);

// sc_failures_render_json appends one JSON object to |out|:
//   {"total":N,"max":64,"failures":[{"time":"2026-11-27T08:50:51.123Z",
//    "time_unix":1795769451.123,"direction":"inbound","reason":"expired",
//    "peer":"127.0.0.1:5555","peer_id":null|"spiffe://…","detail":"…"}, …]}
// newest first. Thread-safe.
void sc_failures_render_json(struct sc_admin_buf *out);

// sc_failures_reset forgets every recorded failure (tests).
void sc_failures_reset(void);

#endif
