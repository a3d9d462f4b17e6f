// tunnel.c — `seam-sidecar tunnel inbound|outbound`: flags (sc/flags.h),
// the TLS snapshot from PEM files (re-read when they change or on SIGHUP) or
// from the control plane's CA (--control-plane: sc/identity.h, the trust
// bundle from --trust or --control-plane-trust, re-read when it changes), the
// worker pool (sc/proxy.h), the admin server, and the SIGTERM drain.
// The main thread runs this loop; workers run their own.
//
// With --control-plane the listener starts only once the first certificate
// is installed; every renewal or bundle change publishes a new snapshot to
// the workers (open connections keep theirs).
#include "sc/tunnel.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <uv.h>

#include "cc/grpc_client.h"
#include "sc/admin.h"
#include "sc/flags.h"
#include "sc/identity.h"
#include "sc/limits.h"
#include "sc/log.h"
#include "sc/parse.h"
#include "sc/proxy.h"
#include "sc/spiffe.h"
#include "sc/tcp_cc.h"
#include "sc/tls.h"

#define SC_WATCH_MS 1000
// A certificate issued by a root new to the bundle waits this long before it
// is installed: peers re-read the same bundle file every SC_WATCH_MS.
#define SC_NEW_ROOT_GRACE_MS (3 * SC_WATCH_MS)

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

    // --control-plane: certificates from the CA.
    struct cc_channel *ch;
    struct sc_identity *identity;
    struct sc_proxy_config cfg;
    const char *listen_arg;
    const char *target_arg;
    const char *admin_arg;
    struct sockaddr_storage admin_sa;
    bool have_admin;
    int rc; // exit code
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
    return a->exists == b->exists && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
           a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

static void snapshot_ids(struct tunnel *t, struct file_id ids[3])
{
    memset(ids, 0, 3 * sizeof(ids[0]));
    if (t->cert_file != NULL) {
        file_id_get(t->cert_file, &ids[0]);
    }
    if (t->key_file != NULL) {
        file_id_get(t->key_file, &ids[1]);
    }
    file_id_get(t->trust_file, &ids[2]);
}

