// main.c — seam-sidecar: dispatch to a subcommand. Wiring only.
#include <stdio.h>
#include <string.h>

#include "sc/tunnel.h"

// Subcommands built by other modules. A header (or source) that exists makes
// the reference strong so its object is linked from the static library;
// otherwise the symbol is weak and resolves to NULL when not built.
#if __has_include("sc/certify.h")
#include "sc/certify.h"
#define SC_HAVE_CERTIFY 1
#else
int sc_cmd_certify(int argc, char **argv) __attribute__((weak));
#endif
#if __has_include("sc/run.h")
#include "sc/run.h"
#define SC_HAVE_RUN 1
#elif __has_include("cli/run.c")
// A weak reference never pulls an object out of a static library, so when
// the mesh command's source is in the tree, reference it strongly.
int sc_cmd_run(int argc, char **argv);
#define SC_HAVE_RUN 1
#else
int sc_cmd_run(int argc, char **argv) __attribute__((weak));
#endif

static void usage(FILE *f)
{
    fprintf(f, "usage: seam-sidecar COMMAND [FLAGS]\n"
               "\n"
               "commands:\n"
               "  tunnel inbound|outbound   mTLS tunnel from PEM files (like ghostunnel)\n"
               "  run                       mesh sidecar (control plane, interception)\n"
               "  certify                   get a certificate from the control plane\n"
#ifdef SC_HAVE_CERTIFY
               "  config-watch              print the config stream from the control plane\n"
#endif
               "  version                   print the version\n"
               "\n"
               "Run `seam-sidecar COMMAND --help` for its flags.\n");
}

static int __attribute__((unused)) not_built(const char *cmd)
{
    fprintf(stderr, "seam-sidecar: command \"%s\" is not built into this binary\n", cmd);
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "tunnel") == 0) {
        return sc_cmd_tunnel(argc - 2, argv + 2);
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("seam-sidecar %s\n", SEAM_VERSION);
        return 0;
    }
    if (strcmp(cmd, "certify") == 0) {
#ifdef SC_HAVE_CERTIFY
        return sc_cmd_certify(argc - 2, argv + 2);
#else
        return sc_cmd_certify ? sc_cmd_certify(argc - 2, argv + 2) : not_built(cmd);
#endif
    }
#ifdef SC_HAVE_CERTIFY
    if (strcmp(cmd, "config-watch") == 0) {
        return sc_cmd_config_watch(argc - 2, argv + 2);
    }
#endif
    if (strcmp(cmd, "run") == 0) {
#ifdef SC_HAVE_RUN
        return sc_cmd_run(argc - 2, argv + 2);
#else
        return sc_cmd_run ? sc_cmd_run(argc - 2, argv + 2) : not_built(cmd);
#endif
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "seam-sidecar: unknown command \"%s\"\n\n", cmd);
    usage(stderr);
    return 2;
}
