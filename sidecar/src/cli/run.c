// run.c — `seam-sidecar run`: the mesh sidecar. Wiring only:
//   control plane channel (cc/grpc_client.h) -> config stream
//   (cc/config_client.h) -> struct sc_mesh_config snapshots -> the two
//   intercepting proxies' route snapshots (sc_mesh_router);
//   identity manager (sc/identity.h) -> certificates and the trust bundle
//   from the config -> TLS snapshots of both proxies;
//   admin server (/healthz/ready once a certificate AND a config are in
//   force, /config, /certs, control-plane metrics); SIGTERM drain.
// The listeners start once the sidecar is ready; before that an
// intercepted connection is refused by the kernel (nothing listens).
#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netinet/in.h>
#include <sys/prctl.h>
#include <unistd.h>
#include <uv.h>

#include "cc/config_client.h"
#include "cc/grpc_client.h"
#include "sc/admin.h"
#include "sc/flags.h"
#include "sc/identity.h"
#include "sc/limits.h"
#include "sc/log.h"
#include "sc/mesh.h"
#include "sc/parse.h"
#include "sc/proxy.h"
#include "sc/spiffe.h"
#include "sc/tcp_cc.h"
#include "sc/tls.h"

// drop_privileges runs the rest of the process as |uid|:|gid| with no
// supplementary groups when it was started as root. It is not optional:
// seam-init exempts only the proxy uid's traffic from capture, so a sidecar
// running as root would have its own upstream connections redirected back
// into itself. The capability bounding set is emptied and no_new_privs set
// first (what the pod spec's "drop ALL" and allowPrivilegeEscalation: false
// give); setuid() from root then clears the rest. Started as any
// other user it does nothing (the pod spec already chose the user). Returns
// 0, or -1 with a message naming the failing step.
static int drop_privileges(uid_t uid, gid_t gid)
{
    if (geteuid() != 0) {
        return 0;
    }
    if (uid == 0) {
        sc_warn("sidecar.running_as_root",
                "proxy-uid 0: not dropping root; seam-init's exemption of the proxy uid does not "
                "match this process, so never run it this way behind interception");
        return 0;
    }
    for (int cap = 0; prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
            fprintf(stderr,
                    "seam-sidecar run: cannot drop capability %d from the bounding set: %s\n", cap,
                    strerror(errno));
            return -1;
        }
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        fprintf(stderr, "seam-sidecar run: cannot set no_new_privs: %s\n", strerror(errno));
        return -1;
    }
    if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
        fprintf(stderr, "seam-sidecar run: cannot drop root to uid %u gid %u: %s\n", (unsigned)uid,
                (unsigned)gid, strerror(errno));
        return -1;
    }
    // Make sure there is no way back (a partial drop must not go unnoticed).
    if (setuid(0) == 0 || geteuid() != uid || getegid() != gid) {
        fprintf(stderr, "seam-sidecar run: root privileges still reachable after the drop\n");
        return -1;
    }
    sc_info("sidecar.privileges_dropped", "uid=%u gid=%u", (unsigned)uid, (unsigned)gid);
    return 0;
}

int sc_cmd_run(int argc, char **argv); // main.c declares it weak

struct run {
    uv_loop_t loop;
    uv_signal_t sigterm;
    uv_signal_t sigint;
    uv_signal_t sighup;
    struct cc_channel *ch;
    struct cc_config_client *cfgc;
    struct sc_identity *id;
    struct sc_mesh_config *cfg; // in force (main thread's reference)
    struct sc_proxy *proxy[2];  // [SC_DIR_INBOUND], [SC_DIR_OUTBOUND]
    int proxies_done;
    struct sc_admin *admin;
    struct sc_worker_stats **stats; // both proxies' workers, for the admin server
    int workers;
    uint64_t busy_poll_us;
    bool mux;                        // outbound: mTLS connections as streams of seam-mux sessions
    uint32_t mux_sessions;           // outbound: per destination at most, while they carry bulk
    char loopback_cc[SC_TCP_CC_MAX]; // sc_proxy_config.loopback_cc
    struct sc_tls_opts opts[2];
    struct sockaddr_storage listen[2];
    uint64_t connect_ms, hs_ms, idle_ms, drain_ms, detect_ms, max_age_ms;
    char spiffe_id[SC_SPIFFE_ID_MAX + 1];
    bool started;
    bool draining;
    bool stopped;
    int exit_code;
    // control-plane state for /metrics
    bool cp_connected;
    uint64_t acks, nacks, stream_ends;
    char nack_error[256];
};

