// metrics.c — renders the Prometheus text format 0.0.4 for GET /metrics.
//
// Families rendered here (all prefixed seam_, base units, counters _total):
//   seam_build_info{version}                                   gauge 1
//   seam_workers                                               gauge
//   seam_connections_opened_total{direction,mode}              counter
//   seam_connections_closed_total{direction,mode}              counter
//   seam_connections_failed_total{direction,mode}              counter
//   seam_connections_active{direction,mode}                    gauge (opened - closed)
//   seam_received_bytes_total{direction}                       counter (from downstream)
//   seam_sent_bytes_total{direction}                           counter (to downstream)
//   seam_tls_handshake_failures_total{direction,reason}        counter
//   seam_tls_handshake_duration_seconds                        histogram
//   seam_authz_decisions_total{result="allow|deny"}            counter
//   seam_connections_refused_total                             counter (a limit refused new work)
//   seam_accept_errors_total                                   counter
//   seam_mux_sessions_opened_total{direction}                  counter (docs/MUX.md)
//   seam_mux_sessions_active{direction}                        gauge
//   seam_mux_stream_waits_total{direction}                     counter
//   seam_mux_window_grows_total{direction}                     counter
//   seam_mux_window_shrinks_total{direction}                   counter
//   seam_mux_stream_detours_total                              counter
//   seam_worker_loop_lag_seconds{worker}                       gauge
//   seam_main_loop_lag_seconds                                 gauge
//   seam_tls_failures_recorded_total                           counter (/debug/tls-failures)
//   seam_process_resident_memory_bytes, seam_process_open_fds  gauges (from /proc/self)
//   seam_process_start_time_seconds                            gauge
// then, with file certificates (tunnel mode, no certs hook):
//   seam_cert_expiry_timestamp_seconds{role="leaf",spiffe_id}, seam_trust_bundle_roots
// then whatever hooks->extra_metrics appends.
//
// Per-worker counters are summed on scrape with relaxed loads; no locks.
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "admin/admin_int.h"
#include "sc/admin.h"
#include "sc/failures.h"

static const char *const dir_names[SC_DIR_MAX] = {"inbound", "outbound"};
static const char *const mode_names[SC_MODE_MAX] = {"mtls", "plain"};

// Sums over all workers, taken once per scrape.
struct totals {
    uint64_t opened[SC_DIR_MAX][SC_MODE_MAX];
    uint64_t closed[SC_DIR_MAX][SC_MODE_MAX];
    uint64_t failed[SC_DIR_MAX][SC_MODE_MAX];
    uint64_t rx[SC_DIR_MAX];
    uint64_t tx[SC_DIR_MAX];
    uint64_t hs_fail[SC_DIR_MAX][SC_TLS_FAIL_MAX];
    uint64_t hs_bucket[SC_HS_BUCKETS + 1];
    uint64_t hs_sum_us;
    uint64_t allow, deny, refused, accept_errors;
    uint64_t mux_opened[SC_DIR_MAX], mux_closed[SC_DIR_MAX], mux_waits[SC_DIR_MAX];
    uint64_t mux_window_grows[SC_DIR_MAX], mux_window_shrinks[SC_DIR_MAX];
    uint64_t mux_detours;
};

