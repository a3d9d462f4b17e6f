// certify.c — `seam-sidecar certify` and `seam-sidecar config-watch`: thin
// command-line wrappers around the control-client (cc/ca_client.h,
// cc/config_client.h) on a private loop. They are how tests reach the CA and
// config clients alone, and how an operator checks a control plane.
#include "sc/certify.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/mem.h>
#include <openssl/pem.h>
#include <uv.h>

#include "cc/ca_client.h"
#include "cc/config_client.h"
#include "sc/flags.h"
#include "sc/log.h"
#include "sc/pem.h"
#include "sc/spiffe.h"

// Flags shared by both commands.
struct cp_flags {
    const char *control_plane;
    const char *trust;
    const char *token_file;
    const char *server_name;
    const char *spiffe_id;
    const char *trust_domain;
    const char *ns;
    const char *sa;
    const char *log_level;
    uint64_t timeout_ms;
    char id_buf[SC_SPIFFE_ID_MAX + 1];
};

// resolve_identity builds the SPIFFE ID from --spiffe-id or the three parts.
static int resolve_identity(struct cp_flags *f, const char *cmd, bool required)
{
    const char *why = NULL;
    if (f->spiffe_id != NULL) {
        if (f->trust_domain != NULL || f->ns != NULL || f->sa != NULL) {
            fprintf(
                stderr,
                "%s: give --spiffe-id or --trust-domain/--namespace/--service-account, not both\n",
                cmd);
            return -1;
        }
        if (!sc_spiffe_id_valid(f->spiffe_id, strlen(f->spiffe_id), &why)) {
            fprintf(stderr, "%s: bad --spiffe-id '%s': %s\n", cmd, f->spiffe_id,
                    why ? why : "invalid");
            return -1;
        }
        return 0;
    }
    if (f->trust_domain == NULL && f->ns == NULL && f->sa == NULL) {
        if (required) {
            fprintf(stderr,
                    "%s: missing identity: --spiffe-id ID or --trust-domain D --namespace NS "
                    "--service-account SA\n",
                    cmd);
            return -1;
        }
        return 0;
    }
    if (f->trust_domain == NULL || f->ns == NULL || f->sa == NULL) {
        fprintf(stderr, "%s: --trust-domain, --namespace and --service-account go together\n", cmd);
        return -1;
    }
    snprintf(f->id_buf, sizeof(f->id_buf), "spiffe://%s/ns/%s/sa/%s", f->trust_domain, f->ns,
             f->sa);
    if (!sc_spiffe_id_valid(f->id_buf, strlen(f->id_buf), &why)) {
        fprintf(stderr, "%s: identity '%s' is not a valid SPIFFE ID: %s\n", cmd, f->id_buf,
                why ? why : "invalid");
        return -1;
    }
    f->spiffe_id = f->id_buf;
    return 0;
}

static int setup_log(const struct cp_flags *f, const char *cmd)
{
    int lvl = sc_log_parse_level(f->log_level);
    if (lvl < 0) {
        fprintf(stderr, "%s: bad --log-level '%s' (debug|info|warn|error)\n", cmd, f->log_level);
        return -1;
    }
    sc_log_setup((enum sc_log_level)lvl, SC_LOG_TEXT);
    return 0;
}

// make_channel opens the control-plane channel both commands talk over, named
// |debug_name| in the logs.
static struct cc_channel *make_channel(uv_loop_t *loop, const struct cp_flags *f, const char *cmd,
                                       uint64_t keepalive_ms, const char *debug_name)
{
    char err[512];
    struct cc_channel_config cfg = {
        .target = f->control_plane,
        .authority = f->server_name,
        .trust_file = f->trust,
        .token_file = f->token_file,
        .connect_timeout_ms = f->timeout_ms,
        .keepalive_ms = keepalive_ms,
    };
    struct cc_channel *ch = cc_channel_new(loop, &cfg, err, sizeof(err));
    if (ch == NULL) {
        fprintf(stderr, "%s: %s\n", cmd, err);
        return NULL;
    }
    cc_channel_set_debug_name(ch, debug_name);
    return ch;
}

// The flags a command adds to the shared ones, at most this many.
#define CP_OWN_FLAGS_MAX 8