static bool is_ready(const struct run *r)
{
    return r->started && !r->draining && r->id != NULL && sc_identity_ready(r->id);
}

static void on_proxy_done(struct sc_proxy *p, void *arg);

static int start_proxy(struct run *r, enum sc_dir dir, SSL_CTX *ctx)
{
    struct sc_proxy_config pc = {
        .dir = dir,
        .listen = r->listen[dir],
        .num_workers = r->workers,
        .connect_timeout_ms = r->connect_ms,
        .handshake_timeout_ms = r->hs_ms,
        .idle_timeout_ms = r->idle_ms,
        .router = &sc_mesh_router,
        .route_snap = r->cfg,
        .detect_timeout_ms = r->detect_ms,
        .max_connection_age_ms = r->max_age_ms,
        .busy_poll_us = r->busy_poll_us,
        .mux = r->mux && dir == SC_DIR_OUTBOUND,
        .mux_sessions = r->mux_sessions,
        // Outbound takes only the pod's own redirected connections.
        .clients_on_host = dir == SC_DIR_OUTBOUND,
    };
    memcpy(pc.loopback_cc, r->loopback_cc, sizeof(pc.loopback_cc));
    int rc = sc_proxy_start(&pc, ctx, &r->loop, on_proxy_done, r, &r->proxy[dir]);
    if (rc == UV_EAFNOSUPPORT && pc.listen.ss_family == AF_INET6) {
        // No IPv6 in this network namespace: IPv4 only.
        struct sockaddr_in *in = (struct sockaddr_in *)&pc.listen;
        uint16_t port = ((struct sockaddr_in6 *)&r->listen[dir])->sin6_port;
        memset(&pc.listen, 0, sizeof(pc.listen));
        in->sin_family = AF_INET;
        in->sin_port = port;
        rc = sc_proxy_start(&pc, ctx, &r->loop, on_proxy_done, r, &r->proxy[dir]);
    }
    if (rc != 0) {
        r->proxy[dir] = NULL;
        return rc;
    }
    struct sc_worker_stats **st = sc_proxy_worker_stats(r->proxy[dir]);
    for (int i = 0; i < r->workers; i++) {
        r->stats[(dir == SC_DIR_INBOUND ? 0 : r->workers) + i] = st[i];
    }
    return 0;
}

static void start_drain(struct run *r, const char *why);

// maybe_start starts both listeners once a certificate and a config are in force.
static void maybe_start(struct run *r)
{
    if (r->started || r->draining || r->cfg == NULL || r->id == NULL || !sc_identity_ready(r->id)) {
        return;
    }
    char err[512];
    SSL_CTX *ctx[2] = {NULL, NULL};
    for (int d = 0; d < 2; d++) {
        ctx[d] = sc_identity_tls_ctx_new(r->id, &r->opts[d], err, sizeof(err));
        if (ctx[d] == NULL) {
            sc_error("mesh.tls_failed", "dir=%s error=%s",
                     d == SC_DIR_INBOUND ? "inbound" : "outbound", err);
            goto out;
        }
    }
    for (int d = 0; d < 2; d++) {
        int rc = start_proxy(r, (enum sc_dir)d, ctx[d]);
        if (rc != 0) {
            char la[64];
            sc_error("mesh.listen_failed", "dir=%s listen=%s error=%s",
                     d == SC_DIR_INBOUND ? "inbound" : "outbound",
                     sc_format_addr((struct sockaddr *)&r->listen[d], la, sizeof(la)),
                     uv_strerror(rc));
            r->started = true; // what started is drained below
            r->exit_code = 1;
            start_drain(r, "listen_failed");
            goto out;
        }
        sc_identity_bind_proxy(r->id, r->proxy[d], &r->opts[d]);
    }
    r->started = true;
    for (int d = SC_DIR_OUTBOUND; d >= 0; d--) {
        char la[64];
        // mux: outbound on/off (--mux), inbound accept/refuse (--accept-mux).
        const char *mux = d == SC_DIR_INBOUND ? (r->opts[d].accept_mux ? "accept" : "refuse")
                                              : (r->mux ? "on" : "off");
        sc_info("sidecar.ready", "mode=mesh dir=%s listen=%s workers=%d id=%s config=%s mux=%s",
                d == SC_DIR_INBOUND ? "inbound" : "outbound",
                sc_format_addr((struct sockaddr *)&r->listen[d], la, sizeof(la)), r->workers,
                r->spiffe_id, r->cfg->version, mux);
    }
out:
    SSL_CTX_free(ctx[0]);
    SSL_CTX_free(ctx[1]);
}

