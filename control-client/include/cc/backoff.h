// cc/backoff.h — capped exponential backoff with jitter (gRPC
// connection-backoff.md: delay = min(initial * multiplier^n, max), then
// randomised by +/- jitter).
#ifndef CC_BACKOFF_H
#define CC_BACKOFF_H

#include <stdint.h>

struct cc_backoff {
    uint64_t initial_ms; // first delay (before jitter)
    uint64_t max_ms;     // cap on the un-jittered delay
    double multiplier;   // growth per attempt, >= 1
    double jitter;       // 0..1: the delay is spread over [d*(1-j), d*(1+j)]
    uint64_t current_ms; // un-jittered delay of the next attempt
    uint64_t rng;        // xorshift state
};

// cc_backoff_init sets |b| up with the given parameters (0 picks the gRPC
// defaults: initial 1 s, max 120 s, multiplier 1.6, jitter 0.2) and seeds
// its random generator with |seed| (0 = time and address based).
void cc_backoff_init(struct cc_backoff *b, uint64_t initial_ms, uint64_t max_ms, double multiplier,
                     double jitter, uint64_t seed);

// cc_backoff_next returns the delay before the next attempt in milliseconds
// (never 0, never above max_ms * (1 + jitter)) and grows the delay.
uint64_t cc_backoff_next(struct cc_backoff *b);

// cc_backoff_reset starts again from the initial delay (after a success).
void cc_backoff_reset(struct cc_backoff *b);

#endif
