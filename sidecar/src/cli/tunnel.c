// tunnel.c — `seam-sidecar tunnel inbound|outbound`: flags (sc/flags.h),
// the TLS snapshot from PEM files (re-read when they change or on SIGHUP),
// the worker pool (sc/proxy.h), the admin server, and the SIGTERM drain.
// The main thread runs this loop; workers run their own.
#include "sc/tunnel.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <uv.h>

#include "sc/admin.h"
#include "sc/flags.h"
#include "sc/log.h"
#include "sc/parse.h"
#include "sc/proxy.h"
#include "sc/spiffe.h"
#include "sc/tls.h"

#define SC_WATCH_MS 1000

// What identifies a file's content without reading it: a rename gives a new
// inode, an in-place write a new mtime/ctime/size.
struct file_id {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    struct timespec ctime;
    bool exists;
};

struct tunnel {
    uv_loop_t loop;
    uv_signal_t sigterm;
    uv_signal_t sigint;
    uv_signal_t sighup;
    uv_timer_t watch;
    struct sc_proxy *proxy;
    struct sc_admin *admin;
    struct sc_tls_opts opts;
    struct sc_allowlist allow;
    const char *cert_file;
    const char *key_file;
    const char *trust_file;
    struct file_id ids[3];
    uint64_t drain_ms;
    bool draining;
};

static void file_id_get(const char *path, struct file_id *out)
{
    struct stat st;
    memset(out, 0, sizeof(*out));
    if (stat(path, &st) != 0) {
        return;
    }
    out->exists = true;
    out->dev = st.st_dev;
    out->ino = st.st_ino;
    out->size = st.st_size;
    out->mtime = st.st_mtim;
    out->ctime = st.st_ctim;
}

static bool file_id_equal(const struct file_id *a, const struct file_id *b)
{
    return a->exists == b->exists && a->dev == b->dev && a->ino == b->ino &&
           a->size == b->size && a->mtime.tv_sec == b->mtime.tv_sec &&
           a->mtime.tv_nsec == b->mtime.tv_nsec && a->ctime.tv_sec == b->ctime.tv_sec &&
           a->ctime.tv_nsec == b->ctime.tv_nsec;
}

static void snapshot_ids(struct tunnel *t, struct file_id ids[3])
{
    file_id_get(t->cert_file, &ids[0]);
    file_id_get(t->key_file, &ids[1]);
    file_id_get(t->trust_file, &ids[2]);
}

// reload builds a new snapshot from the files; on success new connections use
// it, on failure the one in force stays and the error is logged.
static void reload(struct tunnel *t, const char *why)
{
    char err[512];
    SSL_CTX *ctx =
        sc_tls_ctx_new_files(&t->opts, t->cert_file, t->key_file, t->trust_file, err, sizeof(err));
    if (ctx == NULL) {
        sc_error("tls.reload_failed", "trigger=%s error=%s (keeping the certificate in force)",
                 why, err);
        return;
    }
    char id[SC_SPIFFE_ID_MAX + 1] = "-";
    sc_tls_ctx_leaf_id(ctx, id, sizeof(id));
    sc_proxy_publish_tls(t->proxy, ctx);
    sc_info("tls.reloaded", "trigger=%s id=%s not_after=%lld", why, id,
            (long long)sc_tls_ctx_not_after(ctx));
    SSL_CTX_free(ctx);
}

static void on_watch(uv_timer_t *timer)
{
    struct tunnel *t = timer->data;
    struct file_id ids[3];
    snapshot_ids(t, ids);
    bool changed = false;
    for (int i = 0; i < 3; i++) {
        if (!file_id_equal(&ids[i], &t->ids[i])) {
            changed = true;
        }
    }
    if (!changed) {
        return;
    }
    memcpy(t->ids, ids, sizeof(ids));
    reload(t, "file_change");
}

static void on_sighup(uv_signal_t *h, int signum)
{
    struct tunnel *t = h->data;
    snapshot_ids(t, t->ids);
    reload(t, "sighup");
}

static void on_admin_stopped(void *arg)
{
}

static void on_proxy_done(struct sc_proxy *p, void *arg)
{
    struct tunnel *t = arg;
    sc_info("sidecar.stopped", "reason=drained");
    sc_admin_stop(t->admin, on_admin_stopped, NULL);
    t->admin = NULL;
    uv_close((uv_handle_t *)&t->sigterm, NULL);
    uv_close((uv_handle_t *)&t->sigint, NULL);
    uv_close((uv_handle_t *)&t->sighup, NULL);
    uv_close((uv_handle_t *)&t->watch, NULL);
}

