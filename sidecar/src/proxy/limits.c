// limits.c — connection and buffer-memory limits of the data path
// (sc/limits.h): process-wide settings in relaxed atomics, checked by each
// worker against its own counters, and a rate-limited refusal log.
#include "sc/limits.h"

#include <stdatomic.h>
#include <stddef.h>
#include <time.h>

#include "sc/log.h"

#define SC_LIMITS_LOG_INTERVAL_NS 1000000000ull

static _Atomic uint64_t g_max_conns = SC_LIMITS_DEFAULT_MAX_CONNS;
static _Atomic uint64_t g_max_buffer = SC_LIMITS_DEFAULT_MAX_BUFFER;
static _Atomic uint64_t g_refused;
static _Atomic uint64_t g_unlogged;      // refusals since the last log line
static _Atomic uint64_t g_last_log_ns;   // CLOCK_MONOTONIC of the last log line

void sc_limits_defaults(struct sc_limits *l)
{
    l->max_conns_per_worker = SC_LIMITS_DEFAULT_MAX_CONNS;
    l->max_buffer_bytes = SC_LIMITS_DEFAULT_MAX_BUFFER;
}

void sc_limits_set(const struct sc_limits *l)
{
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

const char *sc_limits_admit(int worker, int num_workers, uint64_t open, uint64_t buf_bytes)
{
    uint64_t max_conns = atomic_load_explicit(&g_max_conns, memory_order_relaxed);
    uint64_t max_buf = atomic_load_explicit(&g_max_buffer, memory_order_relaxed);
    const char *reason = NULL;
    if (max_conns != 0 && open > max_conns) {
        reason = "max_connections";
    } else if (max_buf != 0 && buf_bytes >= max_buf / (uint64_t)(num_workers > 0 ? num_workers : 1)) {
        reason = "max_buffer_memory";
    }
    if (reason != NULL) {
        atomic_fetch_add_explicit(&g_refused, 1, memory_order_relaxed);
        log_refusal(reason, worker, open, buf_bytes);
    }
    return reason;
}

uint64_t sc_limits_refused_total(void)
{
    return atomic_load_explicit(&g_refused, memory_order_relaxed);
}
