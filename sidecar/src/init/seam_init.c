// seam_init.c — seam-init: install or remove the traffic-capture nat rules of
// a seam sidecar in the current network namespace (issue 6, ECOSYSTEM.md §1).
//
//   seam-init install|uninstall [--dry-run] [--proxy-uid 1337] [--proxy-gid 1337]
//       [--inbound-port 15006] [--outbound-port 15001]
//       [--exclude-inbound-ports P,...] [--exclude-outbound-ports P,...]
//       [--exclude-outbound-cidrs CIDR,...] [--ipv6 auto|on|off]
//       [--backend auto|nft|legacy]
//
// Rules are applied per family with one `iptables-restore --noflush` run
// (fork/exec, no shell), so each family changes atomically; a re-run
// replaces our chains and our jumps, never duplicating them. Exit codes: 0
// done, 1 failed (the failing rule is named), 2 bad usage.
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "init_int.h"

#define EXIT_USAGE 2

struct tools {
    const char *backend; // "nft", "legacy" or "unknown"
    char version[160];   // first line of `<restore> --version`
    char restore[2][512];
    char save[2][512];
    bool have[2]; // [0] IPv4, [1] IPv6
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: seam-init install|uninstall [--dry-run] [--proxy-uid UID] [--proxy-gid GID]\n"
            "         [--inbound-port 15006] [--outbound-port 15001]\n"
            "         [--exclude-inbound-ports P,...] [--exclude-outbound-ports P,...]\n"
            "         [--exclude-outbound-cidrs CIDR,...] [--ipv6 auto|on|off]\n"
            "         [--backend auto|nft|legacy]\n"
            "Inbound TCP is redirected to --inbound-port except ports 15020, 15021 and the\n"
            "excluded ones; outbound TCP to --outbound-port except the proxy's uid/gid,\n"
            "loopback and the excluded ports/CIDRs. Chains: SEAM_INBOUND, SEAM_IN_REDIRECT,\n"
            "SEAM_OUTPUT, SEAM_REDIRECT (nat table), for IPv4 and IPv6.\n");
}

static int bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int bad_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "seam-init: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nTry 'seam-init --help'.\n");
    va_end(ap);
    return EXIT_USAGE;
}

static int parse_u32(const char *s, uint32_t max, uint32_t *out)
{
    uint64_t v = 0;
    if (*s == '\0') {
        return -1;
    }
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9') {
            return -1;
        }
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > max) {
            return -1;
        }
    }
    *out = (uint32_t)v;
    return 0;
}

static char *first_line(char *s)
{
    s[strcspn(s, "\n")] = '\0';
    return s;
}

// tool_version runs `|path| --version` and keeps its first line.
static void tool_version(const char *path, char *out, size_t cap)
{
    const char *argv[] = {path, "--version", NULL};
    char *o = NULL, *e = NULL;
    out[0] = '\0';
    if (sc_init_run(argv, NULL, &o, &e) == 0 && o != NULL) {
        snprintf(out, cap, "%s", first_line(o));
    }
    free(o);
    free(e);
}

// find_tools fills |t| for |backend| ("nft" or "legacy"). Returns 0 when at
// least the IPv4 tools exist.
static int find_tools(const char *backend, struct tools *t)
{
    static const char *const fam[2] = {"iptables", "ip6tables"};
    memset(t, 0, sizeof(*t));
    t->backend = backend;
    for (int f = 0; f < 2; f++) {
        char name[64];
        snprintf(name, sizeof(name), "%s-%s-restore", fam[f], backend);
        int rc = sc_init_which(name, t->restore[f], sizeof(t->restore[f]));
        snprintf(name, sizeof(name), "%s-%s-save", fam[f], backend);
        rc |= sc_init_which(name, t->save[f], sizeof(t->save[f]));
        t->have[f] = rc == 0;
    }
    if (!t->have[0]) {
        return -1;
    }
    tool_version(t->restore[0], t->version, sizeof(t->version));
    return 0;
}

// detect_backend picks the backend the system's `iptables` uses: Debian's
// alternatives point it at iptables-nft or iptables-legacy, and both print
// "(nf_tables)" / "(legacy)" in --version.
static const char *detect_backend(char *why, size_t cap)
{
    char path[512];
    if (sc_init_which("iptables", path, sizeof(path)) == 0) {
        char v[160];
        tool_version(path, v, sizeof(v));
        if (strstr(v, "(nf_tables)") != NULL) {
            snprintf(why, cap, "iptables --version: %s", v);
            return "nft";
        }
        if (strstr(v, "(legacy)") != NULL) {
            snprintf(why, cap, "iptables --version: %s", v);
            return "legacy";
        }
        if (v[0] != '\0') {
            snprintf(why, cap, "iptables --version: %s (no backend tag: legacy)", v);
            return "legacy";
        }
    }
    if (sc_init_which("iptables-nft-restore", path, sizeof(path)) == 0) {
        snprintf(why, cap, "no usable iptables; iptables-nft-restore exists");
        return "nft";
    }
    snprintf(why, cap, "no usable iptables; trying legacy");
    return "legacy";
}