static void start_drain(struct tunnel *t, const char *why)
{
    if (t->draining) {
        return;
    }
    t->draining = true;
    sc_info("sidecar.draining", "trigger=%s active=%llu drain_timeout_ms=%llu", why,
            (unsigned long long)sc_proxy_active_connections(t->proxy),
            (unsigned long long)t->drain_ms);
    uv_timer_stop(&t->watch);
    sc_proxy_drain(t->proxy, t->drain_ms);
}

static void on_sigterm(uv_signal_t *h, int signum)
{
    start_drain(h->data, signum == SIGINT ? "sigint" : "sigterm");
}

static bool admin_ready(void *ctx)
{
    struct tunnel *t = ctx;
    return !t->draining;
}

static void admin_drain(void *ctx)
{
    start_drain(ctx, "admin");
}

static void admin_quit(void *ctx)
{
    struct tunnel *t = ctx;
    // Prompt exit: drain with no grace period.
    t->drain_ms = 0;
    start_drain(t, "quitquitquit");
}

static void usage(FILE *f, const struct sc_flag *flags, size_t n)
{
    fprintf(f, "usage: seam-sidecar tunnel inbound|outbound --listen HOST:PORT --target HOST:PORT\n"
               "         --cert F --key F --trust F (--peer-id ID | --allow ID_OR_PREFIX/* ...)\n"
               "\n"
               "  outbound: accept plain TCP, connect with mTLS; the server must present --peer-id.\n"
               "  inbound:  accept mTLS (client certificate required), check --allow, connect plain.\n"
               "\nflags:\n");
    sc_flags_usage(f, flags, n);
}