static void sum_workers(struct totals *t, const struct sc_admin_hooks *h)
{
    memset(t, 0, sizeof(*t));
    for (int w = 0; w < h->num_workers; w++) {
        struct sc_worker_stats *s = h->worker_stats ? h->worker_stats[w] : NULL;
        if (s == NULL) {
            continue;
        }
        for (int d = 0; d < SC_DIR_MAX; d++) {
            for (int m = 0; m < SC_MODE_MAX; m++) {
                // closed before opened: both only grow, so opened >= closed
                // holds for what we read, and the active gauge never underflows.
                t->closed[d][m] += SC_STAT_GET(s->conn_closed[d][m]);
                t->opened[d][m] += SC_STAT_GET(s->conn_opened[d][m]);
                t->failed[d][m] += SC_STAT_GET(s->conn_failed[d][m]);
            }
            t->mux_closed[d] += SC_STAT_GET(s->mux_closed[d]); // closed first, as above
            t->mux_opened[d] += SC_STAT_GET(s->mux_opened[d]);
            t->mux_waits[d] += SC_STAT_GET(s->mux_waits[d]);
            t->mux_window_grows[d] += SC_STAT_GET(s->mux_window_grows[d]);
            t->mux_window_shrinks[d] += SC_STAT_GET(s->mux_window_shrinks[d]);
            t->rx[d] += SC_STAT_GET(s->bytes_received[d]);
            t->tx[d] += SC_STAT_GET(s->bytes_sent[d]);
            for (int r = 0; r < SC_TLS_FAIL_MAX; r++) {
                t->hs_fail[d][r] += SC_STAT_GET(s->hs_failures[d][r]);
            }
        }
        for (int b = 0; b <= SC_HS_BUCKETS; b++) {
            t->hs_bucket[b] += SC_STAT_GET(s->hs_bucket[b]);
        }
        t->hs_sum_us += SC_STAT_GET(s->hs_sum_us);
        t->allow += SC_STAT_GET(s->authz_allow);
        t->deny += SC_STAT_GET(s->authz_deny);
        t->refused += SC_STAT_GET(s->refused_limit);
        t->accept_errors += SC_STAT_GET(s->accept_errors);
        t->mux_detours += SC_STAT_GET(s->mux_detours);
    }
}

static void family(struct sc_admin_buf *out, const char *name, const char *type, const char *help)
{
    sc_admin_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void dir_mode_family(struct sc_admin_buf *out, const char *name, const char *type,
                            const char *help, uint64_t v[SC_DIR_MAX][SC_MODE_MAX])
{
    family(out, name, type, help);
    for (int d = 0; d < SC_DIR_MAX; d++) {
        for (int m = 0; m < SC_MODE_MAX; m++) {
            sc_admin_buf_printf(out, "%s{direction=\"%s\",mode=\"%s\"} %llu\n", name, dir_names[d],
                                mode_names[m], (unsigned long long)v[d][m]);
        }
    }
}

static void dir_family(struct sc_admin_buf *out, const char *name, const char *help,
                       const uint64_t v[SC_DIR_MAX])
{
    family(out, name, "counter", help);
    for (int d = 0; d < SC_DIR_MAX; d++) {
        sc_admin_buf_printf(out, "%s{direction=\"%s\"} %llu\n", name, dir_names[d],
                            (unsigned long long)v[d]);
    }
}

// render_histogram turns the non-cumulative per-bucket counts (last = +Inf)
// into Prometheus' cumulative buckets. _count is the +Inf bucket, so the
// family is consistent even if a worker raced us between the loads.
static void render_histogram(struct sc_admin_buf *out, const struct totals *t)
{
    const char *name = "seam_tls_handshake_duration_seconds";
    family(out, name, "histogram", "Duration of successful TLS handshakes.");
    uint64_t cum = 0;
    for (int b = 0; b < SC_HS_BUCKETS; b++) {
        cum += t->hs_bucket[b];
        sc_admin_buf_printf(out, "%s_bucket{le=\"%g\"} %llu\n", name, sc_hs_bucket_bounds[b],
                            (unsigned long long)cum);
    }
    cum += t->hs_bucket[SC_HS_BUCKETS];
    sc_admin_buf_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    sc_admin_buf_printf(out, "%s_sum %.6f\n", name, (double)t->hs_sum_us / 1e6);
    sc_admin_buf_printf(out, "%s_count %llu\n", name, (unsigned long long)cum);
}

// read_rss_bytes returns the resident set size from /proc/self/statm, or -1.
static long long read_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "re");
    if (f == NULL) {
        return -1;
    }
    unsigned long long size, resident;
    int n = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    if (n != 2) {
        return -1;
    }
    return (long long)(resident * (unsigned long long)sysconf(_SC_PAGESIZE));
}

// count_open_fds counts the entries of /proc/self/fd (minus the one
// opendir itself holds), or returns -1.
static long long count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) {
        return -1;
    }
    long long n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    return n > 0 ? n - 1 : 0;
}

