// accel_main.c — seam-accel: load seam's sockmap program (sidecar/bpf/
// seam_accel.bpf.c) and attach it to one cgroup v2 directory, so the
// plain-text bytes between an application and its sidecar on this host skip
// the TCP/IP stack. Optional: seam works the same without it (docs/ACCEL.md).
//
//   seam-accel --cgroup /sys/fs/cgroup/<pod> --port 15001 --port 8080
//       [--drain-timeout 30s] [--stats-interval 0] [--log-level info]
//
// Runs in the foreground until SIGTERM/SIGINT. Then it stops selecting new
// connections at once, keeps the short cut of the open ones until they have
// all closed or --drain-timeout passes (removing a socket from the sockhash
// drops what was redirected to it and not yet read), and exits 0. SIGUSR1
// logs the counters. Needs CAP_BPF + CAP_NET_ADMIN (root); the sidecar itself
// stays unprivileged. Exit codes: 0 done, 1 failed (named), 2 bad usage.
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "sc/flags.h"
#include "sc/log.h"
#include "seam_accel.skel.h"

#define EXIT_USAGE 2
#define CGROUP2_MAGIC 0x63677270
#define MAX_PORTS 256

enum {
    STAT_SOCKETS,
    STAT_MSGS_REDIRECTED,
    STAT_BYTES_REDIRECTED,
    STAT_MSGS_PASSED,
    STAT_FALLBACKS,
    STAT_MAX
};

struct accel {
    struct seam_accel *skel;
    struct bpf_link *ops_link;
    int cgroup_fd;
    bool msg_attached;
};

static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
    if (level == LIBBPF_DEBUG && !sc_log_enabled(SC_LOG_DEBUG)) {
        return 0;
    }
    char line[512];
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    if (n > 0 && line[strlen(line) - 1] == '\n') {
        line[strlen(line) - 1] = '\0';
    }
    sc_log(level == LIBBPF_WARN ? SC_LOG_WARN : SC_LOG_DEBUG, "accel.libbpf", "msg=\"%s\"", line);
    return 0;
}