// read_file reads |path| whole (NUL-terminated). Returns NULL with |err| set.
static char *read_file(const char *path, size_t *len, char *err, size_t err_cap)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0;
    if (f == NULL) {
        snprintf(err, err_cap, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap == 0 ? 8192 : cap * 2;
            if (cap > (64u << 20)) {
                snprintf(err, err_cap, "%s: larger than 64 MiB", path);
                goto out_fail;
            }
            char *nb = realloc(buf, cap);
            if (nb == NULL) {
                snprintf(err, err_cap, "out of memory");
                goto out_fail;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) {
            break;
        }
    }
    if (ferror(f)) {
        snprintf(err, err_cap, "cannot read %s: %s", path, strerror(errno));
        goto out_fail;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
out_fail:
    fclose(f);
    free(buf);
    return NULL;
}

// reload_trust gives the identity manager the bundle file's current content
// (control-plane mode); on failure the bundle in force stays.
static void reload_trust(struct tunnel *t, const char *why)
{
    char err[512];
    size_t len = 0;
    char *pem = read_file(t->trust_file, &len, err, sizeof(err));
    if (pem == NULL || sc_identity_set_trust_bundle(t->identity, pem, len, err, sizeof(err)) != 0) {
        sc_error("tls.trust_reload_failed",
                 "trigger=%s file=%s error=%s (keeping the trust bundle in force)", why,
                 t->trust_file, err);
    }
    free(pem);
}

// reload builds a new snapshot from the files; on success new connections use
// it, on failure the one in force stays and the error is logged.
static void reload(struct tunnel *t, const char *why)
{
    char err[512];
    if (t->identity != NULL) {
        reload_trust(t, why);
        return;
    }
    SSL_CTX *ctx =
        sc_tls_ctx_new_files(&t->opts, t->cert_file, t->key_file, t->trust_file, err, sizeof(err));
    if (ctx == NULL) {
        sc_error("tls.reload_failed", "trigger=%s error=%s (keeping the certificate in force)", why,
                 err);
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
    if (t->identity != NULL) {
        sc_identity_renew_now(t->identity);
    }
}

static void on_admin_stopped(void *arg)
{
}

// stop_main closes everything the main loop holds so that uv_run returns.
static void stop_main(struct tunnel *t)
{
    sc_admin_stop(t->admin, on_admin_stopped, NULL);
    t->admin = NULL;
    uv_close((uv_handle_t *)&t->sigterm, NULL);
    uv_close((uv_handle_t *)&t->sigint, NULL);
    uv_close((uv_handle_t *)&t->sighup, NULL);
    uv_close((uv_handle_t *)&t->watch, NULL);
    if (t->identity != NULL) {
        sc_identity_free(t->identity);
        t->identity = NULL;
    }
    cc_channel_free(t->ch); // cancels a CA call in flight
    t->ch = NULL;
}

static void on_proxy_done(struct sc_proxy *p, void *arg)
{
    struct tunnel *t = arg;
    sc_info("sidecar.stopped", "reason=drained");
    stop_main(t);
}

static void start_drain(struct tunnel *t, const char *why)
{
    if (t->draining) {
        return;
    }
    t->draining = true;
    if (t->proxy == NULL) {
        // Still waiting for the first certificate: nothing to drain.
        sc_info("sidecar.stopped", "reason=%s before_first_certificate=true", why);
        stop_main(t);
        return;
    }
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
    if (t->identity != NULL && !sc_identity_ready(t->identity)) {
        return false; // no valid certificate (not yet, or expired)
    }
    return !t->draining;
}

static void admin_certs(void *ctx, struct sc_admin_buf *out)
{
    struct tunnel *t = ctx;
    if (t->identity != NULL) {
        sc_identity_certs_json(t->identity, out);
    } else {
        sc_admin_buf_printf(out, "{}");
    }
}

static void admin_metrics(void *ctx, struct sc_admin_buf *out)
{
    struct tunnel *t = ctx;
    if (t->identity != NULL) {
        sc_identity_metrics(t->identity, out);
    }
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
    fprintf(f,
            "usage: seam-sidecar tunnel inbound|outbound --listen HOST:PORT --target HOST:PORT\n"
            "         (--cert F --key F --trust F\n"
            "          | --control-plane HOST:PORT --control-plane-trust F --token-file F\n"
            "            (--spiffe-id ID | --trust-domain D --namespace NS --service-account SA)\n"
            "            [--cert-ttl DURATION] [--trust F])\n"
            "         (--peer-id ID | --allow ID_OR_PREFIX/* ...)\n"
            "\n"
            "  outbound: accept plain TCP, connect with mTLS; the server must present --peer-id.\n"
            "  inbound:  accept mTLS (client certificate required), check --allow, connect plain.\n"
            "  Certificates come from PEM files (--cert/--key, reloaded when they change) or from\n"
            "  the control plane's CA (--control-plane: renewed before expiry; the listener\n"
            "  starts after the first certificate; trust bundle from --trust, else from\n"
            "  --control-plane-trust, reloaded when the file changes).\n"
            "\nflags:\n");
    sc_flags_usage(f, flags, n);
}

// start_serving starts the workers with |ctx|, the admin server, and logs
// readiness. Sets t->rc = 1 and starts a drain on failure.
static void start_serving(struct tunnel *t, SSL_CTX *ctx)
{
    int r = sc_proxy_start(&t->cfg, ctx, &t->loop, on_proxy_done, t, &t->proxy);
    if (r != 0) {
        fprintf(stderr, "seam-sidecar tunnel: cannot listen on %s: %s\n", t->listen_arg,
                uv_strerror(r));
        sc_error("sidecar.listen_failed", "listen=%s error=%s", t->listen_arg, uv_strerror(r));
        t->proxy = NULL;
        t->rc = 1;
        start_drain(t, "startup_error");
        return;
    }
    if (t->identity != NULL && sc_identity_bind_proxy(t->identity, t->proxy, &t->opts) != 0) {
        fprintf(stderr, "seam-sidecar tunnel: out of memory\n");
        t->rc = 1;
        start_drain(t, "startup_error");
        return;
    }
    if (t->have_admin) {
        struct sc_admin_hooks hooks = {
            .ctx = t,
            .num_workers = sc_proxy_num_workers(t->proxy),
            .worker_stats = sc_proxy_worker_stats(t->proxy),
            .ready = admin_ready,
            .drain = admin_drain,
            .quit = admin_quit,
        };
        if (t->identity != NULL) {
            hooks.certs_json = admin_certs;
            hooks.extra_metrics = admin_metrics;
        } else {
            hooks.cert_path = t->cert_file;
            hooks.trust_path = t->trust_file;
        }
        r = sc_admin_start(&t->loop, (struct sockaddr *)&t->admin_sa, &hooks, &t->admin);
        if (r != 0) {
            // The workers are running: drain them (nothing is connected yet).
            fprintf(stderr, "seam-sidecar tunnel: cannot start admin on %s: %s\n", t->admin_arg,
                    uv_strerror(r));
            t->rc = 1;
            start_drain(t, "startup_error");
            return;
        }
    }
    char la[64];
    struct sockaddr_storage bound = t->cfg.listen;
    if (bound.ss_family == AF_INET6) {
        ((struct sockaddr_in6 *)&bound)->sin6_port =
            htons((uint16_t)sc_proxy_listen_port(t->proxy));
    } else {
        ((struct sockaddr_in *)&bound)->sin_port = htons((uint16_t)sc_proxy_listen_port(t->proxy));
    }
    char id[SC_SPIFFE_ID_MAX + 1] = "-";
    sc_tls_ctx_leaf_id(ctx, id, sizeof(id));
    sc_info("sidecar.ready", "mode=tunnel dir=%s listen=%s workers=%d target=%s id=%s source=%s",
            t->cfg.dir == SC_DIR_INBOUND ? "inbound" : "outbound",
            sc_format_addr((struct sockaddr *)&bound, la, sizeof(la)), t->cfg.num_workers,
            t->target_arg, id, t->identity != NULL ? "control-plane" : "files");
}

// on_identity starts serving on the first certificate; later certificates
// and bundles reach the workers through sc_identity_bind_proxy.
static void on_identity(struct sc_identity *id, enum sc_identity_event ev, void *arg)
{
    struct tunnel *t = arg;
    if (ev != SC_IDENTITY_CERT || t->proxy != NULL || t->draining) {
        return;
    }
    char err[512];
    SSL_CTX *ctx = sc_identity_tls_ctx_new(id, &t->opts, err, sizeof(err));
    if (ctx == NULL) {
        sc_error("tls.snapshot_failed", "id=%s error=%s (waiting for the next certificate)",
                 sc_identity_spiffe_id(id), err);
        return;
    }
    start_serving(t, ctx);
    SSL_CTX_free(ctx);
}

// resolve_identity builds our SPIFFE ID from --spiffe-id or the three parts
// (as `certify` does). Returns 0 or prints the problem and returns -1.
static int resolve_identity(const char *spiffe_id, const char *td, const char *ns, const char *sa,
                            char *out, size_t cap)
{
    const char *why = NULL;
    if (spiffe_id != NULL) {
        if (td != NULL || ns != NULL || sa != NULL) {
            fprintf(stderr, "seam-sidecar tunnel: give --spiffe-id or "
                            "--trust-domain/--namespace/--service-account, not both\n");
            return -1;
        }
        snprintf(out, cap, "%s", spiffe_id);
    } else if (td == NULL && ns == NULL && sa == NULL) {
        fprintf(stderr, "seam-sidecar tunnel: --control-plane needs our identity: --spiffe-id ID "
                        "or --trust-domain D --namespace NS --service-account SA\n");
        return -1;
    } else if (td == NULL || ns == NULL || sa == NULL) {
        fprintf(stderr, "seam-sidecar tunnel: --trust-domain, --namespace and --service-account "
                        "go together\n");
        return -1;
    } else {
        snprintf(out, cap, "spiffe://%s/ns/%s/sa/%s", td, ns, sa);
    }
    if (!sc_spiffe_id_valid(out, strlen(out), &why)) {
        fprintf(stderr, "seam-sidecar tunnel: identity \"%s\" is not a SPIFFE ID: %s\n", out,
                why ? why : "invalid");
        return -1;
    }
    return 0;
}

int sc_cmd_tunnel(int argc, char **argv)
{
    struct tunnel *t = calloc(1, sizeof(*t));
    const char *listen = NULL, *target = NULL, *peer_id = NULL, *sni = NULL, *admin = NULL;
    const char *log_level = "info", *log_format = "text";
    const char *cp = NULL, *cp_trust = NULL, *cp_name = NULL, *token_file = NULL;
    const char *spiffe_id = NULL, *td = NULL, *ns = NULL, *sa = NULL;
    struct sc_strlist allow = {0};
    int64_t workers = 2;
    int64_t busy_poll_us = 0;
    const char *loopback_cc = "auto";
    struct sc_tcp_cc_choice cc_choice;
    uint64_t connect_ms = 10000, hs_ms = 10000, idle_ms = 3600000, drain_ms = 25000;
    uint64_t cert_ttl_ms = 0, max_age_ms = 0;
    bool tls12 = false;
    bool no_resume = false;
    bool mux = false;
    int64_t mux_sessions = 0; // not given: SC_MUX_SESSIONS_DEFAULT
    struct sc_limits limits;
    struct sc_flag limit_flags[SC_LIMITS_NUM_FLAGS];
    sc_limits_defaults(&limits);
    sc_limits_flags(&limits, limit_flags); // --max-connections, --max-buffer-memory
    // clang-format off: one flag a line
    struct sc_flag flags[] = {
        {.name = "listen",
         .type = SC_FLAG_STRING,
         .out = &listen,
         .help = "address to accept on (HOST:PORT)",
         .required = true},
        {.name = "target",
         .type = SC_FLAG_STRING,
         .out = &target,
         .help = "address to connect to (HOST:PORT)",
         .required = true},
        {.name = "cert",
         .type = SC_FLAG_STRING,
         .out = &t->cert_file,
         .help = "PEM certificate chain, leaf first (file certificates)"},
        {.name = "key",
         .type = SC_FLAG_STRING,
         .out = &t->key_file,
         .help = "PEM private key of the leaf (file certificates)"},
        {.name = "trust",
         .type = SC_FLAG_STRING,
         .out = &t->trust_file,
         .help = "PEM trust bundle (CA certificates); with --control-plane optional"},
        {.name = "control-plane",
         .type = SC_FLAG_STRING,
         .out = &cp,
         .help = "take certificates from this control plane's CA (HOST:PORT)"},
        {.name = "control-plane-trust",
         .type = SC_FLAG_STRING,
         .out = &cp_trust,
         .help = "PEM root(s) of the control plane's TLS certificate"},
        {.name = "control-plane-name",
         .type = SC_FLAG_STRING,
         .out = &cp_name,
         .help = "name checked in the control plane's certificate (default: its host)"},
        {.name = "token-file",
         .type = SC_FLAG_STRING,
         .out = &token_file,
         .help = "bearer token file for the CA (re-read per call)"},
        {.name = "spiffe-id",
         .type = SC_FLAG_STRING,
         .out = &spiffe_id,
         .help = "our SPIFFE ID (control plane mode)"},
        {.name = "trust-domain",
         .type = SC_FLAG_STRING,
         .out = &td,
         .help = "trust domain (with --namespace and --service-account)"},
        {.name = "namespace", .type = SC_FLAG_STRING, .out = &ns, .help = "Kubernetes namespace"},
        {.name = "service-account",
         .type = SC_FLAG_STRING,
         .out = &sa,
         .help = "Kubernetes service account"},
        {.name = "cert-ttl",
         .type = SC_FLAG_DURATION,
         .out = &cert_ttl_ms,
         .help = "requested certificate lifetime (default: the CA's)"},
        {.name = "peer-id",
         .type = SC_FLAG_STRING,
         .out = &peer_id,
         .help = "outbound: SPIFFE ID the server must present"},
        {.name = "allow",
         .type = SC_FLAG_LIST,
         .out = &allow,
         .help = "inbound: allowed client ID or prefix/* (repeatable)"},
        {.name = "workers",
         .type = SC_FLAG_INT,
         .out = &workers,
         .help = "worker threads (default 2)",
         .min = 1,
         .max = 256},
        {.name = "connect-timeout",
         .type = SC_FLAG_DURATION,
         .out = &connect_ms,
         .help = "upstream connect timeout (10s)"},
        {.name = "handshake-timeout",
         .type = SC_FLAG_DURATION,
         .out = &hs_ms,
         .help = "TLS handshake timeout (10s)"},
        {.name = "idle-timeout",
         .type = SC_FLAG_DURATION,
         .out = &idle_ms,
         .help = "close after no bytes for this long (1h)"},
        {.name = "max-connection-age",
         .type = SC_FLAG_DURATION,
         .out = &max_age_ms,
         .help =
             "end connections older than this gracefully (half-close, then close; default off)"},
        {.name = "drain-timeout",
         .type = SC_FLAG_DURATION,
         .out = &drain_ms,
         .help = "SIGTERM grace period (25s)"},
        {.name = "busy-poll-us",
         .type = SC_FLAG_INT,
         .out = &busy_poll_us,
         .help = "wait for an answer this many microseconds polling before sleeping (0: off; lower "
                 "latency for CPU)",
         .min = 0,
         .max = 100000},
        {.name = "loopback-cc",
         .type = SC_FLAG_STRING,
         .out = &loopback_cc,
         .help = "TCP congestion control of the sockets to this host: auto (reno if the system "
                 "default paces, i.e. bbr), off, or a name"},
        {.name = "log-level",
         .type = SC_FLAG_STRING,
         .out = &log_level,
         .help = "debug|info|warn|error (info)"},
        {.name = "log-format",
         .type = SC_FLAG_STRING,
         .out = &log_format,
         .help = "text|json (text)"},
        {.name = "admin",
         .type = SC_FLAG_STRING,
         .out = &admin,
         .help = "admin/metrics server address (HOST:PORT)"},
        {.name = "sni",
         .type = SC_FLAG_STRING,
         .out = &sni,
         .help = "outbound: TLS server name to send"},
        {.name = "allow-tls12",
         .type = SC_FLAG_BOOL,
         .out = &tls12,
         .help = "also accept TLS 1.2 (default: TLS 1.3 only)"},
        {.name = "mux",
         .type = SC_FLAG_BOOL,
         .out = &mux,
         .help = "outbound: carry all connections as streams of a few long-lived mTLS sessions "
                 "(seam-mux; the inbound accepts it always)"},
        {.name = "mux-sessions",
         .type = SC_FLAG_INT,
         .out = &mux_sessions,
         .help = "outbound, --mux: sessions at most; a new connection avoids a session carrying a "
                 "bulk stream by taking or opening another (2; 1: one session)",
         .min = 1,
         .max = SC_MUX_SESSIONS_MAX},
        {.name = "no-tls-resumption",
         .type = SC_FLAG_BOOL,
         .out = &no_resume,
         .help =
             "full handshakes only: no session tickets issued or kept (default: resumption on)"},
        limit_flags[0],
        limit_flags[1],
    };
    // clang-format on
    size_t nflags = sizeof(flags) / sizeof(flags[0]);
    char err[512];
    char my_id[SC_SPIFFE_ID_MAX + 1];
    const char *why = NULL;
    int rc = 2;
    struct sockaddr_storage listen_sa, target_sa;
    enum sc_dir dir;
    SSL_CTX *ctx = NULL;
    char *trust_pem = NULL;
    size_t trust_len = 0;

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
    sc_limits_set(&limits);
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
    if (cp == NULL) {
        if (cp_trust != NULL || token_file != NULL || spiffe_id != NULL || td != NULL ||
            ns != NULL || sa != NULL || cert_ttl_ms != 0 || cp_name != NULL) {
            fprintf(stderr, "seam-sidecar tunnel: --control-plane-trust, --control-plane-name, "
                            "--token-file, --spiffe-id, --trust-domain, --namespace, "
                            "--service-account and --cert-ttl need --control-plane\n");
            goto out;
        }
        // File certificates: all three files.
        const char *missing = t->cert_file == NULL    ? "--cert (or SEAM_CERT)"
                              : t->key_file == NULL   ? "--key (or SEAM_KEY)"
                              : t->trust_file == NULL ? "--trust (or SEAM_TRUST)"
                                                      : NULL;
        if (missing != NULL) {
            fprintf(stderr,
                    "seam-sidecar tunnel %s: missing required flag %s: give --cert, --key "
                    "and --trust, or --control-plane to take certificates from its CA\n",
                    argv[0], missing);
            goto out;
        }
    } else {
        if (t->cert_file != NULL || t->key_file != NULL) {
            fprintf(stderr, "seam-sidecar tunnel: --cert/--key and --control-plane exclude each "
                            "other (the control plane's CA issues the certificate)\n");
            goto out;
        }
        if (cp_trust == NULL) {
            fprintf(stderr, "seam-sidecar tunnel: --control-plane needs --control-plane-trust "
                            "(PEM root(s) of the control plane's TLS certificate)\n");
            goto out;
        }
        if (token_file == NULL) {
            fprintf(stderr, "seam-sidecar tunnel: --control-plane needs --token-file (the "
                            "bearer token the CA authenticates us with)\n");
            goto out;
        }
        if (resolve_identity(spiffe_id, td, ns, sa, my_id, sizeof(my_id)) != 0) {
            goto out;
        }
        if (cert_ttl_ms != 0 && cert_ttl_ms < 1000) {
            fprintf(stderr, "seam-sidecar tunnel: --cert-ttl must be at least 1s\n");
            goto out;
        }
        if (t->trust_file == NULL) {
            t->trust_file = cp_trust;
        }
        trust_pem = read_file(t->trust_file, &trust_len, err, sizeof(err));
        if (trust_pem == NULL) {
            fprintf(stderr, "seam-sidecar tunnel: trust bundle: %s\n", err);
            goto out;
        }
    }
    if (sc_parse_hostport(listen, true, &listen_sa, &why) != 0) {
        fprintf(stderr, "seam-sidecar tunnel: --listen \"%s\": %s\n", listen,
                why ? why : "invalid");
        goto out;
    }
    if (sc_parse_hostport(target, false, &target_sa, &why) != 0) {
        fprintf(stderr, "seam-sidecar tunnel: --target \"%s\": %s\n", target,
                why ? why : "invalid");
        goto out;
    }
    if (admin != NULL && sc_parse_hostport(admin, true, &t->admin_sa, &why) != 0) {
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
                fprintf(stderr,
                        "seam-sidecar tunnel: --allow \"%s\" is not a SPIFFE ID or "
                        "prefix/*: %s\n",
                        allow.items[i], why ? why : "invalid");
                goto out;
            }
        }
        if (peer_id != NULL) {
            fprintf(stderr, "seam-sidecar tunnel inbound: --peer-id is for outbound tunnels\n");
            goto out;
        }
        if (mux) {
            fprintf(stderr, "seam-sidecar tunnel inbound: --mux is for outbound tunnels (the "
                            "inbound accepts seam-mux sessions without it)\n");
            goto out;
        }
    }
    if (mux_sessions != 0 && !mux) {
        fprintf(stderr, "seam-sidecar tunnel %s: --mux-sessions needs --mux (outbound)\n", argv[0]);
        goto out;
    }
    if (sc_tcp_cc_choose(loopback_cc, &cc_choice, err, sizeof(err)) != 0) {
        fprintf(stderr, "seam-sidecar tunnel: --loopback-cc \"%s\": %s\n", loopback_cc, err);
        goto out;
    }
    sc_log_setup((enum sc_log_level)level,
                 strcmp(log_format, "json") == 0 ? SC_LOG_JSON : SC_LOG_TEXT);
    sc_tcp_cc_log(&cc_choice);

    t->allow.num_patterns = allow.num;
    t->allow.patterns = allow.items;
    t->opts.is_server = dir == SC_DIR_INBOUND;
    t->opts.accept_mux = dir == SC_DIR_INBOUND; // only where forward.c hands it to mux.c
    t->opts.peer_id = peer_id;
    t->opts.allow = dir == SC_DIR_INBOUND ? &t->allow : NULL;
    t->opts.allow_tls12 = tls12;
    t->opts.no_resumption = no_resume;
    t->drain_ms = drain_ms;
    t->listen_arg = listen;
    t->target_arg = target;
    t->admin_arg = admin;
    t->have_admin = admin != NULL;
    t->cfg = (struct sc_proxy_config){
        .dir = dir,
        .listen = listen_sa,
        .target = target_sa,
        .num_workers = (int)workers,
        .busy_poll_us = (uint64_t)busy_poll_us,
        .connect_timeout_ms = connect_ms,
        .handshake_timeout_ms = hs_ms,
        .idle_timeout_ms = idle_ms,
        .sni = sni,
        .max_connection_age_ms = max_age_ms,
        .mux = mux,
        .mux_sessions = (uint32_t)mux_sessions,
    };
    memcpy(t->cfg.loopback_cc, cc_choice.cc, sizeof(cc_choice.cc));
    snapshot_ids(t, t->ids);
    if (cp == NULL) {
        // The first snapshot: a bad file is fatal at start (nothing to keep).
        ctx = sc_tls_ctx_new_files(&t->opts, t->cert_file, t->key_file, t->trust_file, err,
                                   sizeof(err));
        if (ctx == NULL) {
            fprintf(stderr, "seam-sidecar tunnel: %s\n", err);
            rc = 1;
            goto out;
        }
    }

    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&t->loop);
    if (cp != NULL) {
        struct cc_channel_config ccfg = {
            .target = cp,
            .authority = cp_name,
            .trust_file = cp_trust,
            .token_file = token_file,
            .connect_timeout_ms = connect_ms,
        };
        t->ch = cc_channel_new(&t->loop, &ccfg, err, sizeof(err));
        if (t->ch == NULL) {
            fprintf(stderr, "seam-sidecar tunnel: --control-plane %s: %s\n", cp, err);
            rc = 2;
            goto out_loop;
        }
        cc_channel_set_debug_name(t->ch, "ca");
        struct sc_identity_config icfg = {
            .loop = &t->loop,
            .ca_channel = t->ch,
            .spiffe_id = my_id,
            .cert_ttl_s = (int64_t)((cert_ttl_ms + 999) / 1000),
            .new_root_grace_ms = SC_NEW_ROOT_GRACE_MS,
            .trust_pem = trust_pem,
            .trust_len = trust_len,
        };
        t->identity = sc_identity_new(&icfg, err, sizeof(err));
        if (t->identity == NULL || sc_identity_add_listener(t->identity, on_identity, t) != 0) {
            fprintf(stderr, "seam-sidecar tunnel: %s\n",
                    t->identity == NULL ? err : "out of memory");
            rc = 2;
            goto out_loop;
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
    if (t->identity != NULL) {
        sc_info("sidecar.waiting_for_certificate", "mode=tunnel dir=%s id=%s control_plane=%s",
                dir == SC_DIR_INBOUND ? "inbound" : "outbound", my_id, cp);
        sc_identity_start(t->identity);
    } else {
        start_serving(t, ctx);
    }
    uv_run(&t->loop, UV_RUN_DEFAULT);
    sc_proxy_free(t->proxy);
    rc = t->rc;

out_loop:
    if (t->identity != NULL || t->ch != NULL) {
        // Start-up failed after the channel was made.
        sc_identity_free(t->identity);
        cc_channel_free(t->ch);
        uv_run(&t->loop, UV_RUN_DEFAULT);
    }
    if (uv_loop_close(&t->loop) != 0) {
        uv_run(&t->loop, UV_RUN_DEFAULT);
        uv_loop_close(&t->loop);
    }
out:
    SSL_CTX_free(ctx);
    free(trust_pem);
    sc_strlist_cleanup(&allow);
    free(t);
    return rc;
}
