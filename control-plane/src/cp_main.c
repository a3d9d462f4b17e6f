// cp_main.c — seam-control-plane: flag parsing and wiring only.
//
//   seam-control-plane --listen HOST:PORT --mesh FILE [--tokens FILE | --jwks FILE --audience AUD]
//                      [--cert-ttl DURATION] [--trust-domain D] [--ca-cert F --ca-key F |
//                      --root-out F]
//                      [--admin HOST:PORT] [--server-name NAME]... [--extra-root F]
//                      [--max-message-size SIZE] [--max-streams N] [--log-level L] [--log-format F]
//
// A bad flag or file prints one clear line on stderr and exits 2.
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cp_auth.h"
#include "cp_ca.h"
#include "cp_server.h"
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

int main(int argc, char **argv)
{
    const char *listen = NULL, *mesh = NULL, *tokens = NULL, *jwks = NULL, *audience = NULL;
    const char *cert_ttl = "1h", *td = "cluster.local", *ca_cert = NULL, *ca_key = NULL;
    const char *root_out = NULL, *admin = NULL, *extra_root = NULL, *log_level = "info";
    const char *log_format = "text", *max_msg = "4MiB", *max_streams = "1000";
    const char *idle_timeout = "5m";
    const char *names[CP_MAX_NAMES];
    size_t num_names = 0;
    const char *why = NULL;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            return 0;
        }
        const char *val = NULL;
        char flag[64];
        const char *eq = strchr(a, '=');
        if (strncmp(a, "--", 2) != 0) {
            fputs(usage, stderr);
            return bad("unexpected argument \"%s\"", a);
        }
        if (eq != NULL) {
            snprintf(flag, sizeof(flag), "%.*s", (int)(eq - a), a);
            val = eq + 1;
        } else {
            snprintf(flag, sizeof(flag), "%s", a);
            if (i + 1 >= argc) {
                return bad("flag %s needs a value", a);
            }
            val = argv[++i];
        }
        struct {
            const char *name;
            const char **dst;
        } map[] = {
            {"--listen", &listen},
            {"--mesh", &mesh},
            {"--tokens", &tokens},
            {"--jwks", &jwks},
            {"--audience", &audience},
            {"--cert-ttl", &cert_ttl},
            {"--trust-domain", &td},
            {"--ca-cert", &ca_cert},
            {"--ca-key", &ca_key},
            {"--root-out", &root_out},
            {"--admin", &admin},
            {"--extra-root", &extra_root},
            {"--log-level", &log_level},
            {"--log-format", &log_format},
            {"--max-message-size", &max_msg},
            {"--max-streams", &max_streams},
            {"--idle-timeout", &idle_timeout},
        };
        bool found = false;
        for (size_t k = 0; k < sizeof(map) / sizeof(map[0]); k++) {
            if (strcmp(flag, map[k].name) == 0) {
                *map[k].dst = val;
                found = true;
            }
        }
        if (strcmp(flag, "--server-name") == 0) {
            if (num_names >= CP_MAX_NAMES) {
                return bad("too many --server-name flags (max %d)", CP_MAX_NAMES);
            }
            names[num_names++] = val;
            found = true;
        }
        if (!found) {
            fputs(usage, stderr);
            return bad("unknown flag %s", flag);
        }
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