static void on_identity(struct sc_identity *id, enum sc_identity_event ev, void *arg)
{
    struct run *r = arg;
    if (ev == SC_IDENTITY_CERT) {
        maybe_start(r);
    }
}

// apply_config offers a validated snapshot: NACK (non-zero) if it cannot be
// used; otherwise it is in force for new connections at once.
static int apply_config(const Seam__V1__Snapshot *snap, const char *version, char *err,
                        size_t err_len, void *arg)
{
    struct run *r = arg;
    struct sc_mesh_config *c = sc_mesh_config_new(snap, version, err, err_len);
    if (c == NULL) {
        return -1;
    }
    if (c->num_roots == 0) {
        snprintf(err, err_len, "the snapshot has no trust bundle");
        sc_mesh_config_unref(c);
        return -1;
    }
    if (r->id == NULL) {
        struct sc_identity_config ic = {
            .loop = &r->loop,
            .ca_channel = r->ch,
            .spiffe_id = r->spiffe_id,
            .cert_ttl_s = c->cert_ttl_s,
            .trust_pem = c->trust_pem,
            .trust_len = strlen(c->trust_pem),
        };
        r->id = sc_identity_new(&ic, err, err_len);
        if (r->id == NULL) {
            sc_mesh_config_unref(c);
            return -1;
        }
        sc_identity_add_listener(r->id, on_identity, r);
        sc_identity_start(r->id);
    } else if (sc_identity_set_trust_bundle(r->id, c->trust_pem, strlen(c->trust_pem), err,
                                            err_len) != 0) {
        sc_mesh_config_unref(c);
        return -1;
    }
    sc_mesh_config_unref(r->cfg);
    r->cfg = c;
    for (int d = 0; d < 2; d++) {
        if (r->proxy[d] != NULL) {
            sc_proxy_publish_route(r->proxy[d], c);
        }
    }
    if (c->num_skipped > 0) {
        // Interception only knows addresses: a host name can never match.
        sc_warn("mesh.endpoints_skipped",
                "version=%s count=%zu reason=host_name (list endpoint IP addresses)", c->version,
                c->num_skipped);
    }
    sc_info("mesh.config_applied",
            "version=%s outbound_policy=%s default_mode=%s ports=%zu endpoints=%zu roots=%zu",
            c->version, sc_mesh_policy_name(c->outbound_policy), sc_mesh_mode_name(c->default_mode),
            c->num_ports, c->num_endpoints, c->num_roots);
    maybe_start(r);
    return 0;
}

static void on_config_event(const char *event, const char *version, int status, const char *detail,
                            void *arg)
{
    struct run *r = arg;
    if (strcmp(event, "ack") == 0) {
        r->acks++;
        r->cp_connected = true;
    } else if (strcmp(event, "nack") == 0) {
        r->nacks++;
        r->cp_connected = true;
        snprintf(r->nack_error, sizeof(r->nack_error), "%s", detail ? detail : "");
        sc_warn("mesh.config_refused", "version=%s error=\"%s\" kept=%s", version ? version : "-",
                detail ? detail : "", r->cfg ? r->cfg->version : "-");
    } else if (strcmp(event, "stream_end") == 0) {
        r->stream_ends++;
        r->cp_connected = false;
    }
}

// ---- admin hooks ------------------------------------------------------------

static bool admin_ready(void *ctx)
{
    return is_ready(ctx);
}

