// sc/limits.h — resource limits of the data path: open connections per
// worker, bytes of I/O buffers in use, and file descriptors. A limit is
// enforced by refusing new work (the connection is accepted and closed at
// once, counted and logged at most once a second), never by dying or by
// stalling connections already open.
//
// File descriptors: a connection accepted with an fd number within
// SC_LIMITS_FD_HEADROOM of the soft RLIMIT_NOFILE is refused (reason
// "fd_limit", counted in accept_errors like a failed accept), so open
// connections keep the fds they need for their upstream side and the admin
// server keeps answering. (Past the limit itself, libuv accepts and closes
// pending connections silently; the headroom makes that rare.)
//
// The limits are process-wide and read with relaxed atomics, so they may be
// set (sc_limits_set) before or while workers run. Each worker checks its
// own share: max_conns_per_worker of its own connections, and
// max_buffer_bytes / num_workers of its own buffer pool (a connection lives
// on one worker, so no cross-thread counting is needed).
#ifndef SC_LIMITS_H
#define SC_LIMITS_H

#include <stdint.h>

#include "sc/flags.h"
#include "sc/stats.h"

#define SC_LIMITS_FD_HEADROOM 32

// Defaults (documented in sidecar/README.md "Limits" and docs/SECURITY.md).
#define SC_LIMITS_DEFAULT_MAX_CONNS 10000                 // per worker
#define SC_LIMITS_DEFAULT_MAX_BUFFER ((uint64_t)64 << 20) // 64 MiB in all

struct sc_limits {
    uint64_t max_conns_per_worker; // open connections per worker; 0: no limit
    uint64_t max_buffer_bytes;     // buffer bytes in use, all workers; 0: no limit
};

// sc_limits_defaults fills |l| with the defaults above.
void sc_limits_defaults(struct sc_limits *l);

// Until a program calls sc_limits_set, the data path takes the limits from
// SEAM_MAX_CONNECTIONS and SEAM_MAX_BUFFER_MEMORY if set (at its first
// accepted connection), else the defaults.

// sc_limits_set makes |l| the limits in force (process-wide).
void sc_limits_set(const struct sc_limits *l);

// sc_limits_get copies the limits in force into |out|.
void sc_limits_get(struct sc_limits *out);

// sc_limits_flags fills |out[0..1]| with the two flags of the limits,
// --max-connections (per worker) and --max-buffer-memory (a size: "64MiB"),
// writing into |l| (initialise it with sc_limits_defaults first). After a
// successful sc_flags_parse, pass |l| to sc_limits_set.
#define SC_LIMITS_NUM_FLAGS 2
void sc_limits_flags(struct sc_limits *l, struct sc_flag out[SC_LIMITS_NUM_FLAGS]);

// sc_limits_admit decides, on worker |worker| (of |num_workers|), whether a
// connection just accepted on socket |fd| (-1: unknown) may proceed. |open|
// counts the worker's open connections including the new one; |buf_bytes|
// the bytes of buffers its pool has handed out. Returns NULL to admit, or a
// static reason ("max_connections", "max_buffer_memory", "fd_limit") to
// refuse. A refusal is counted in |st| (refused_limit, or accept_errors for
// fd_limit; |st| may be NULL) and logged (event limits.refused) at most once
// a second per process, with the number of refusals not logged since.
// Thread-safe.
const char *sc_limits_admit(struct sc_worker_stats *st, int worker, int num_workers, int fd,
                            uint64_t open, uint64_t buf_bytes);

// sc_limits_admit_conn is the data path's hook (sidecar/src/proxy): it runs
// sc_limits_admit for the connection |down| just accepted on worker |w|.
// Returns 0 to go on, -1 if the caller must close |down| at once.
struct sc_worker;
struct sc_stream;
int sc_limits_admit_conn(struct sc_worker *w, struct sc_stream *down);

// sc_limits_refused_total returns the number of refusals since start (all
// workers; the per-worker counters in sc/stats.h are the metric).
uint64_t sc_limits_refused_total(void);

#endif
