// cp_main.c — seam-control-plane: flag parsing and wiring only.
//
//   seam-control-plane --listen HOST:PORT --mesh FILE [--tokens FILE | --jwks FILE --audience AUD]
//                      [--cert-ttl DURATION] [--trust-domain D] [--ca-cert F --ca-key F |
//                      --root-out F]
//                      [--admin HOST:PORT] [--server-name NAME]... [--extra-root F]
//                      [--max-message-size SIZE] [--max-streams N] [--log-level L] [--log-format F]
//
// Every flag may also be given as SEAM_<FLAG> (--cert-ttl <-> SEAM_CERT_TTL);
// the command line wins. A bad flag or file prints one clear line on stderr
// and exits 2.
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cp_auth.h"
#include "cp_ca.h"
#include "cp_server.h"
#include "sc/flags.h"
#include "sc/log.h"
#include "sc/parse.h"
#include "sc/spiffe.h"

#define CP_MAX_NAMES 16

static const char usage[] =
    "usage: seam-control-plane --listen HOST:PORT --mesh FILE\n"
    "           [--tokens FILE | --jwks FILE --audience AUD]\n"
    "           [--cert-ttl DURATION] [--trust-domain D]\n"
    "           [--ca-cert F --ca-key F | --root-out F] [--extra-root F]\n"
    "           [--admin HOST:PORT] [--server-name NAME]...\n"
    "           [--max-message-size SIZE] [--max-streams N] [--idle-timeout DURATION]\n"
    "           [--log-level debug|info|warn|error] [--log-format text|json]\n";

__attribute__((format(printf, 1, 2))) static int bad(const char *fmt, ...)
{
    va_list ap;
    fputs("seam-control-plane: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n", stderr);
    return 2;
}

