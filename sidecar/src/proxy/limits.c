// limits.c — connection and buffer-memory limits of the data path
// (sc/limits.h): process-wide settings in relaxed atomics, checked by each
// worker against its own counters, and a rate-limited refusal log.
#include "sc/limits.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "proxy/proxy_int.h"
#include "sc/log.h"
#include "sc/parse.h"

#define SC_LIMITS_LOG_INTERVAL_NS 1000000000ull

static _Atomic uint64_t g_max_conns = SC_LIMITS_DEFAULT_MAX_CONNS;
static _Atomic uint64_t g_max_buffer = SC_LIMITS_DEFAULT_MAX_BUFFER;
static _Atomic uint64_t g_refused;
static _Atomic uint64_t g_unlogged;    // refusals since the last log line
static _Atomic uint64_t g_last_log_ns; // CLOCK_MONOTONIC of the last log line
static atomic_bool g_explicit;         // sc_limits_set was called
static pthread_once_t g_env_once = PTHREAD_ONCE_INIT;

// env_init applies SEAM_MAX_CONNECTIONS / SEAM_MAX_BUFFER_MEMORY when no
// program set the limits explicitly (the flag parser reads the same
// variables, so a CLI that wires the flags sees the same values).
static void env_init(void)
{
    if (atomic_load(&g_explicit)) {
        return;
    }
    const char *err = NULL;
    const char *v = getenv("SEAM_MAX_CONNECTIONS");
    uint64_t n = 0;
    if (v != NULL && *v != '\0') {
        char *end = NULL;
        unsigned long long x = strtoull(v, &end, 10);
        if (*end == '\0' && v[0] != '-') {
            atomic_store(&g_max_conns, (uint64_t)x);
        } else {
            sc_error("limits.bad_env", "SEAM_MAX_CONNECTIONS=%s is not a number (keeping %llu)", v,
                     (unsigned long long)atomic_load(&g_max_conns));
        }
    }
    v = getenv("SEAM_MAX_BUFFER_MEMORY");
    if (v != NULL && *v != '\0') {
        if (sc_parse_size(v, &n, &err) == 0) {
            atomic_store(&g_max_buffer, n);
        } else {
            sc_error("limits.bad_env", "SEAM_MAX_BUFFER_MEMORY=%s: %s (keeping %llu)", v,
                     err ? err : "bad size", (unsigned long long)atomic_load(&g_max_buffer));
        }
    }
}

void sc_limits_defaults(struct sc_limits *l)
{
    l->max_conns_per_worker = SC_LIMITS_DEFAULT_MAX_CONNS;
    l->max_buffer_bytes = SC_LIMITS_DEFAULT_MAX_BUFFER;
}

void sc_limits_set(const struct sc_limits *l)
{
    atomic_store(&g_explicit, true);
    atomic_store_explicit(&g_max_conns, l->max_conns_per_worker, memory_order_relaxed);
    atomic_store_explicit(&g_max_buffer, l->max_buffer_bytes, memory_order_relaxed);
}

void sc_limits_get(struct sc_limits *out)
{
    out->max_conns_per_worker = atomic_load_explicit(&g_max_conns, memory_order_relaxed);
    out->max_buffer_bytes = atomic_load_explicit(&g_max_buffer, memory_order_relaxed);
}

