// failures.c — ring of the last refused TLS handshakes (see sc/failures.h).
// Any thread records; the admin server renders on the main thread. Failures
// are rare, so one mutex is enough and never sits on the hot path.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sc/admin.h"
#include "sc/failures.h"

struct failure {
    struct timespec when; // CLOCK_REALTIME
    enum sc_dir dir;
    enum sc_tls_fail reason;
    char peer[64];
    char peer_id[512]; // empty: unknown
    char detail[256];
};

static pthread_mutex_t ring_lock = PTHREAD_MUTEX_INITIALIZER;
static struct failure ring[SC_FAILURES_MAX];
static uint64_t ring_total; // failures ever recorded; ring[(total-1) % MAX] is the newest

// copy_str copies |src| into |dst| (size |n|), truncating; NULL gives "".
static void copy_str(char *dst, size_t n, const char *src)
{
    if (src == NULL) {
        dst[0] = '\0';
        return;
    }
    snprintf(dst, n, "%s", src);
}

void sc_failures_record(enum sc_dir dir, enum sc_tls_fail reason, const char *peer_addr,
                        const char *peer_id, const char *detail)
{
    struct failure f;
    clock_gettime(CLOCK_REALTIME, &f.when);
    f.dir = (unsigned)dir < SC_DIR_MAX ? dir : SC_DIR_INBOUND;
    f.reason = (unsigned)reason < SC_TLS_FAIL_MAX ? reason : SC_TLS_FAIL_OTHER;
    copy_str(f.peer, sizeof(f.peer), peer_addr);
    if (peer_id != NULL && strcmp(peer_id, "-") == 0) {
        peer_id = NULL;
    }
    copy_str(f.peer_id, sizeof(f.peer_id), peer_id);
    copy_str(f.detail, sizeof(f.detail), detail);

    pthread_mutex_lock(&ring_lock);
    ring[ring_total % SC_FAILURES_MAX] = f;
    ring_total++;
    pthread_mutex_unlock(&ring_lock);
}

uint64_t sc_failures_total(void)
{
    pthread_mutex_lock(&ring_lock);
    uint64_t t = ring_total;
    pthread_mutex_unlock(&ring_lock);
    return t;
}

void sc_failures_reset(void)
{
    pthread_mutex_lock(&ring_lock);
    ring_total = 0;
    memset(ring, 0, sizeof(ring));
    pthread_mutex_unlock(&ring_lock);
}

static void render_one(struct sc_admin_buf *out, const struct failure *f)
{
    struct tm tm;
    time_t secs = f->when.tv_sec;
    gmtime_r(&secs, &tm);
    char ts[64];
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    long ms = f->when.tv_nsec / 1000000;
    sc_admin_buf_printf(out,
                        "{\"time\":\"%s.%03ldZ\",\"time_unix\":%lld.%03ld,\"direction\":\"%s\","
                        "\"reason\":\"%s\",\"peer\":",
                        ts, ms, (long long)secs, ms,
                        f->dir == SC_DIR_OUTBOUND ? "outbound" : "inbound",
                        sc_tls_fail_name(f->reason));
    sc_admin_buf_json_string(out, f->peer);
    sc_admin_buf_append(out, ",\"peer_id\":", 11);
    sc_admin_buf_json_string(out, f->peer_id[0] != '\0' ? f->peer_id : NULL);
    sc_admin_buf_append(out, ",\"detail\":", 10);
    sc_admin_buf_json_string(out, f->detail);
    sc_admin_buf_append(out, "}", 1);
}

void sc_failures_render_json(struct sc_admin_buf *out)
{
    // Copy under the lock, render outside it: rendering allocates.
    struct failure *snap = malloc(sizeof(struct failure) * SC_FAILURES_MAX);
    if (snap == NULL) {
        abort();
    }
    pthread_mutex_lock(&ring_lock);
    uint64_t total = ring_total;
    size_t n = total < SC_FAILURES_MAX ? (size_t)total : SC_FAILURES_MAX;
    for (size_t i = 0; i < n; i++) {
        snap[i] = ring[(total - 1 - i) % SC_FAILURES_MAX]; // newest first
    }
    pthread_mutex_unlock(&ring_lock);

    sc_admin_buf_printf(out, "{\"total\":%llu,\"max\":%d,\"failures\":[", (unsigned long long)total,
                        SC_FAILURES_MAX);
    for (size_t i = 0; i < n; i++) {
        if (i > 0) {
            sc_admin_buf_append(out, ",", 1);
        }
        render_one(out, &snap[i]);
    }
    sc_admin_buf_append(out, "]}", 2);
    free(snap);
}