// cp_main parses the flags and runs the server; |server_names| is freed by
// main on every path.
static int cp_main(int argc, char **argv, struct sc_strlist *server_names)
{
    const char *listen = NULL, *mesh = NULL, *tokens = NULL, *jwks = NULL, *audience = NULL;
    const char *cert_ttl = "1h", *td = "cluster.local", *ca_cert = NULL, *ca_key = NULL;
    const char *root_out = NULL, *admin = NULL, *extra_root = NULL, *log_level = "info";
    const char *log_format = "text", *max_msg = "4MiB", *max_streams = "1000";
    const char *idle_timeout = "5m";
    const char *names[CP_MAX_NAMES];
    size_t num_names = 0;
    const char *why = NULL;

    // Every flag may also come from SEAM_<FLAG> (sc/flags.h), as for the
    // sidecar: a Deployment can set them with env/valueFrom. Values are
    // checked below, with the flag's name in the message.
    struct sc_flag flags[] = {
        {.name = "listen",
         .out = &listen,
         .help = "gRPC address HOST:PORT (TLS, HTTP/2) [required]"},
        {.name = "mesh",
         .out = &mesh,
         .help = "mesh config (YAML), re-read when it changes [required]"},
        {.name = "tokens",
         .out = &tokens,
         .help = "static bearer tokens: token -> SPIFFE ID (YAML/JSON)"},
        {.name = "jwks",
         .out = &jwks,
         .help = "JWKS of the service-account token issuer (offline JWT checks)"},
        {.name = "audience",
         .out = &audience,
         .help = "audience the JWTs must carry (with --jwks)"},
        {.name = "cert-ttl",
         .out = &cert_ttl,
         .help = "lifetime of issued certificates, >= 10s (1h)"},
        {.name = "trust-domain", .out = &td, .help = "SPIFFE trust domain (cluster.local)"},
        {.name = "ca-cert", .out = &ca_cert, .help = "signing CA certificate (PEM; with --ca-key)"},
        {.name = "ca-key", .out = &ca_key, .help = "signing CA key (PEM; with --ca-cert)"},
        {.name = "root-out", .out = &root_out, .help = "write the root(s) clients must trust here"},
        {.name = "admin", .out = &admin, .help = "admin/metrics HTTP address HOST:PORT"},
        {.name = "extra-root",
         .out = &extra_root,
         .help = "more roots to hand out (root rotation)"},
        {.name = "server-name",
         .type = SC_FLAG_LIST,
         .out = server_names,
         .help = "names in the server certificate (repeat; default: seam-control-plane, localhost, "
                 "127.0.0.1, ::1)"},
        {.name = "max-message-size",
         .out = &max_msg,
         .help = "largest gRPC message, 1KiB-64MiB (4MiB)"},
        {.name = "max-streams",
         .out = &max_streams,
         .help = "concurrent streams per connection (1000)"},
        {.name = "idle-timeout",
         .out = &idle_timeout,
         .help = "close connections with no call for this long; 0: never (5m)"},
        {.name = "log-level", .out = &log_level, .help = "debug|info|warn|error (info)"},
        {.name = "log-format", .out = &log_format, .help = "text|json (text)"},
    };
    const size_t num_flags = sizeof(flags) / sizeof(flags[0]);
    char ferr[512];
    int fr = sc_flags_parse(flags, num_flags, argc - 1, argv + 1, ferr, sizeof(ferr));
    if (fr == 1) {
        fputs(usage, stdout);
        fputs("\nflags:\n", stdout);
        sc_flags_usage(stdout, flags, num_flags);
        return 0;
    }
    if (fr != 0) {
        fputs(usage, stderr);
        return bad("%s", ferr);
    }
    if (server_names->num > CP_MAX_NAMES) {
        return bad("too many --server-name values (max %d)", CP_MAX_NAMES);
    }
    for (size_t k = 0; k < server_names->num; k++) {
        names[num_names++] = server_names->items[k];
    }

    int level = sc_log_parse_level(log_level);
    if (level < 0) {
        return bad("--log-level: \"%s\" is not debug, info, warn or error", log_level);
    }
    if (strcmp(log_format, "text") != 0 && strcmp(log_format, "json") != 0) {
        return bad("--log-format: \"%s\" is not text or json", log_format);
    }
    sc_log_setup((enum sc_log_level)level,
                 strcmp(log_format, "json") == 0 ? SC_LOG_JSON : SC_LOG_TEXT);

    struct cp_server_config cfg = {.mesh_poll_ms = 1000};
    if (listen == NULL) {
        return bad("--listen HOST:PORT is required");
    }
    if (sc_parse_hostport(listen, true, &cfg.listen, &why) != 0) {
        return bad("--listen %s: %s", listen, why);
    }
    if (admin != NULL) {
        if (sc_parse_hostport(admin, true, &cfg.admin, &why) != 0) {
            return bad("--admin %s: %s", admin, why);
        }
        cfg.have_admin = true;
    }
    if (mesh == NULL) {
        return bad("--mesh FILE is required");
    }
    uint64_t ttl_ms;
    if (sc_parse_duration_ms(cert_ttl, &ttl_ms, &why) != 0) {
        return bad("--cert-ttl %s: %s", cert_ttl, why);
    }
    if (ttl_ms < 10000) {
        return bad("--cert-ttl %s: must be at least 10s", cert_ttl);
    }
    char probe[320];
    snprintf(probe, sizeof(probe), "spiffe://%s/x", td);
    if (strlen(td) > 255 || !sc_spiffe_id_valid(probe, strlen(probe), &why)) {
        return bad("--trust-domain \"%s\": not a valid trust domain", td);
    }
    uint64_t msg_bytes;
    if (sc_parse_size(max_msg, &msg_bytes, &why) != 0 || msg_bytes < 1024 ||
        msg_bytes > (64u << 20)) {
        return bad("--max-message-size %s: a size between 1KiB and 64MiB", max_msg);
    }
    cfg.max_msg = (size_t)msg_bytes;
    char *end;
    unsigned long ms = strtoul(max_streams, &end, 10);
    if (*max_streams == '\0' || *end != '\0' || ms < 1 || ms > 100000) {
        return bad("--max-streams %s: a number between 1 and 100000", max_streams);
    }
    cfg.max_streams = (uint32_t)ms;
    // A connection with no open call and no bytes from the client for this
    // long gets GOAWAY and is closed ("0" = never): a client that completes
    // TLS and then says nothing no longer holds its descriptor for ever.
    if (sc_parse_duration_ms(idle_timeout, &cfg.conn_idle_ms, &why) != 0) {
        return bad("--idle-timeout %s: %s", idle_timeout, why);
    }
    if ((ca_cert == NULL) != (ca_key == NULL)) {
        return bad("--ca-cert and --ca-key go together");
    }
    if (tokens != NULL && jwks != NULL) {
        return bad("--tokens and --jwks are alternatives; give one");
    }
    if (jwks != NULL && audience == NULL) {
        return bad("--jwks needs --audience");
    }
    if (audience != NULL && jwks == NULL) {
        return bad("--audience is only used with --jwks");
    }
    if (num_names == 0) {
        names[num_names++] = "seam-control-plane";
        names[num_names++] = "localhost";
        names[num_names++] = "127.0.0.1";
        names[num_names++] = "::1";
    }
    cfg.server_names = names;
    cfg.num_server_names = num_names;
    cfg.mesh_path = mesh;
    cfg.root_out = root_out;

    char err[1024];
    struct cp_ca *ca;
    if (ca_cert != NULL) {
        ca = cp_ca_new_load(ca_cert, ca_key, td, ttl_ms / 1000, err, sizeof(err));
        if (ca == NULL) {
            return bad("CA: %s", err);
        }
    } else {
        ca = cp_ca_new_generated(td, ttl_ms / 1000);
        if (ca == NULL) {
            return bad("cannot generate the root CA");
        }
        if (root_out == NULL) {
            sc_warn("cp.no_root_out", "the generated root is not written anywhere: clients "
                                      "cannot verify this server (use --root-out FILE)");
        }
    }
    if (extra_root != NULL && cp_ca_add_root_file(ca, extra_root, err, sizeof(err)) != 0) {
        cp_ca_free(ca);
        return bad("--extra-root: %s", err);
    }
    struct cp_auth *auth = NULL;
    if (tokens != NULL) {
        auth = cp_auth_new_tokens(tokens, err, sizeof(err));
    } else if (jwks != NULL) {
        auth = cp_auth_new_jwks(jwks, audience, td, err, sizeof(err));
    }
    if ((tokens != NULL || jwks != NULL) && auth == NULL) {
        cp_ca_free(ca);
        return bad("%s: %s", tokens != NULL ? "--tokens" : "--jwks", err);
    }
    if (auth == NULL) {
        sc_warn("cp.no_auth", "no --tokens or --jwks: every CreateCertificate is refused");
    }
    cfg.ca = ca;
    cfg.auth = auth;
    int rc = cp_server_run(&cfg);
    cp_auth_free(auth);
    cp_ca_free(ca);
    return rc;
}

int main(int argc, char **argv)
{
    struct sc_strlist server_names = {0};
    int rc = cp_main(argc, argv, &server_names);
    sc_strlist_cleanup(&server_names);
    return rc;
}