// line_number finds "line: N" / "line N" in iptables-restore's stderr.
static long line_number(const char *err)
{
    for (const char *p = strstr(err, "line"); p != NULL; p = strstr(p + 4, "line")) {
        const char *q = p + 4;
        while (*q == ':' || *q == ' ') {
            q++;
        }
        if (*q >= '0' && *q <= '9') {
            return strtol(q, NULL, 10);
        }
    }
    return -1;
}

static void print_text(FILE *f, const struct sc_init_text *t)
{
    for (size_t i = 0; i < t->num_lines; i++) {
        fprintf(f, "%s\n", t->lines[i]);
    }
}

static const char *fam_name(int f)
{
    return f == 0 ? "IPv4" : "IPv6";
}

// save_nat runs `<save> -t nat`. Returns the output (malloc'ed) or NULL with
// a message printed.
static char *save_nat(const struct tools *t, int f)
{
    const char *argv[] = {t->save[f], "-t", "nat", NULL};
    char *o = NULL, *e = NULL;
    int rc = sc_init_run(argv, NULL, &o, &e);
    if (rc != 0) {
        fprintf(stderr, "seam-init: %s (%s, %s) failed with status %d: %s\n", t->save[f],
                fam_name(f), t->backend, rc, e != NULL ? first_line(e) : "");
        free(o);
        free(e);
        return NULL;
    }
    free(e);
    return o;
}

// restore applies |text| with `<restore> --noflush`. On failure the rule at
// the reported line is named.
static int restore(const struct tools *t, int f, const struct sc_init_text *text)
{
    char *input = sc_init_text_join(text);
    if (input == NULL) {
        fprintf(stderr, "seam-init: out of memory\n");
        return -1;
    }
    const char *argv[] = {t->restore[f], "--noflush", "-w", "10", NULL};
    char *o = NULL, *e = NULL;
    int rc = sc_init_run(argv, input, &o, &e);
    free(input);
    if (rc != 0) {
        long ln = e != NULL ? line_number(e) : -1;
        if (ln >= 1 && (size_t)ln <= text->num_lines) {
            fprintf(stderr, "seam-init: %s (%s, %s) rejected rule at line %ld: %s\n", t->restore[f],
                    fam_name(f), t->backend, ln, text->lines[ln - 1]);
        } else {
            fprintf(stderr, "seam-init: %s (%s, %s) failed with status %d\n", t->restore[f],
                    fam_name(f), t->backend, rc);
        }
        if (e != NULL && e[0] != '\0') {
            fprintf(stderr, "seam-init: %s said: %s\n", t->restore[f], first_line(e));
        }
    }
    free(o);
    free(e);
    return rc == 0 ? 0 : -1;
}

// uninstall_family removes our chains for family |f| from backend |t|.
// Returns 1 when something was removed, 0 when nothing was there, -1 on error.
static int uninstall_family(const struct tools *t, int f)
{
    struct sc_init_text text;
    bool found = false;
    int ret = -1;
    sc_init_text_init(&text);
    char *save = save_nat(t, f);
    if (save == NULL) {
        goto cleanup;
    }
    if (sc_init_build_uninstall(save, &text, &found) != 0) {
        fprintf(stderr, "seam-init: out of memory\n");
        goto cleanup;
    }
    if (!found) {
        ret = 0;
        goto cleanup;
    }
    ret = restore(t, f, &text) == 0 ? 1 : -1;

cleanup:
    free(save);
    sc_init_text_cleanup(&text);
    return ret;
}

static bool has_our_chains(const struct tools *t, int f)
{
    const char *argv[] = {t->save[f], "-t", "nat", NULL};
    char *o = NULL, *e = NULL;
    bool found = false;
    if (sc_init_run(argv, NULL, &o, &e) == 0 && o != NULL) {
        found = strstr(o, ":SEAM_") != NULL;
    }
    free(o);
    free(e);
    return found;
}