void sc_limits_flags(struct sc_limits *l, struct sc_flag out[SC_LIMITS_NUM_FLAGS])
{
    out[0] = (struct sc_flag){
        .name = "max-connections",
        .type = SC_FLAG_INT,
        .out = &l->max_conns_per_worker,
        .help = "open connections per worker; more are accepted and closed at once "
                "(0: no limit; default 10000)",
        .min = 0,
        .max = INT64_MAX,
    };
    out[1] = (struct sc_flag){
        .name = "max-buffer-memory",
        .type = SC_FLAG_SIZE,
        .out = &l->max_buffer_bytes,
        .help = "I/O buffer memory of all workers; new connections are refused while it "
                "is in use (0: no limit; default 64MiB)",
    };
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void log_refusal(const char *reason, int worker, uint64_t open, uint64_t buf_bytes)
{
    atomic_fetch_add_explicit(&g_unlogged, 1, memory_order_relaxed);
    uint64_t now = now_ns();
    uint64_t last = atomic_load_explicit(&g_last_log_ns, memory_order_relaxed);
    if (last != 0 && now - last < SC_LIMITS_LOG_INTERVAL_NS) {
        return;
    }
    // One thread wins the slot; the others stay counted in g_unlogged.
    if (!atomic_compare_exchange_strong(&g_last_log_ns, &last, now)) {
        return;
    }
    uint64_t n = atomic_exchange(&g_unlogged, 0);
    struct sc_limits l;
    sc_limits_get(&l);
    sc_warn("limits.refused",
            "reason=%s worker=%d open=%llu max_connections=%llu buffer_bytes=%llu "
            "max_buffer_bytes=%llu refused_since_last_log=%llu",
            reason, worker, (unsigned long long)open, (unsigned long long)l.max_conns_per_worker,
            (unsigned long long)buf_bytes, (unsigned long long)l.max_buffer_bytes,
            (unsigned long long)n);
}

// fd_near_limit tells whether |fd| is within the headroom of the soft fd
// limit, read each time: prlimit may change it while we run, and the
// headroom must hold from the first connection after the change. (Caching it
// for a second let a burst run into real EMFILE more often. One getrlimit per
// accept is cheap next to the accept itself.) The headroom keeps fds for the
// upstream side of open connections; it cannot prevent EMFILE itself (a limit
// lowered below the fds already open). That case is handled where accept
// fails: libuv 1.44 would retry accept() at once and wedge the worker, so the
// worker's listener pauses instead (sc/accept_pause.h, worker.c on_connection).
static bool fd_near_limit(int fd)
{
    struct rlimit rl;
    if (fd < 0 || getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) {
        return false;
    }
    return (rlim_t)fd + SC_LIMITS_FD_HEADROOM >= rl.rlim_cur;
}

// buffer_share is one worker's part of |max_buf| (--max-buffer-memory).
static uint64_t buffer_share(uint64_t max_buf, int num_workers)
{
    return max_buf / (uint64_t)(num_workers > 0 ? num_workers : 1);
}

const char *sc_limits_admit(struct sc_worker_stats *st, int worker, int num_workers, int fd,
                            uint64_t open, uint64_t buf_bytes)
{
    uint64_t max_conns = atomic_load_explicit(&g_max_conns, memory_order_relaxed);
    uint64_t max_buf = atomic_load_explicit(&g_max_buffer, memory_order_relaxed);
    uint64_t share = buffer_share(max_buf, num_workers);
    const char *reason = NULL;
    if (fd_near_limit(fd)) {
        reason = "fd_limit";
    } else if (max_conns != 0 && open > max_conns) {
        reason = "max_connections";
    } else if (max_buf != 0 && buf_bytes >= share) {
        reason = "max_buffer_memory";
    }
    if (reason == NULL) {
        return NULL;
    }
    if (st != NULL) {
        if (reason[0] == 'f') {
            SC_STAT_ADD(st->accept_errors, 1);
        } else {
            SC_STAT_ADD(st->refused_limit, 1);
        }
    }
    atomic_fetch_add_explicit(&g_refused, 1, memory_order_relaxed);
    log_refusal(reason, worker, open, buf_bytes);
    return reason;
}

int sc_limits_admit_conn(struct sc_worker *w, struct sc_stream *down)
{
    pthread_once(&g_env_once, env_init);
    uv_os_fd_t fd = -1;
    if (uv_fileno((uv_handle_t *)sc_stream_get0_tcp(down), &fd) != 0) {
        fd = -1;
    }
    uint64_t open = atomic_load_explicit(&w->num_conns, memory_order_relaxed);
    uint64_t buf_bytes = (uint64_t)w->pool.bytes_out;
    // Large (bulk) buffers only while this worker's buffers use less than
    // half its share of --max-buffer-memory: many stalled bulk streams fall
    // back to small buffers instead of crowding new connections out.
    uint64_t max_buf = atomic_load_explicit(&g_max_buffer, memory_order_relaxed);
    w->pool.large_budget = (size_t)(buffer_share(max_buf, w->proxy->num_workers) / 2);
    return sc_limits_admit(&w->stats, w->id, w->proxy->num_workers, fd, open, buf_bytes) ? -1 : 0;
}

uint64_t sc_limits_refused_total(void)
{
    return atomic_load_explicit(&g_refused, memory_order_relaxed);
}