static void admin_certs(void *ctx, struct sc_admin_buf *out)
{
    struct run *r = ctx;
    if (r->id == NULL) {
        sc_admin_buf_printf(out, "{\"source\":\"control-plane\",\"spiffe_id\":");
        sc_admin_buf_json_string(out, r->spiffe_id);
        sc_admin_buf_printf(out, ",\"ready\":false}");
        return;
    }
    sc_identity_certs_json(r->id, out);
}

static void admin_config(void *ctx, struct sc_admin_buf *out)
{
    struct run *r = ctx;
    sc_admin_buf_printf(out, "{\"spiffe_id\":");
    sc_admin_buf_json_string(out, r->spiffe_id);
    sc_admin_buf_printf(out,
                        ",\"control_plane_connected\":%s,\"acks\":%llu,\"nacks\":%llu,"
                        "\"last_nack_error\":",
                        r->cp_connected ? "true" : "false", (unsigned long long)r->acks,
                        (unsigned long long)r->nacks);
    sc_admin_buf_json_string(out, r->nack_error);
    sc_admin_buf_printf(out, ",\"version\":");
    sc_admin_buf_json_string(out, r->cfg ? r->cfg->version : NULL);
    sc_admin_buf_printf(out, ",\"snapshot\":");
    sc_mesh_config_json(r->cfg, out);
    sc_admin_buf_append(out, "}", 1);
}

static void admin_metrics(void *ctx, struct sc_admin_buf *out)
{
    struct run *r = ctx;
    sc_admin_buf_printf(out,
                        "# HELP seam_control_plane_connected Whether the config stream is up "
                        "(1 after a response was applied or refused, 0 after the stream ended).\n"
                        "# TYPE seam_control_plane_connected gauge\n"
                        "seam_control_plane_connected %d\n"
                        "# HELP seam_config_responses_total Config snapshots received, by result.\n"
                        "# TYPE seam_config_responses_total counter\n"
                        "seam_config_responses_total{result=\"ack\"} %llu\n"
                        "seam_config_responses_total{result=\"nack\"} %llu\n"
                        "# HELP seam_control_plane_stream_ends_total Config streams that ended "
                        "(reconnected with backoff).\n"
                        "# TYPE seam_control_plane_stream_ends_total counter\n"
                        "seam_control_plane_stream_ends_total %llu\n"
                        "# HELP seam_config_info The config version in force (value 1).\n"
                        "# TYPE seam_config_info gauge\n",
                        r->cp_connected ? 1 : 0, (unsigned long long)r->acks,
                        (unsigned long long)r->nacks, (unsigned long long)r->stream_ends);
    if (r->cfg != NULL) {
        sc_admin_buf_printf(out, "seam_config_info{version=\"");
        sc_admin_buf_label_value(out, r->cfg->version);
        sc_admin_buf_printf(out, "\"} 1\n");
    }
    if (r->id != NULL) {
        sc_identity_metrics(r->id, out);
    }
}

static void admin_drain(void *ctx)
{
    start_drain(ctx, "admin");
}

static void admin_quit(void *ctx)
{
    struct run *r = ctx;
    r->drain_ms = 0;
    start_drain(r, "quitquitquit");
}

// ---- shutdown ---------------------------------------------------------------

static void stop_all(struct run *r)
{
    if (r->stopped) {
        return;
    }
    r->stopped = true;
    sc_info("sidecar.stopped", "reason=drained");
    for (int d = 0; d < 2; d++) {
        if (r->proxy[d] != NULL && r->id != NULL) {
            sc_identity_unbind_proxy(r->id, r->proxy[d]);
        }
    }
    sc_admin_stop(r->admin, NULL, NULL);
    r->admin = NULL;
    cc_config_client_free(r->cfgc);
    r->cfgc = NULL;
    sc_identity_free(r->id);
    r->id = NULL;
    cc_channel_free(r->ch);
    r->ch = NULL;
    uv_close((uv_handle_t *)&r->sigterm, NULL);
    uv_close((uv_handle_t *)&r->sigint, NULL);
    uv_close((uv_handle_t *)&r->sighup, NULL);
}