static int do_install(const struct sc_init_config *cfg, const struct tools *t, bool fam_on[2],
                      const struct tools *other)
{
    bool done[2] = {false, false};
    for (int f = 0; f < 2; f++) {
        if (!fam_on[f]) {
            continue;
        }
        struct sc_init_text text;
        sc_init_text_init(&text);
        char *save = NULL;
        if (!cfg->dry_run && (save = save_nat(t, f)) == NULL) {
            sc_init_text_cleanup(&text);
            goto rollback;
        }
        int rc = sc_init_build_install(cfg, f == 0 ? 4 : 6, save, &text);
        free(save);
        if (rc != 0) {
            fprintf(stderr, "seam-init: out of memory\n");
            sc_init_text_cleanup(&text);
            goto rollback;
        }
        if (cfg->dry_run) {
            printf("# %s: %s --noflush <<EOF\n", fam_name(f), t->restore[f]);
            print_text(stdout, &text);
            printf("# EOF\n");
            sc_init_text_cleanup(&text);
            continue;
        }
        rc = restore(t, f, &text);
        sc_init_text_cleanup(&text);
        if (rc != 0) {
            goto rollback;
        }
        done[f] = true;
        printf("seam-init: %s rules installed (backend %s)\n", fam_name(f), t->backend);
        if (other != NULL && other->have[f] && has_our_chains(other, f)) {
            fprintf(stderr,
                    "seam-init: warning: SEAM_ chains also exist in the %s backend (%s); "
                    "remove them with: seam-init uninstall --backend %s\n",
                    other->backend, fam_name(f), other->backend);
        }
    }
    return 0;

rollback:
    // Leave no half-installed mesh: an IPv4-only capture would send IPv6
    // around the proxy and vice versa.
    for (int f = 0; f < 2; f++) {
        if (done[f] && uninstall_family(t, f) >= 0) {
            fprintf(stderr, "seam-init: rolled back the %s rules\n", fam_name(f));
        }
    }
    return -1;
}