static int parse_port(const char *s, uint32_t *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 1 || v > 65535) {
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static void read_stats(struct accel *a, uint64_t out[STAT_MAX])
{
    int ncpu = libbpf_num_possible_cpus();
    memset(out, 0, sizeof(uint64_t) * STAT_MAX);
    if (ncpu <= 0) {
        return;
    }
    uint64_t *vals = calloc((size_t)ncpu, sizeof(*vals));
    if (vals == NULL) {
        return;
    }
    int fd = bpf_map__fd(a->skel->maps.seam_stats);
    for (uint32_t k = 0; k < STAT_MAX; k++) {
        if (bpf_map_lookup_elem(fd, &k, vals) == 0) {
            for (int c = 0; c < ncpu; c++) {
                out[k] += vals[c];
            }
        }
    }
    free(vals);
}

// open_sockets counts the entries of the sockhash (sockets still accelerated).
static size_t open_sockets(struct accel *a)
{
    int fd = bpf_map__fd(a->skel->maps.seam_socks);
    size_t key_size = bpf_map__key_size(a->skel->maps.seam_socks);
    unsigned char cur[128], next[128];
    if (key_size > sizeof(cur)) {
        return 0;
    }
    size_t n = 0;
    void *prev = NULL;
    while (bpf_map_get_next_key(fd, prev, next) == 0) {
        n++;
        memcpy(cur, next, key_size);
        prev = cur;
    }
    return n;
}

static void log_stats(struct accel *a, const char *event)
{
    uint64_t s[STAT_MAX];
    read_stats(a, s);
    sc_info(event,
            "sockets=%llu open=%zu redirected_msgs=%llu redirected_bytes=%llu passed_msgs=%llu "
            "fallbacks=%llu",
            (unsigned long long)s[STAT_SOCKETS], open_sockets(a),
            (unsigned long long)s[STAT_MSGS_REDIRECTED],
            (unsigned long long)s[STAT_BYTES_REDIRECTED], (unsigned long long)s[STAT_MSGS_PASSED],
            (unsigned long long)s[STAT_FALLBACKS]);
}

static void accel_close(struct accel *a)
{
    if (a->ops_link != NULL) {
        bpf_link__destroy(a->ops_link);
        a->ops_link = NULL;
    }
    if (a->msg_attached) {
        bpf_prog_detach2(bpf_program__fd(a->skel->progs.seam_msg),
                         bpf_map__fd(a->skel->maps.seam_socks), BPF_SK_MSG_VERDICT);
        a->msg_attached = false;
    }
    if (a->skel != NULL) {
        seam_accel__destroy(a->skel);
        a->skel = NULL;
    }
    if (a->cgroup_fd >= 0) {
        close(a->cgroup_fd);
        a->cgroup_fd = -1;
    }
}

static int fail(struct accel *a, const char *event, const char *what, int err)
{
    const char *hint = (err == EPERM || err == EACCES)
                           ? " (seam-accel needs CAP_BPF and CAP_NET_ADMIN: run it as root)"
                           : "";
    sc_error(event, "what=\"%s\" error=\"%s%s\"", what, strerror(err), hint);
    accel_close(a);
    return 1;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void usage(FILE *f, const struct sc_flag *flags, size_t n)
{
    fprintf(f, "usage: seam-accel --cgroup DIR --port P [--port P ...] [flags]\n"
               "Moves the bytes of TCP connections inside cgroup DIR (cgroup v2) that have a\n"
               "selected port at one end straight to the other end's socket when both ends\n"
               "are on this host (sockmap). Select the sidecar's plain-text ports only.\n");
    sc_flags_usage(f, flags, n);
}

int main(int argc, char **argv)
{
    const char *cgroup = NULL;
    struct sc_strlist ports = {0};
    uint64_t drain_ms = 30000, stats_ms = 0, max_unanswered = 4u << 20;
    const char *log_level = "info";
    struct sc_flag flags[] = {
        {.name = "cgroup",
         .type = SC_FLAG_STRING,
         .out = &cgroup,
         .required = true,
         .help = "cgroup v2 directory whose sockets may take the short cut"},
        {.name = "port",
         .type = SC_FLAG_LIST,
         .out = &ports,
         .required = true,
         .help = "a selected port (repeat, or comma-separated): sidecar listener or app port"},
        {.name = "drain-timeout",
         .type = SC_FLAG_DURATION,
         .out = &drain_ms,
         .help = "on SIGTERM, how long open accelerated connections may still finish"},
        {.name = "max-unanswered",
         .type = SC_FLAG_SIZE,
         .out = &max_unanswered,
         .help = "a socket that sent this much with nothing coming back leaves the short cut "
                 "for TCP (its flow control); 4MiB by default, at least 64KiB"},
        {.name = "stats-interval",
         .type = SC_FLAG_DURATION,
         .out = &stats_ms,
         .help = "log the counters this often (0: only on SIGUSR1 and at exit)"},
        {.name = "log-level",
         .type = SC_FLAG_STRING,
         .out = &log_level,
         .help = "debug|info|warn|error"},
    };
    size_t nflags = sizeof(flags) / sizeof(flags[0]);
    char err[256];
    int rc = sc_flags_parse(flags, nflags, argc - 1, argv + 1, err, sizeof(err));
    if (rc != 0) {
        sc_strlist_cleanup(&ports);
        if (rc == 1) {
            usage(stdout, flags, nflags);
            return 0;
        }
        fprintf(stderr, "seam-accel: %s\nTry 'seam-accel --help'.\n", err);
        return EXIT_USAGE;
    }
    int lvl = sc_log_parse_level(log_level);
    if (lvl < 0) {
        fprintf(stderr, "seam-accel: --log-level: unknown level \"%s\"\n", log_level);
        sc_strlist_cleanup(&ports);
        return EXIT_USAGE;
    }
    sc_log_setup((enum sc_log_level)lvl, SC_LOG_TEXT);
    if (max_unanswered < 64u * 1024) {
        fprintf(stderr, "seam-accel: --max-unanswered: at least 64KiB\n");
        sc_strlist_cleanup(&ports);
        return EXIT_USAGE;
    }
    uint32_t port_vals[MAX_PORTS];
    size_t nports = 0;
    for (size_t i = 0; i < ports.num; i++) {
        char *save = NULL;
        for (char *tok = strtok_r(ports.items[i], ",", &save); tok != NULL;
             tok = strtok_r(NULL, ",", &save)) {
            if (nports == MAX_PORTS || parse_port(tok, &port_vals[nports]) != 0) {
                fprintf(stderr,
                        "seam-accel: --port: \"%s\" is not a port (1-65535, at most %d ports)\n",
                        tok, MAX_PORTS);
                sc_strlist_cleanup(&ports);
                return EXIT_USAGE;
            }
            nports++;
        }
    }
    if (nports == 0) {
        fprintf(stderr, "seam-accel: --port: no port given\n");
        sc_strlist_cleanup(&ports);
        return EXIT_USAGE;
    }
    sc_strlist_cleanup(&ports);

    struct accel a = {.cgroup_fd = -1};
    a.cgroup_fd = open(cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (a.cgroup_fd < 0) {
        return fail(&a, "accel.cgroup_failed", cgroup, errno);
    }
    struct statfs sfs;
    if (fstatfs(a.cgroup_fd, &sfs) != 0 || sfs.f_type != CGROUP2_MAGIC) {
        fprintf(stderr, "seam-accel: --cgroup: %s is not a cgroup v2 directory\n", cgroup);
        accel_close(&a);
        return EXIT_USAGE;
    }

    libbpf_set_print(libbpf_log);
    a.skel = seam_accel__open();
    if (a.skel == NULL) {
        return fail(&a, "accel.load_failed", "BPF object", errno);
    }
    a.skel->rodata->max_unanswered = max_unanswered;
    int err_load = seam_accel__load(a.skel);
    if (err_load != 0) {
        return fail(&a, "accel.load_failed", "BPF programs", -err_load);
    }
    uint32_t one = 1;
    for (size_t i = 0; i < nports; i++) {
        if (bpf_map_update_elem(bpf_map__fd(a.skel->maps.seam_ports), &port_vals[i], &one,
                                BPF_ANY) != 0) {
            return fail(&a, "accel.load_failed", "port map", errno);
        }
    }
    if (bpf_prog_attach(bpf_program__fd(a.skel->progs.seam_msg),
                        bpf_map__fd(a.skel->maps.seam_socks), BPF_SK_MSG_VERDICT, 0) != 0) {
        return fail(&a, "accel.attach_failed", "sk_msg to sockhash", errno);
    }
    a.msg_attached = true;
    a.ops_link = bpf_program__attach_cgroup(a.skel->progs.seam_sockops, a.cgroup_fd);
    if (a.ops_link == NULL) {
        return fail(&a, "accel.attach_failed", "sock_ops to cgroup", errno);
    }

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    char plist[MAX_PORTS * 7] = "";
    for (size_t i = 0, off = 0; i < nports; i++) {
        off +=
            (size_t)snprintf(plist + off, sizeof(plist) - off, "%s%u", i ? "," : "", port_vals[i]);
    }
    sc_info("accel.ready", "cgroup=%s ports=%s max_unanswered=%llu", cgroup, plist,
            (unsigned long long)max_unanswered);

    uint64_t next_stats = stats_ms ? now_ms() + stats_ms : 0;
    uint64_t drain_deadline = 0;
    for (;;) {
        int timeout = -1;
        uint64_t now = now_ms();
        if (drain_deadline) {
            if (open_sockets(&a) == 0 || now >= drain_deadline) {
                break;
            }
            timeout = 100; // poll the sockhash until it is empty
        } else if (next_stats) {
            timeout = next_stats > now ? (int)(next_stats - now) : 0;
        }
        struct timespec ts = {timeout / 1000, (long)(timeout % 1000) * 1000000L};
        siginfo_t si;
        int sig = sigtimedwait(&set, &si, timeout < 0 ? NULL : &ts);
        if (sig == SIGUSR1) {
            log_stats(&a, "accel.stats");
        } else if ((sig == SIGTERM || sig == SIGINT) && !drain_deadline) {
            // New connections take the ordinary path from here on.
            bpf_link__destroy(a.ops_link);
            a.ops_link = NULL;
            drain_deadline = now_ms() + drain_ms;
            sc_info("accel.draining", "open=%zu timeout_ms=%llu", open_sockets(&a),
                    (unsigned long long)drain_ms);
        }
        if (next_stats && now_ms() >= next_stats && !drain_deadline) {
            log_stats(&a, "accel.stats");
            next_stats = now_ms() + stats_ms;
        }
    }
    size_t left = open_sockets(&a);
    if (left) {
        sc_warn("accel.drain_timeout", "open=%zu (their unread redirected bytes are dropped)",
                left);
    }
    log_stats(&a, "accel.stopped");
    accel_close(&a);
    return 0;
}