static int num_proxies(const struct run *r)
{
    return (r->proxy[0] != NULL) + (r->proxy[1] != NULL);
}

static void on_proxy_done(struct sc_proxy *p, void *arg)
{
    struct run *r = arg;
    if (++r->proxies_done == num_proxies(r)) {
        stop_all(r);
    }
}

static void start_drain(struct run *r, const char *why)
{
    if (r->draining) {
        return;
    }
    r->draining = true;
    uint64_t active = 0;
    for (int d = 0; d < 2; d++) {
        if (r->proxy[d] != NULL) {
            active += sc_proxy_active_connections(r->proxy[d]);
        }
    }
    sc_info("sidecar.draining", "trigger=%s active=%llu drain_timeout_ms=%llu", why,
            (unsigned long long)active, (unsigned long long)r->drain_ms);
    if (num_proxies(r) == 0) {
        stop_all(r);
        return;
    }
    for (int d = 0; d < 2; d++) {
        if (r->proxy[d] != NULL) {
            sc_proxy_drain(r->proxy[d], r->drain_ms);
        }
    }
}

static void on_sigterm(uv_signal_t *h, int signum)
{
    start_drain(h->data, signum == SIGINT ? "sigint" : "sigterm");
}

static void on_sighup(uv_signal_t *h, int signum)
{
    struct run *r = h->data;
    if (r->id != NULL) {
        sc_info("mesh.renew", "trigger=sighup");
        sc_identity_renew_now(r->id);
    }
}

// ---- flags ------------------------------------------------------------------

static void usage(FILE *f, const struct sc_flag *flags, size_t n)
{
    fprintf(f, "usage: seam-sidecar run --control-plane HOST:PORT --control-plane-trust F\n"
               "         --namespace NS --service-account SA [--trust-domain TD] [...]\n"
               "\n"
               "  The mesh sidecar: certificates and config from the control plane, the\n"
               "  pod's TCP traffic intercepted by seam-init's rules (outbound -> 15001,\n"
               "  inbound -> 15006), mutual TLS between pods, authorization per port.\n"
               "\nflags:\n");
    sc_flags_usage(f, flags, n);
}

// valid_segment: a Kubernetes namespace or service account name becomes one
// SPIFFE path segment.
static bool valid_segment(const char *s)
{
    if (s[0] == '\0' || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) {
        return false;
    }
    for (; *s; s++) {
        char ch = *s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '-' || ch == '_')) {
            return false;
        }
    }
    return true;
}

static int set_listen(struct sockaddr_storage *ss, int64_t port)
{
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof(*ss));
    in6->sin6_family = AF_INET6; // [::], dual-stack: v4 peers arrive v4-mapped
    in6->sin6_addr = in6addr_any;
    in6->sin6_port = htons((uint16_t)port);
    return 0;
}