// parse_cp_flags parses the arguments of command |cmd| (argv[0] skipped if it
// is the subcommand name) against the shared control-plane and identity flags
// (into |f|), the command's own flags |own| and --timeout / --log-level, in
// that order. It then resolves the identity (required if |id_required|) and
// sets up logging. Returns -1 to go on, or the exit code: 0 after printing
// |usage| and the flag list for --help, 2 after a message on bad flags.
static int parse_cp_flags(const char *cmd, const char *usage, struct cp_flags *f,
                          const struct sc_flag *own, size_t num_own, const char *timeout_help,
                          bool id_required, int argc, char **argv)
{
    struct sc_flag flags[8 + CP_OWN_FLAGS_MAX + 2] = {
        {.name = "control-plane",
         .type = SC_FLAG_STRING,
         .out = &f->control_plane,
         .help = "control plane HOST:PORT",
         .required = true},
        {.name = "control-plane-trust",
         .type = SC_FLAG_STRING,
         .out = &f->trust,
         .help = "PEM root(s) the control plane's TLS certificate must chain to",
         .required = true},
        {.name = "control-plane-name",
         .type = SC_FLAG_STRING,
         .out = &f->server_name,
         .help = "name checked in the control plane's certificate and sent as SNI (default: host "
                 "of --control-plane)"},
        {.name = "token-file",
         .type = SC_FLAG_STRING,
         .out = &f->token_file,
         .help = "bearer token file (re-read per call)"},
        {.name = "spiffe-id",
         .type = SC_FLAG_STRING,
         .out = &f->spiffe_id,
         .help = "our SPIFFE ID"},
        {.name = "trust-domain",
         .type = SC_FLAG_STRING,
         .out = &f->trust_domain,
         .help = "trust domain (with --namespace and --service-account)"},
        {.name = "namespace",
         .type = SC_FLAG_STRING,
         .out = &f->ns,
         .help = "Kubernetes namespace"},
        {.name = "service-account",
         .type = SC_FLAG_STRING,
         .out = &f->sa,
         .help = "Kubernetes service account"},
    };
    size_t n = 8;
    if (num_own > CP_OWN_FLAGS_MAX) {
        abort(); // a programming error, not input
    }
    memcpy(&flags[n], own, num_own * sizeof(*own));
    n += num_own;
    flags[n++] = (struct sc_flag){
        .name = "timeout", .type = SC_FLAG_DURATION, .out = &f->timeout_ms, .help = timeout_help};
    flags[n++] = (struct sc_flag){.name = "log-level",
                                  .type = SC_FLAG_STRING,
                                  .out = &f->log_level,
                                  .help = "debug|info|warn|error (default warn)"};

    char err[512];
    if (argc > 0 && argv[0][0] != '-') {
        argc--;
        argv++;
    }
    int prc = sc_flags_parse(flags, n, argc, argv, err, sizeof(err));
    if (prc == 1) {
        printf("%s\n", usage);
        sc_flags_usage(stdout, flags, n);
        return 0;
    }
    if (prc < 0) {
        fprintf(stderr, "%s: %s (see --help)\n", cmd, err);
        return 2;
    }
    if (resolve_identity(f, cmd, id_required) != 0 || setup_log(f, cmd) != 0) {
        return 2;
    }
    return -1;
}

// close_loop closes every handle left on |loop| and the loop itself.
static void on_walk_close(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h)) {
        uv_close(h, NULL);
    }
}

static void close_loop(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    uv_walk(loop, on_walk_close, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
}

/* ---- certify -------------------------------------------------------------- */

struct certify_state {
    uv_loop_t *loop;
    const char *out_dir;
    int exit_code;
};

// write_file writes |len| bytes to DIR/NAME with mode 0600 (atomic rename).
static int write_file(const char *dir, const char *name, const char *data, size_t len)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "certify: cannot write %s: %s\n", tmp, strerror(errno));
        return -1;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            fprintf(stderr, "certify: cannot write %s: %s\n", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            return -1;
        }
        off += (size_t)n;
    }
    if (fchmod(fd, 0600) != 0 || fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
        fprintf(stderr, "certify: cannot write %s: %s\n", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int write_out_dir(const char *dir, struct cc_ca_result *res)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "certify: cannot create --out-dir %s: %s\n", dir, strerror(errno));
        return -1;
    }
    size_t n = sk_X509_num(res->chain);
    // cert.pem is what tunnel --cert takes: the leaf and intermediates. The
    // last element is the root when the chain has more than one certificate.
    size_t cert_end = n > 1 ? n - 1 : n;
    char *cert = sc_pem_certs(res->chain, 0, cert_end);
    char *root = sc_pem_certs(res->chain, n - 1, n);
    char *key = cc_ca_key_pem(res->key);
    int rc = -1;
    if (cert == NULL || root == NULL || key == NULL) {
        fprintf(stderr, "certify: cannot encode the certificate or key\n");
        goto out_free;
    }
    if (write_file(dir, "key.pem", key, strlen(key)) != 0 ||
        write_file(dir, "cert.pem", cert, strlen(cert)) != 0 ||
        write_file(dir, "chain.pem", res->chain_pem, strlen(res->chain_pem)) != 0 ||
        write_file(dir, "root.pem", root, strlen(root)) != 0) {
        goto out_free;
    }
    rc = 0;