// process_start_time returns the process start as a Unix time, from
// /proc/self/stat field 22 (clock ticks since boot) and /proc/stat btime.
static double process_start_time(void)
{
    static double cached;
    if (cached > 0) {
        return cached;
    }
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "re");
    if (f == NULL) {
        return 0;
    }
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); // comm may contain spaces
    if (p == NULL) {
        return 0;
    }
    unsigned long long start_ticks = 0;
    // After ") " come fields 3..: state is field 3, starttime is field 22.
    int field = 2;
    for (char *s = p + 1; *s != '\0'; s++) {
        if (*s == ' ') {
            field++;
            if (field == 22) {
                start_ticks = strtoull(s + 1, NULL, 10);
                break;
            }
        }
    }
    f = fopen("/proc/stat", "re");
    if (f == NULL) {
        return 0;
    }
    unsigned long long btime = 0;
    char line[256];
    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "btime %llu", &btime) == 1) {
            break;
        }
    }
    fclose(f);
    if (btime == 0) {
        return 0;
    }
    cached = (double)btime + (double)start_ticks / (double)sysconf(_SC_CLK_TCK);
    return cached;
}

void sc_metrics_render(struct sc_admin_buf *out, const struct sc_admin_hooks *h,
                       uint64_t main_lag_us)
{
    struct totals t;
    sum_workers(&t, h);

    family(out, "seam_build_info", "gauge", "Build information; always 1.");
    sc_admin_buf_printf(out, "seam_build_info{version=\"");
    sc_admin_buf_label_value(out, SEAM_VERSION);
    sc_admin_buf_printf(out, "\"} 1\n");

    family(out, "seam_workers", "gauge", "Number of data-path worker threads.");
    sc_admin_buf_printf(out, "seam_workers %d\n", h->num_workers);

    dir_mode_family(out, "seam_connections_opened_total", "counter",
                    "Proxied connections accepted, by direction and TLS mode.", t.opened);
    dir_mode_family(out, "seam_connections_closed_total", "counter",
                    "Proxied connections finished, by direction and TLS mode.", t.closed);
    dir_mode_family(out, "seam_connections_failed_total", "counter",
                    "Proxied connections whose upstream connect or handshake failed.", t.failed);
    uint64_t active[SC_DIR_MAX][SC_MODE_MAX];
    for (int d = 0; d < SC_DIR_MAX; d++) {
        for (int m = 0; m < SC_MODE_MAX; m++) {
            active[d][m] = t.opened[d][m] >= t.closed[d][m] ? t.opened[d][m] - t.closed[d][m] : 0;
        }
    }
    dir_mode_family(out, "seam_connections_active", "gauge",
                    "Proxied connections currently open, by direction and TLS mode.", active);

    dir_family(out, "seam_received_bytes_total",
               "Bytes received from the downstream (accepted) side, by direction.", t.rx);
    dir_family(out, "seam_sent_bytes_total",
               "Bytes sent to the downstream (accepted) side, by direction.", t.tx);

    family(out, "seam_tls_handshake_failures_total", "counter",
           "Refused TLS handshakes, by direction and reason.");
    for (int d = 0; d < SC_DIR_MAX; d++) {
        for (int r = 0; r < SC_TLS_FAIL_MAX; r++) {
            sc_admin_buf_printf(out,
                                "seam_tls_handshake_failures_total{direction=\"%s\",reason=\"%s\"} "
                                "%llu\n",
                                dir_names[d], sc_tls_fail_name((enum sc_tls_fail)r),
                                (unsigned long long)t.hs_fail[d][r]);
        }
    }

    render_histogram(out, &t);

    family(out, "seam_authz_decisions_total", "counter",
           "Authorization decisions on inbound peers, by result.");
    sc_admin_buf_printf(out, "seam_authz_decisions_total{result=\"allow\"} %llu\n",
                        (unsigned long long)t.allow);
    sc_admin_buf_printf(out, "seam_authz_decisions_total{result=\"deny\"} %llu\n",
                        (unsigned long long)t.deny);

    family(out, "seam_connections_refused_total", "counter",
           "New connections refused because a limit was reached.");
    sc_admin_buf_printf(out, "seam_connections_refused_total %llu\n",
                        (unsigned long long)t.refused);
    family(out, "seam_accept_errors_total", "counter", "accept() failures (e.g. EMFILE).");
    sc_admin_buf_printf(out, "seam_accept_errors_total %llu\n",
                        (unsigned long long)t.accept_errors);
    dir_family(out, "seam_mux_sessions_opened_total",
               "seam-mux sessions opened (many connections over one mTLS connection), by "
               "direction.",
               t.mux_opened);
    family(out, "seam_mux_sessions_active", "gauge",
           "seam-mux sessions currently open, by direction.");
    for (int d = 0; d < SC_DIR_MAX; d++) {
        sc_admin_buf_printf(out, "seam_mux_sessions_active{direction=\"%s\"} %llu\n", dir_names[d],
                            (unsigned long long)(t.mux_opened[d] - t.mux_closed[d]));
    }
    dir_family(out, "seam_mux_stream_waits_total",
               "Times a seam-mux stream stopped reading its socket because its session's "
               "socket was backed up (the streams then take turns), by direction.",
               t.mux_waits);
    dir_family(out, "seam_mux_window_grows_total",
               "Times a seam-mux stream's receive window grew because the window, not the "
               "app, limited it (256 KiB steps, up to 1 MiB; 8 MiB on a long round trip), "
               "by direction.",
               t.mux_window_grows);
    dir_family(out, "seam_mux_window_shrinks_total",
               "WINDOW frames by which a seam-mux stream gave growth of its receive window "
               "back (its app fell behind, or other streams share its session), by direction.",
               t.mux_window_shrinks);
    family(out, "seam_mux_stream_detours_total", "counter",
           "New outbound seam-mux streams kept off a session carrying a bulk stream (put on "
           "another session to the same destination, or on a new one).");
    sc_admin_buf_printf(out, "seam_mux_stream_detours_total %llu\n",
                        (unsigned long long)t.mux_detours);

    family(out, "seam_worker_loop_lag_seconds", "gauge",
           "Last measured event-loop lag of each worker thread.");
    for (int w = 0; w < h->num_workers; w++) {
        struct sc_worker_stats *s = h->worker_stats ? h->worker_stats[w] : NULL;
        uint64_t lag = s ? SC_STAT_GET(s->loop_lag_us) : 0;
        sc_admin_buf_printf(out, "seam_worker_loop_lag_seconds{worker=\"%d\"} %.6f\n", w,
                            (double)lag / 1e6);
    }
    family(out, "seam_main_loop_lag_seconds", "gauge",
           "Last measured event-loop lag of the main thread (admin, identity, control plane).");
    sc_admin_buf_printf(out, "seam_main_loop_lag_seconds %.6f\n", (double)main_lag_us / 1e6);

    family(out, "seam_tls_failures_recorded_total", "counter",
           "Refused handshakes recorded for /debug/tls-failures.");
    sc_admin_buf_printf(out, "seam_tls_failures_recorded_total %llu\n",
                        (unsigned long long)sc_failures_total());

    long long rss = read_rss_bytes();
    if (rss >= 0) {
        family(out, "seam_process_resident_memory_bytes", "gauge", "Resident memory size.");
        sc_admin_buf_printf(out, "seam_process_resident_memory_bytes %lld\n", rss);
    }
    long long fds = count_open_fds();
    if (fds >= 0) {
        family(out, "seam_process_open_fds", "gauge", "Open file descriptors.");
        sc_admin_buf_printf(out, "seam_process_open_fds %lld\n", fds);
    }
    double start = process_start_time();
    if (start > 0) {
        family(out, "seam_process_start_time_seconds", "gauge",
               "Start time of the process since the Unix epoch.");
        sc_admin_buf_printf(out, "seam_process_start_time_seconds %.2f\n", start);
    }

    if (h->certs_json == NULL && h->cert_path != NULL) {
        sc_admin__file_cert_metrics(out, h->cert_path, h->trust_path);
    }
    if (h->extra_metrics != NULL) {
        h->extra_metrics(h->ctx, out);
    }
}