int sc_cmd_run(int argc, char **argv)
{
    struct run *r = calloc(1, sizeof(*r));
    const char *cp = NULL, *cp_trust = NULL, *cp_name = NULL, *token_file = NULL;
    const char *td = "cluster.local", *ns = NULL, *sa = NULL, *pod_ip = NULL, *pod_name = NULL;
    const char *admin = "0.0.0.0:15020", *log_level = "info", *log_format = "text";
    const char *cluster = NULL;
    int64_t out_port = 15001, in_port = 15006, workers = 2;
    int64_t proxy_uid = 1337, proxy_gid = 0, busy_poll_us = 0;
    bool mux = true, accept_mux = true; // docs/MUX.md "On by default in mesh mode"
    int64_t mux_sessions = SC_MUX_SESSIONS_DEFAULT;
    const char *loopback_cc = "auto";
    struct sc_tcp_cc_choice cc_choice;
    uint64_t connect_ms = 10000, hs_ms = 10000, idle_ms = 3600000, drain_ms = 25000;
    uint64_t detect_ms = 500, max_age_ms = 0;
    struct sc_flag flags[] = {
        {.name = "control-plane",
         .type = SC_FLAG_STRING,
         .out = &cp,
         .help = "control plane address (HOST:PORT)",
         .required = true},
        {.name = "control-plane-trust",
         .type = SC_FLAG_STRING,
         .out = &cp_trust,
         .help = "PEM root(s) of the control plane's server certificate",
         .required = true},
        {.name = "control-plane-name",
         .type = SC_FLAG_STRING,
         .out = &cp_name,
         .help = "name the control plane's certificate must carry (default: its host)"},
        {.name = "token-file",
         .type = SC_FLAG_STRING,
         .out = &token_file,
         .help = "bearer token file (service-account token), re-read per call"},
        {.name = "trust-domain",
         .type = SC_FLAG_STRING,
         .out = &td,
         .help = "SPIFFE trust domain (cluster.local)"},
        {.name = "namespace",
         .type = SC_FLAG_STRING,
         .out = &ns,
         .help = "pod namespace",
         .required = true},
        {.name = "service-account",
         .type = SC_FLAG_STRING,
         .out = &sa,
         .help = "pod service account",
         .required = true},
        {.name = "pod-ip",
         .type = SC_FLAG_STRING,
         .out = &pod_ip,
         .help = "pod IP (informational)"},
        {.name = "pod-name",
         .type = SC_FLAG_STRING,
         .out = &pod_name,
         .help = "pod name (informational)"},
        {.name = "cluster",
         .type = SC_FLAG_STRING,
         .out = &cluster,
         .help = "cluster name sent to the control plane"},
        {.name = "outbound-port",
         .type = SC_FLAG_INT,
         .out = &out_port,
         .help = "outbound capture port (15001)",
         .min = 1,
         .max = 65535},
        {.name = "inbound-port",
         .type = SC_FLAG_INT,
         .out = &in_port,
         .help = "inbound capture port (15006)",
         .min = 1,
         .max = 65535},
        {.name = "admin",
         .type = SC_FLAG_STRING,
         .out = &admin,
         .help = "admin/metrics address (0.0.0.0:15020)"},
        {.name = "proxy-uid",
         .type = SC_FLAG_INT,
         .out = &proxy_uid,
         .help = "started as root: run as this uid (1337; seam-init exempts its traffic; "
                 "0: stay root, only where nothing is intercepted, e.g. tests)",
         .min = 0,
         .max = 2147483647},
        {.name = "proxy-gid",
         .type = SC_FLAG_INT,
         .out = &proxy_gid,
         .help = "started as root: run as this gid (default: the proxy uid)",
         .min = 1,
         .max = 2147483647},
        {.name = "workers",
         .type = SC_FLAG_INT,
         .out = &workers,
         .help = "worker threads per direction (2)",
         .min = 1,
         .max = 256},
        {.name = "busy-poll-us",
         .type = SC_FLAG_INT,
         .out = &busy_poll_us,
         .help = "wait for an answer this many microseconds polling before sleeping (0: off; "
                 "lower latency for CPU)",
         .min = 0,
         .max = 100000},
        {.name = "mux",
         .type = SC_FLAG_BOOL,
         .out = &mux,
         .help = "outbound: carry mTLS connections as streams of long-lived seam-mux sessions, "
                 "one per destination address, port and identity (true; a peer without "
                 "seam-mux, or with --accept-mux=false, gets 1:1 connections; false: one mTLS "
                 "connection per intercepted connection)"},
        {.name = "mux-sessions",
         .type = SC_FLAG_INT,
         .out = &mux_sessions,
         .help = "outbound: seam-mux sessions per destination at most; a new connection "
                 "avoids a session carrying a bulk stream by taking or opening another (2; "
                 "1: one session per destination)",
         .min = 1,
         .max = SC_MUX_SESSIONS_MAX},
        {.name = "accept-mux",
         .type = SC_FLAG_BOOL,
         .out = &accept_mux,
         .help = "inbound: accept seam-mux sessions (true; false: peers with --mux fall back "
                 "to 1:1 connections, e.g. while a rollout is held back)"},
        {.name = "loopback-cc",
         .type = SC_FLAG_STRING,
         .out = &loopback_cc,
         .help = "TCP congestion control of the sockets to this host (the app's): auto (reno "
                 "if the system default paces, i.e. bbr), off, or a name"},
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
        {.name = "drain-timeout",
         .type = SC_FLAG_DURATION,
         .out = &drain_ms,
         .help = "SIGTERM grace period (25s)"},
        {.name = "max-connection-age",
         .type = SC_FLAG_DURATION,
         .out = &max_age_ms,
         .help =
             "end connections older than this gracefully (half-close, then close; default off)"},
        {.name = "detect-timeout",
         .type = SC_FLAG_DURATION,
         .out = &detect_ms,
         .help = "PERMISSIVE: wait this long for a ClientHello before plain (500ms)"},
        {.name = "log-level",
         .type = SC_FLAG_STRING,
         .out = &log_level,
         .help = "debug|info|warn|error (info)"},
        {.name = "log-format",
         .type = SC_FLAG_STRING,
         .out = &log_format,
         .help = "text|json (text)"},
    };
    // Plus the data path's limits (--max-connections, --max-buffer-memory).
    struct sc_limits limits;
    sc_limits_defaults(&limits);
    struct sc_flag all[sizeof(flags) / sizeof(flags[0]) + SC_LIMITS_NUM_FLAGS];
    memcpy(all, flags, sizeof(flags));
    sc_limits_flags(&limits, all + sizeof(flags) / sizeof(flags[0]));
    size_t nflags = sizeof(all) / sizeof(all[0]);
    char err[512];
    const char *why = NULL;
    int rc = 2;
    struct sockaddr_storage admin_sa;

    if (r == NULL) {
        return 1;
    }
    int pr = sc_flags_parse(all, nflags, argc, argv, err, sizeof(err));
    if (pr == 1) {
        usage(stdout, all, nflags);
        rc = 0;
        goto out;
    }
    if (pr != 0) {
        fprintf(stderr, "seam-sidecar run: %s\n", err);
        goto out;
    }
    int level = sc_log_parse_level(log_level);
    if (level < 0) {
        fprintf(stderr, "seam-sidecar run: --log-level \"%s\" is not debug|info|warn|error\n",
                log_level);
        goto out;
    }
    if (strcmp(log_format, "text") != 0 && strcmp(log_format, "json") != 0) {
        fprintf(stderr, "seam-sidecar run: --log-format \"%s\" is not text|json\n", log_format);
        goto out;
    }
    {
        char host[256];
        uint16_t port;
        if (sc_parse_hostport_name(cp, host, sizeof(host), &port, &why) != 0) {
            fprintf(stderr, "seam-sidecar run: --control-plane \"%s\": %s\n", cp,
                    why ? why : "invalid");
            goto out;
        }
    }
    if (sc_parse_hostport(admin, true, &admin_sa, &why) != 0) {
        fprintf(stderr, "seam-sidecar run: --admin \"%s\": %s\n", admin, why ? why : "invalid");
        goto out;
    }
    if (out_port == in_port) {
        fprintf(stderr, "seam-sidecar run: --outbound-port and --inbound-port must differ\n");
        goto out;
    }
    if (!valid_segment(ns) || !valid_segment(sa)) {
        fprintf(stderr,
                "seam-sidecar run: --%s \"%s\" is not a name (letters, digits, '.', '-', '_')\n",
                valid_segment(ns) ? "service-account" : "namespace", valid_segment(ns) ? sa : ns);
        goto out;
    }
    snprintf(r->spiffe_id, sizeof(r->spiffe_id), "spiffe://%s/ns/%s/sa/%s", td, ns, sa);
    if (!sc_spiffe_id_valid(r->spiffe_id, strlen(r->spiffe_id), &why)) {
        fprintf(stderr,
                "seam-sidecar run: --trust-domain/--namespace/--service-account give \"%s\", "
                "not a SPIFFE ID: %s\n",
                r->spiffe_id, why ? why : "invalid");
        goto out;
    }
    sc_limits_set(&limits);
    sc_log_setup((enum sc_log_level)level,
                 strcmp(log_format, "json") == 0 ? SC_LOG_JSON : SC_LOG_TEXT);
    if (drop_privileges((uid_t)proxy_uid, (gid_t)(proxy_gid > 0 ? proxy_gid : proxy_uid)) != 0) {
        rc = 1;
        goto out;
    }
    // After the drop: what uid 1337 may select is what counts.
    if (sc_tcp_cc_choose(loopback_cc, &cc_choice, err, sizeof(err)) != 0) {
        fprintf(stderr, "seam-sidecar run: --loopback-cc \"%s\": %s\n", loopback_cc, err);
        goto out;
    }
    sc_tcp_cc_log(&cc_choice);
    memcpy(r->loopback_cc, cc_choice.cc, sizeof(r->loopback_cc));

    r->workers = (int)workers;
    r->busy_poll_us = (uint64_t)busy_poll_us;
    r->mux = mux;
    r->mux_sessions = (uint32_t)mux_sessions;
    r->connect_ms = connect_ms;
    r->hs_ms = hs_ms;
    r->idle_ms = idle_ms;
    r->drain_ms = drain_ms;
    r->detect_ms = detect_ms;
    r->max_age_ms = max_age_ms;
    set_listen(&r->listen[SC_DIR_INBOUND], in_port);
    set_listen(&r->listen[SC_DIR_OUTBOUND], out_port);
    // Inbound: any valid SVID completes the handshake; the port's allow
    // rules are checked right after (sc_mesh_router). Outbound: each
    // connection sets the endpoint's expected ID.
    r->opts[SC_DIR_INBOUND].is_server = true;
    r->opts[SC_DIR_INBOUND].accept_mux = accept_mux; // forward.c hands sessions to mux.c
    r->opts[SC_DIR_OUTBOUND].is_server = false;
    r->stats = calloc((size_t)(2 * r->workers), sizeof(*r->stats));
    if (r->stats == NULL) {
        rc = 1;
        goto out;
    }

    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&r->loop);
    struct cc_channel_config chc = {
        .target = cp,
        .authority = cp_name,
        .trust_file = cp_trust,
        .token_file = token_file,
        .keepalive_ms = 30000,
    };
    r->ch = cc_channel_new(&r->loop, &chc, err, sizeof(err));
    if (r->ch == NULL) {
        fprintf(stderr, "seam-sidecar run: --control-plane %s: %s\n", cp, err);
        rc = 1;
        goto out_loop;
    }
    cc_channel_set_debug_name(r->ch, "control-plane");
    struct sc_admin_hooks hooks = {
        .ctx = r,
        .num_workers = 2 * r->workers,
        .worker_stats = r->stats,
        .ready = admin_ready,
        .certs_json = admin_certs,
        .config_json = admin_config,
        .extra_metrics = admin_metrics,
        .drain = admin_drain,
        .quit = admin_quit,
    };
    int e = sc_admin_start(&r->loop, (struct sockaddr *)&admin_sa, &hooks, &r->admin);
    if (e != 0) {
        fprintf(stderr, "seam-sidecar run: cannot start admin on %s: %s\n", admin, uv_strerror(e));
        cc_channel_free(r->ch);
        rc = 1;
        goto out_loop;
    }
    struct cc_config_opts co = {.node_id = r->spiffe_id, .cluster = cluster};
    r->cfgc = cc_config_client_new(r->ch, &co, apply_config, on_config_event, r);
    uv_signal_init(&r->loop, &r->sigterm);
    uv_signal_init(&r->loop, &r->sigint);
    uv_signal_init(&r->loop, &r->sighup);
    r->sigterm.data = r->sigint.data = r->sighup.data = r;
    uv_signal_start(&r->sigterm, on_sigterm, SIGTERM);
    uv_signal_start(&r->sigint, on_sigterm, SIGINT);
    uv_signal_start(&r->sighup, on_sighup, SIGHUP);
    sc_info("sidecar.starting", "mode=mesh id=%s control_plane=%s pod_ip=%s admin=%s", r->spiffe_id,
            cp, pod_ip ? pod_ip : "-", admin);
    rc = 0;
    uv_run(&r->loop, UV_RUN_DEFAULT);
    for (int d = 0; d < 2; d++) {
        sc_proxy_free(r->proxy[d]);
    }
    rc = r->exit_code;

out_loop:
    if (uv_loop_close(&r->loop) != 0) {
        uv_run(&r->loop, UV_RUN_DEFAULT);
        uv_loop_close(&r->loop);
    }
out:
    sc_mesh_config_unref(r->cfg);
    free(r->stats);
    free(r);
    return rc;
}