int sc_cmd_tunnel(int argc, char **argv)
{
    struct tunnel *t = calloc(1, sizeof(*t));
    const char *listen = NULL, *target = NULL, *peer_id = NULL, *sni = NULL, *admin = NULL;
    const char *log_level = "info", *log_format = "text";
    struct sc_strlist allow = {0};
    int64_t workers = 2;
    uint64_t connect_ms = 10000, hs_ms = 10000, idle_ms = 3600000, drain_ms = 25000;
    bool tls12 = false;
    struct sc_flag flags[] = {
        {.name = "listen", .type = SC_FLAG_STRING, .out = &listen, .help = "address to accept on (HOST:PORT)", .required = true},
        {.name = "target", .type = SC_FLAG_STRING, .out = &target, .help = "address to connect to (HOST:PORT)", .required = true},
        {.name = "cert", .type = SC_FLAG_STRING, .out = &t->cert_file, .help = "PEM certificate chain, leaf first", .required = true},
        {.name = "key", .type = SC_FLAG_STRING, .out = &t->key_file, .help = "PEM private key of the leaf", .required = true},
        {.name = "trust", .type = SC_FLAG_STRING, .out = &t->trust_file, .help = "PEM trust bundle (CA certificates)", .required = true},
        {.name = "peer-id", .type = SC_FLAG_STRING, .out = &peer_id, .help = "outbound: SPIFFE ID the server must present"},
        {.name = "allow", .type = SC_FLAG_LIST, .out = &allow, .help = "inbound: allowed client ID or prefix/* (repeatable)"},
        {.name = "workers", .type = SC_FLAG_INT, .out = &workers, .help = "worker threads (default 2)", .min = 1, .max = 256},
        {.name = "connect-timeout", .type = SC_FLAG_DURATION, .out = &connect_ms, .help = "upstream connect timeout (10s)"},
        {.name = "handshake-timeout", .type = SC_FLAG_DURATION, .out = &hs_ms, .help = "TLS handshake timeout (10s)"},
        {.name = "idle-timeout", .type = SC_FLAG_DURATION, .out = &idle_ms, .help = "close after no bytes for this long (1h)"},
        {.name = "drain-timeout", .type = SC_FLAG_DURATION, .out = &drain_ms, .help = "SIGTERM grace period (25s)"},
        {.name = "log-level", .type = SC_FLAG_STRING, .out = &log_level, .help = "debug|info|warn|error (info)"},
        {.name = "log-format", .type = SC_FLAG_STRING, .out = &log_format, .help = "text|json (text)"},
        {.name = "admin", .type = SC_FLAG_STRING, .out = &admin, .help = "admin/metrics server address (HOST:PORT)"},
        {.name = "sni", .type = SC_FLAG_STRING, .out = &sni, .help = "outbound: TLS server name to send"},
        {.name = "allow-tls12", .type = SC_FLAG_BOOL, .out = &tls12, .help = "also accept TLS 1.2 (default: TLS 1.3 only)"},
    };
    size_t nflags = sizeof(flags) / sizeof(flags[0]);
    char err[512];
    const char *why = NULL;
    int rc = 2;
    struct sockaddr_storage listen_sa, target_sa, admin_sa;
    enum sc_dir dir;
    SSL_CTX *ctx = NULL;

    if (t == NULL) {
        return 1;
    }
    if (argc >= 1 && (strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "--help") == 0)) {
        usage(stdout, flags, nflags);
        rc = 0;
        goto out;
    }
    if (argc < 1 || (strcmp(argv[0], "inbound") != 0 && strcmp(argv[0], "outbound") != 0)) {
        fprintf(stderr, "seam-sidecar tunnel: the mode must be \"inbound\" or \"outbound\"%s%s%s\n",
                argc >= 1 ? ", not \"" : "", argc >= 1 ? argv[0] : "", argc >= 1 ? "\"" : "");
        usage(stderr, flags, nflags);
        goto out;
    }
    dir = strcmp(argv[0], "inbound") == 0 ? SC_DIR_INBOUND : SC_DIR_OUTBOUND;
    int pr = sc_flags_parse(flags, nflags, argc - 1, argv + 1, err, sizeof(err));
    if (pr == 1) {
        usage(stdout, flags, nflags);
        rc = 0;
        goto out;
    }
    if (pr != 0) {
        fprintf(stderr, "seam-sidecar tunnel %s: %s\n", argv[0], err);
        goto out;
    }
    // Cross-flag checks, each naming the flag and the bad value.
    int level = sc_log_parse_level(log_level);
    if (level < 0) {
        fprintf(stderr, "seam-sidecar tunnel: --log-level \"%s\" is not debug|info|warn|error\n",
                log_level);
        goto out;
    }
    if (strcmp(log_format, "text") != 0 && strcmp(log_format, "json") != 0) {
        fprintf(stderr, "seam-sidecar tunnel: --log-format \"%s\" is not text|json\n", log_format);
        goto out;
    }
    if (sc_parse_hostport(listen, true, &listen_sa, &why) != 0) {
        fprintf(stderr, "seam-sidecar tunnel: --listen \"%s\": %s\n", listen, why ? why : "invalid");
        goto out;
    }
    if (sc_parse_hostport(target, false, &target_sa, &why) != 0) {
        fprintf(stderr, "seam-sidecar tunnel: --target \"%s\": %s\n", target, why ? why : "invalid");
        goto out;
    }
    if (admin != NULL && sc_parse_hostport(admin, true, &admin_sa, &why) != 0) {
        fprintf(stderr, "seam-sidecar tunnel: --admin \"%s\": %s\n", admin, why ? why : "invalid");
        goto out;
    }
    if (dir == SC_DIR_OUTBOUND) {
        if (peer_id == NULL) {
            fprintf(stderr, "seam-sidecar tunnel outbound: missing required flag --peer-id "
                            "(or SEAM_PEER_ID): the SPIFFE ID the server must present\n");
            goto out;
        }
        if (!sc_spiffe_id_valid(peer_id, strlen(peer_id), &why)) {
            fprintf(stderr, "seam-sidecar tunnel: --peer-id \"%s\" is not a SPIFFE ID: %s\n",
                    peer_id, why ? why : "invalid");
            goto out;
        }
        if (allow.num > 0) {
            fprintf(stderr, "seam-sidecar tunnel outbound: --allow is for inbound tunnels\n");
            goto out;
        }
    } else {
        if (allow.num == 0) {
            fprintf(stderr, "seam-sidecar tunnel inbound: missing required flag --allow (or "
                            "SEAM_ALLOW): client SPIFFE IDs or prefixes/* to accept\n");
            goto out;
        }
        for (size_t i = 0; i < allow.num; i++) {
            if (!sc_spiffe_pattern_valid(allow.items[i], &why)) {
                fprintf(stderr, "seam-sidecar tunnel: --allow \"%s\" is not a SPIFFE ID or "
                                "prefix/*: %s\n",
                        allow.items[i], why ? why : "invalid");
                goto out;
            }
        }
        if (peer_id != NULL) {
            fprintf(stderr, "seam-sidecar tunnel inbound: --peer-id is for outbound tunnels\n");
            goto out;
        }
    }
    sc_log_setup((enum sc_log_level)level,
                 strcmp(log_format, "json") == 0 ? SC_LOG_JSON : SC_LOG_TEXT);

    // The first snapshot: a bad file is fatal at start (nothing to keep).
    t->allow.num_patterns = allow.num;
    t->allow.patterns = allow.items;
    t->opts.is_server = dir == SC_DIR_INBOUND;
    t->opts.peer_id = peer_id;
    t->opts.allow = dir == SC_DIR_INBOUND ? &t->allow : NULL;
    t->opts.allow_tls12 = tls12;
    t->drain_ms = drain_ms;
    snapshot_ids(t, t->ids);
    ctx = sc_tls_ctx_new_files(&t->opts, t->cert_file, t->key_file, t->trust_file, err,
                               sizeof(err));
    if (ctx == NULL) {
        fprintf(stderr, "seam-sidecar tunnel: %s\n", err);
        rc = 1;
        goto out;
    }

    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&t->loop);
    struct sc_proxy_config cfg = {
        .dir = dir,
        .listen = listen_sa,
        .target = target_sa,
        .num_workers = (int)workers,
        .connect_timeout_ms = connect_ms,
        .handshake_timeout_ms = hs_ms,
        .idle_timeout_ms = idle_ms,
        .sni = sni,
    };
    int r = sc_proxy_start(&cfg, ctx, &t->loop, on_proxy_done, t, &t->proxy);
    if (r != 0) {
        fprintf(stderr, "seam-sidecar tunnel: cannot listen on %s: %s\n", listen, uv_strerror(r));
        rc = 1;
        goto out_loop;
    }
    if (admin != NULL) {
        struct sc_admin_hooks hooks = {
            .ctx = t,
            .num_workers = sc_proxy_num_workers(t->proxy),
            .worker_stats = sc_proxy_worker_stats(t->proxy),
            .ready = admin_ready,
            .drain = admin_drain,
            .quit = admin_quit,
            .cert_path = t->cert_file,
            .trust_path = t->trust_file,
        };
        r = sc_admin_start(&t->loop, (struct sockaddr *)&admin_sa, &hooks, &t->admin);
        if (r != 0) {
            // The workers are running: drain them (nothing is connected yet).
            fprintf(stderr, "seam-sidecar tunnel: cannot start admin on %s: %s\n", admin,
                    uv_strerror(r));
            rc = 1;
        }
    }
    uv_signal_init(&t->loop, &t->sigterm);
    uv_signal_init(&t->loop, &t->sigint);
    uv_signal_init(&t->loop, &t->sighup);
    uv_timer_init(&t->loop, &t->watch);
    t->sigterm.data = t->sigint.data = t->sighup.data = t->watch.data = t;
    uv_signal_start(&t->sigterm, on_sigterm, SIGTERM);
    uv_signal_start(&t->sigint, on_sigterm, SIGINT);
    uv_signal_start(&t->sighup, on_sighup, SIGHUP);
    uv_timer_start(&t->watch, on_watch, SC_WATCH_MS, SC_WATCH_MS);
    if (rc == 1) {
        start_drain(t, "startup_error");
    } else {
        char la[64];
        struct sockaddr_storage bound = listen_sa;
        if (bound.ss_family == AF_INET6) {
            ((struct sockaddr_in6 *)&bound)->sin6_port =
                htons((uint16_t)sc_proxy_listen_port(t->proxy));
        } else {
            ((struct sockaddr_in *)&bound)->sin_port =
                htons((uint16_t)sc_proxy_listen_port(t->proxy));
        }
        char id[SC_SPIFFE_ID_MAX + 1] = "-";
        sc_tls_ctx_leaf_id(ctx, id, sizeof(id));
        sc_info("sidecar.ready", "mode=tunnel dir=%s listen=%s workers=%d target=%s id=%s",
                dir == SC_DIR_INBOUND ? "inbound" : "outbound",
                sc_format_addr((struct sockaddr *)&bound, la, sizeof(la)), (int)workers, target,
                id);
        rc = 0;
    }
    uv_run(&t->loop, UV_RUN_DEFAULT);
    sc_proxy_free(t->proxy);

out_loop:
    if (uv_loop_close(&t->loop) != 0) {
        uv_run(&t->loop, UV_RUN_DEFAULT);
        uv_loop_close(&t->loop);
    }
out:
    SSL_CTX_free(ctx);
    sc_strlist_cleanup(&allow);
    free(t);
    return rc;
}
