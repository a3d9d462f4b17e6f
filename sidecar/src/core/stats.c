// stats.c — see sc/stats.h.
#include "sc/stats.h"

const double sc_hs_bucket_bounds[SC_HS_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                   0.05,   0.1,   0.25,   0.5,   1,    5};

static const char *const fail_names[SC_TLS_FAIL_MAX] = {
    "no_peer_cert", "unknown_ca",         "expired",     "not_yet_valid",
    "bad_svid",     "spiffe_id_mismatch", "not_allowed", "protocol_version",
    "not_tls",      "handshake_timeout",  "peer_closed", "peer_alert",
    "other",
};

const char *sc_tls_fail_name(enum sc_tls_fail r)
{
    if ((unsigned)r >= SC_TLS_FAIL_MAX) {
        return "other";
    }
    return fail_names[r];
}

void sc_stats_observe_handshake(struct sc_worker_stats *st, uint64_t us)
{
    double s = (double)us / 1e6;
    int i = 0;
    while (i < SC_HS_BUCKETS && s > sc_hs_bucket_bounds[i]) {
        i++;
    }
    SC_STAT_ADD(st->hs_bucket[i], 1);
    SC_STAT_ADD(st->hs_count, 1);
    SC_STAT_ADD(st->hs_sum_us, us);
}