out_free:
    if (key != NULL) {
        OPENSSL_cleanse(key, strlen(key));
    }
    free(key);
    free(cert);
    free(root);
    return rc;
}

static void on_certified(struct cc_ca_result *res, void *arg)
{
    struct certify_state *st = arg;
    uv_stop(st->loop); // one shot: the open connection must not keep us running
    if (res->error != CC_CA_OK) {
        if (res->error == CC_CA_RPC) {
            fprintf(stderr, "certify: %s\n", res->message);
        } else {
            fprintf(stderr, "certify: issued certificate rejected (%s): %s\n",
                    cc_ca_error_name(res->error), res->message);
        }
        st->exit_code = 1;
        return;
    }
    char when[64];
    struct tm tm;
    gmtime_r(&res->not_after, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    printf("spiffe_id: %s\nserial: %s\nnot_after: %s\n", res->spiffe_id, res->serial, when);
    if (st->out_dir != NULL) {
        if (write_out_dir(st->out_dir, res) != 0) {
            st->exit_code = 1;
            return;
        }
        printf("written: %s/{cert,chain,root,key}.pem\n", st->out_dir);
    }
    fflush(stdout);
    st->exit_code = 0;
}

int sc_cmd_certify(int argc, char **argv)
{
    struct cp_flags f = {.log_level = "warn", .timeout_ms = 30000};
    uint64_t ttl_ms = 0;
    const char *out_dir = NULL;
    const struct sc_flag own[] = {
        {.name = "ttl",
         .type = SC_FLAG_DURATION,
         .out = &ttl_ms,
         .help = "requested certificate lifetime (default: the CA's)"},
        {.name = "out-dir",
         .type = SC_FLAG_STRING,
         .out = &out_dir,
         .help = "write cert.pem, chain.pem, root.pem and key.pem (0600) here"},
    };
    int rc =
        parse_cp_flags("certify",
                       "usage: seam-sidecar certify --control-plane HOST:PORT "
                       "--control-plane-trust FILE --token-file FILE (--spiffe-id ID | "
                       "--trust-domain D --namespace NS --service-account SA) [--ttl "
                       "DURATION] [--out-dir DIR]",
                       &f, own, sizeof(own) / sizeof(own[0]),
                       "deadline of the call and of connecting (default 30s)", true, argc, argv);
    if (rc >= 0) {
        return rc;
    }
    if (f.timeout_ms == 0) {
        fprintf(stderr, "certify: --timeout must be positive\n");
        return 2;
    }
    char err[512];
    X509_STORE *trust = cc_ca_load_trust(f.trust, err, sizeof(err));
    if (trust == NULL) {
        fprintf(stderr, "certify: %s\n", err);
        return 2;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct cc_channel *ch = make_channel(&loop, &f, "certify", 0, "ca");
    if (ch == NULL) {
        X509_STORE_free(trust);
        uv_loop_close(&loop);
        return 2;
    }
    struct certify_state st = {.loop = &loop, .out_dir = out_dir, .exit_code = 1};
    struct cc_ca_request req = {
        .spiffe_id = f.spiffe_id,
        .ttl_seconds = (int64_t)((ttl_ms + 999) / 1000),
        .timeout_ms = f.timeout_ms,
        .trust = trust,
    };
    if (cc_ca_certify(ch, &req, on_certified, &st) != 0) {
        fprintf(stderr, "certify: cannot create the key or CSR\n");
    } else {
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    cc_channel_free(ch);
    close_loop(&loop);
    X509_STORE_free(trust);
    return st.exit_code;
}

/* ---- config-watch --------------------------------------------------------- */

struct watch_state {
    uv_loop_t *loop;
    struct cc_channel *ch;
    struct cc_config_client *cc;
    struct sc_strlist reject;
    int64_t exit_after;
    int64_t events;
    uv_signal_t sigint, sigterm;
};

static void watch_stop(struct watch_state *w)
{
    cc_config_client_free(w->cc);
    w->cc = NULL;
    cc_channel_free(w->ch);
    w->ch = NULL;
    uv_close((uv_handle_t *)&w->sigint, NULL);
    uv_close((uv_handle_t *)&w->sigterm, NULL);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct watch_state *w = s->data;
    if (w->cc != NULL) {
        watch_stop(w);
    }
}

static int watch_apply(const Seam__V1__Snapshot *snap, const char *version, char *err,
                       size_t err_len, void *arg)
{
    struct watch_state *w = arg;
    for (size_t i = 0; i < w->reject.num; i++) {
        if (strcmp(w->reject.items[i], version) == 0) {
            snprintf(err, err_len, "version %s refused by --reject-version", version);
            return -1;
        }
    }
    printf("SNAPSHOT version=%s roots=%zu ports=%zu services=%zu policy=%d ttl=%lld\n", version,
           snap->trust_bundle->n_roots, snap->n_inbound_ports, snap->n_services,
           (int)snap->outbound_policy, (long long)snap->cert_ttl_seconds);
    fflush(stdout);
    return 0;
}

static void on_stop_timer_closed(uv_handle_t *h)
{
    free(h);
}

static void on_deferred_stop(uv_timer_t *t)
{
    struct watch_state *w = t->data;
    if (w->cc != NULL) {
        watch_stop(w);
    }
    uv_close((uv_handle_t *)t, on_stop_timer_closed);
}

static void watch_event(const char *event, const char *version, int status, const char *detail,
                        void *arg)
{
    struct watch_state *w = arg;
    if (strcmp(event, "ack") == 0) {
        printf("ACK version=%s\n", version);
    } else if (strcmp(event, "nack") == 0) {
        printf("NACK version=%s error=%s\n", version, detail);
    } else if (strcmp(event, "stream_end") == 0) {
        printf("STREAM_END status=%s message=%s\n", cc_grpc_status_name(status), detail);
    } else if (strcmp(event, "retry") == 0) {
        printf("RETRY ms=%s\n", detail);
    }
    fflush(stdout);
    w->events++;
    if (w->exit_after > 0 && w->events >= w->exit_after && w->cc != NULL) {
        // Not from inside the client's callback: stop on the next loop turn.
        uv_timer_t *t = malloc(sizeof(*t));
        if (t == NULL) {
            abort();
        }
        uv_timer_init(w->loop, t);
        t->data = w;
        uv_timer_start(t, on_deferred_stop, 0, 0);
        w->exit_after = 0;
    }
}

int sc_cmd_config_watch(int argc, char **argv)
{
    struct cp_flags f = {.log_level = "warn", .timeout_ms = 10000};
    struct watch_state w = {0};
    const char *cluster = NULL;
    uint64_t backoff_initial = 1000, backoff_max = 30000, keepalive = 0;
    const struct sc_flag own[] = {
        {.name = "cluster", .type = SC_FLAG_STRING, .out = &cluster, .help = "node cluster name"},
        {.name = "reject-version",
         .type = SC_FLAG_LIST,
         .out = &w.reject,
         .help = "NACK this version (repeatable; for tests)"},
        {.name = "exit-after",
         .type = SC_FLAG_INT,
         .out = &w.exit_after,
         .help = "exit after this many events",
         .required = false,
         .min = 0,
         .max = 1000000},
        {.name = "backoff-initial",
         .type = SC_FLAG_DURATION,
         .out = &backoff_initial,
         .help = "first reconnect delay (default 1s)"},
        {.name = "backoff-max",
         .type = SC_FLAG_DURATION,
         .out = &backoff_max,
         .help = "reconnect delay cap (default 30s)"},
        {.name = "keepalive",
         .type = SC_FLAG_DURATION,
         .out = &keepalive,
         .help = "PING after this much silence (default off)"},
    };
    int rc = parse_cp_flags("config-watch",
                            "usage: seam-sidecar config-watch --control-plane HOST:PORT "
                            "--control-plane-trust FILE [...]",
                            &f, own, sizeof(own) / sizeof(own[0]),
                            "connect + handshake timeout (default 10s)", false, argc, argv);
    if (rc >= 0) {
        sc_strlist_cleanup(&w.reject);
        return rc;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    w.loop = &loop;
    w.ch = make_channel(&loop, &f, "config-watch", keepalive, "config");
    if (w.ch == NULL) {
        uv_loop_close(&loop);
        sc_strlist_cleanup(&w.reject);
        return 2;
    }
    struct cc_config_opts o = {
        .node_id = f.spiffe_id,
        .cluster = cluster,
        .backoff_initial_ms = backoff_initial,
        .backoff_max_ms = backoff_max,
    };
    uv_signal_init(&loop, &w.sigint);
    uv_signal_init(&loop, &w.sigterm);
    w.sigint.data = w.sigterm.data = &w;
    uv_signal_start(&w.sigint, on_signal, SIGINT);
    uv_signal_start(&w.sigterm, on_signal, SIGTERM);
    w.cc = cc_config_client_new(w.ch, &o, watch_apply, watch_event, &w);
    uv_run(&loop, UV_RUN_DEFAULT);
    close_loop(&loop);
    sc_strlist_cleanup(&w.reject);
    return 0;
}