static int do_uninstall(const struct sc_init_config *cfg, const struct tools *t, bool fam_on[2],
                        const struct tools *other)
{
    int ret = 0;
    if (cfg->dry_run) {
        struct sc_init_text text;
        bool found;
        sc_init_text_init(&text);
        if (sc_init_build_uninstall(NULL, &text, &found) != 0) {
            sc_init_text_cleanup(&text);
            return -1;
        }
        for (int f = 0; f < 2; f++) {
            if (fam_on[f]) {
                printf("# %s: %s --noflush <<EOF (plus -D for each jump into SEAM_ chains)\n",
                       fam_name(f), t->restore[f]);
                print_text(stdout, &text);
                printf("# EOF\n");
            }
        }
        sc_init_text_cleanup(&text);
        return 0;
    }
    const struct tools *sets[2] = {t, other};
    for (int s = 0; s < 2; s++) {
        if (sets[s] == NULL) {
            continue;
        }
        for (int f = 0; f < 2; f++) {
            if (!fam_on[f] || !sets[s]->have[f]) {
                continue;
            }
            // The other backend is only swept when it holds our chains.
            if (s == 1 && !has_our_chains(sets[s], f)) {
                continue;
            }
            int rc = uninstall_family(sets[s], f);
            if (rc < 0) {
                ret = -1;
            } else {
                printf("seam-init: %s rules %s (backend %s)\n", fam_name(f),
                       rc == 1 ? "removed" : "not present, nothing to remove", sets[s]->backend);
            }
        }
    }
    return ret;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"dry-run", no_argument, NULL, 'n'},
        {"proxy-uid", required_argument, NULL, 'u'},
        {"proxy-gid", required_argument, NULL, 'g'},
        {"inbound-port", required_argument, NULL, 'i'},
        {"outbound-port", required_argument, NULL, 'o'},
        {"exclude-inbound-ports", required_argument, NULL, 'I'},
        {"exclude-outbound-ports", required_argument, NULL, 'O'},
        {"exclude-outbound-cidrs", required_argument, NULL, 'C'},
        {"ipv6", required_argument, NULL, '6'},
        {"backend", required_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct sc_init_config cfg = {
        .proxy_uid = 1337,
        .proxy_gid = 1337,
        .inbound_port = 15006,
        .outbound_port = 15001,
        .num_excl_in = 2,
        .excl_in = {15020, 15021},
    };
    bool gid_set = false;
    const char *err = NULL;
    uint32_t v;

    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            cfg.dry_run = true;
            break;
        case 'u':
            if (parse_u32(optarg, 0xfffffffe, &cfg.proxy_uid) != 0) {
                return bad_usage("--proxy-uid: '%s' is not a uid", optarg);
            }
            break;
        case 'g':
            if (parse_u32(optarg, 0xfffffffe, &cfg.proxy_gid) != 0) {
                return bad_usage("--proxy-gid: '%s' is not a gid", optarg);
            }
            gid_set = true;
            break;
        case 'i':
        case 'o':
            if (parse_u32(optarg, 65535, &v) != 0 || v == 0) {
                return bad_usage("--%s: '%s' is not a port (1..65535)",
                                 c == 'i' ? "inbound-port" : "outbound-port", optarg);
            }
            *(c == 'i' ? &cfg.inbound_port : &cfg.outbound_port) = (uint16_t)v;
            break;
        case 'I':
            if (sc_init_parse_ports(optarg, cfg.excl_in, &cfg.num_excl_in, &err) != 0) {
                return bad_usage("--exclude-inbound-ports: %s: '%s'", err, optarg);
            }
            break;
        case 'O':
            if (sc_init_parse_ports(optarg, cfg.excl_out, &cfg.num_excl_out, &err) != 0) {
                return bad_usage("--exclude-outbound-ports: %s: '%s'", err, optarg);
            }
            break;
        case 'C':
            if (sc_init_parse_cidrs(optarg, cfg.cidrs, &cfg.num_cidrs, &err) != 0) {
                return bad_usage("--exclude-outbound-cidrs: %s: '%s'", err, optarg);
            }
            break;
        case '6':
            if (strcmp(optarg, "auto") == 0) {
                cfg.ipv6 = SC_INIT_AUTO;
            } else if (strcmp(optarg, "on") == 0) {
                cfg.ipv6 = SC_INIT_ON;
            } else if (strcmp(optarg, "off") == 0) {
                cfg.ipv6 = SC_INIT_OFF;
            } else {
                return bad_usage("--ipv6: '%s' is not auto, on or off", optarg);
            }
            break;
        case 'b':
            if (strcmp(optarg, "auto") == 0) {
                cfg.backend = SC_INIT_BACKEND_AUTO;
            } else if (strcmp(optarg, "nft") == 0) {
                cfg.backend = SC_INIT_BACKEND_NFT;
            } else if (strcmp(optarg, "legacy") == 0) {
                cfg.backend = SC_INIT_BACKEND_LEGACY;
            } else {
                return bad_usage("--backend: '%s' is not auto, nft or legacy", optarg);
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        case ':':
            return bad_usage("option '%s' needs a value", argv[optind - 1]);
        default:
            return bad_usage("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (!gid_set) {
        cfg.proxy_gid = cfg.proxy_uid;
    }
    if (optind >= argc) {
        return bad_usage("missing command: install or uninstall");
    }
    if (strcmp(argv[optind], "install") == 0) {
        cfg.install = true;
    } else if (strcmp(argv[optind], "uninstall") != 0) {
        return bad_usage("unknown command '%s' (install or uninstall)", argv[optind]);
    }
    // getopt_long permutes, so flags may come before or after the command.
    optind++;
    if (optind < argc) {
        return bad_usage("unexpected argument '%s'", argv[optind]);
    }
    if (cfg.inbound_port == cfg.outbound_port) {
        return bad_usage("--inbound-port and --outbound-port must differ");
    }

    char why[256] = "";
    const char *backend;
    if (cfg.backend == SC_INIT_BACKEND_AUTO) {
        backend = detect_backend(why, sizeof(why));
    } else {
        backend = cfg.backend == SC_INIT_BACKEND_NFT ? "nft" : "legacy";
        snprintf(why, sizeof(why), "--backend %s", backend);
    }
    struct tools tools, other;
    const char *other_name = strcmp(backend, "nft") == 0 ? "legacy" : "nft";
    if (find_tools(backend, &tools) != 0) {
        fprintf(stderr, "seam-init: iptables-%s-restore/-save not found (backend %s: %s)\n",
                backend, backend, why);
        return 1;
    }
    bool have_other = cfg.backend == SC_INIT_BACKEND_AUTO && find_tools(other_name, &other) == 0;

    bool fam_on[2] = {true, false};
    bool kernel_v6 = access("/proc/net/if_inet6", F_OK) == 0;
    if (cfg.ipv6 == SC_INIT_ON) {
        if (!tools.have[1]) {
            fprintf(stderr, "seam-init: --ipv6 on but ip6tables-%s-restore/-save not found\n",
                    backend);
            return 1;
        }
        fam_on[1] = true;
    } else if (cfg.ipv6 == SC_INIT_AUTO) {
        fam_on[1] = tools.have[1] && kernel_v6;
    }

    printf("seam-init: %s%s: backend %s (%s; %s), IPv6 %s\n", cfg.install ? "install" : "uninstall",
           cfg.dry_run ? " (dry run)" : "", tools.backend, why,
           tools.version[0] != '\0' ? tools.version : "version unknown", fam_on[1] ? "on" : "off");
    fflush(stdout);
    int rc = cfg.install ? do_install(&cfg, &tools, fam_on, have_other ? &other : NULL)
                         : do_uninstall(&cfg, &tools, fam_on, have_other ? &other : NULL);
    fflush(stdout);
    return rc == 0 ? 0 : 1;
}
