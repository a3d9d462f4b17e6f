// backoff.c — capped exponential backoff with jitter for reconnects.
#include "cc/backoff.h"

#include <time.h>

void cc_backoff_init(struct cc_backoff *b, uint64_t initial_ms, uint64_t max_ms, double multiplier,
                     double jitter, uint64_t seed)
{
    b->initial_ms = initial_ms ? initial_ms : 1000;
    b->max_ms = max_ms ? max_ms : 120000;
    if (b->max_ms < b->initial_ms) {
        b->max_ms = b->initial_ms;
    }
    b->multiplier = multiplier >= 1.0 ? multiplier : 1.6;
    b->jitter = jitter >= 0.0 && jitter <= 1.0 ? jitter : 0.2;
    if (seed == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)(uintptr_t)b;
    }
    b->rng = seed ? seed : 0x9e3779b97f4a7c15ull;
    b->current_ms = b->initial_ms;
}

// xorshift64*: plenty for spreading reconnects, no global state.
static uint64_t next_rand(struct cc_backoff *b)
{
    uint64_t x = b->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    b->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

uint64_t cc_backoff_next(struct cc_backoff *b)
{
    double d = (double)b->current_ms;
    // Uniform in [-1, 1).
    double u = (double)(next_rand(b) >> 11) / (double)(1ull << 53) * 2.0 - 1.0;
    double out = d * (1.0 + b->jitter * u);
    double grown = d * b->multiplier;
    b->current_ms = grown >= (double)b->max_ms ? b->max_ms : (uint64_t)grown;
    if (out < 1.0) {
        out = 1.0;
    }
    return (uint64_t)out;
}

void cc_backoff_reset(struct cc_backoff *b)
{
    b->current_ms = b->initial_ms;
}
