/*
 * ratebench - tiny open-loop HTTP/1.1 load tool for the peerbench harness.
 *
 *   ratebench rate HOST PORT PATH CONNS RPS SECONDS [WARMUP_S]
 *       Sends RPS requests/s in total, spread over CONNS keep-alive
 *       connections, each connection on a fixed schedule (wrk2 style).
 *       Latency is measured from the *intended* send time, so a stalled
 *       connection is charged for the queueing it causes (no coordinated
 *       omission).  Prints one key=value line with percentiles in us.
 *
 *   ratebench hold HOST PORT PATH CONNS SECONDS [SETUP_MAX_S]
 *       Opens CONNS connections, completes one request on each (so an
 *       L4 proxy has established its upstream (m)TLS leg), then keeps them
 *       all open and idle for SECONDS, printing "held=N" when ready.
 *       Stops opening new connections after SETUP_MAX_S (default 120) s.
 *
 * Only ever point it at loopback.  Single-threaded, epoll.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RBUF 65536

typedef struct {
    int fd;
    int busy; /* request outstanding */
    int connected;
    uint64_t next_ns; /* intended time of next send */
    uint64_t sent_ns; /* intended time of outstanding request */
    uint64_t interval_ns;
    size_t got; /* bytes of current response received */
    long need;  /* total response bytes needed, -1 unknown */
    char buf[RBUF];
} conn_t;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* in_own_netns: true when this process runs in a named network namespace
 * (`ip netns add`, bound under /run/netns), not the host's: bench/mesh.py
 * runs the client inside a pod namespace it created, whose addresses exist
 * nowhere else. */
static int in_own_netns(void)
{
    struct stat self, ns;
    if (stat("/proc/self/ns/net", &self) != 0)
        return 0;
    DIR *d = opendir("/run/netns");
    if (d == NULL)
        return 0;
    int found = 0;
    for (struct dirent *e; !found && (e = readdir(d)) != NULL;) {
        char path[512];
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/run/netns/%s", e->d_name);
        found = stat(path, &ns) == 0 && ns.st_ino == self.st_ino && ns.st_dev == self.st_dev;
    }
    closedir(d);
    return found;
}

static char req[512];
static size_t reqlen;

static int dial(const char *host, int port, int nonblock)
{
    int fd = socket(AF_INET, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    inet_pton(AF_INET, host, &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

/* returns 1 when a full response is in c->buf, 0 if more needed, -1 error */
static int parse_resp(conn_t *c)
{
    if (c->need < 0) {
        c->buf[c->got < RBUF ? c->got : RBUF - 1] = 0;
        char *eoh = strstr(c->buf, "\r\n\r\n");
        if (!eoh)
            return 0;
        long clen = 0;
        char *p = strcasestr(c->buf, "\r\ncontent-length:");
        if (p && p < eoh)
            clen = strtol(p + 17, NULL, 10);
        c->need = (eoh + 4 - c->buf) + clen;
    }
    return (long)c->got >= c->need ? 1 : 0;
}

static int do_read(conn_t *c)
{
    for (;;) {
        ssize_t n = read(c->fd, c->buf + c->got, RBUF - 1 - c->got);
        if (n > 0) {
            c->got += n;
            if (c->got >= RBUF - 1)
                return -1;
            continue;
        }
        if (n == 0)
            return -1;
        if (errno == EAGAIN)
            return 0;
        return -1;
    }
}

static int mode_rate(const char *host, int port, int nconn, double rps, double secs, double warm)
{
    int ep = epoll_create1(0);
    conn_t *cs = calloc(nconn, sizeof(conn_t));
    uint64_t t0 = now_ns() + 20000000ull; /* start in 20 ms */
    uint64_t interval = (uint64_t)(1e9 * nconn / rps);
    uint64_t warm_end = t0 + (uint64_t)(warm * 1e9);
    uint64_t end = warm_end + (uint64_t)(secs * 1e9);
    size_t cap = (size_t)(rps * (secs + 1)) + 1024, nlat = 0;
    uint64_t *lat = malloc(cap * sizeof(uint64_t));
    long errors = 0, reconnects = 0, sent = 0, late = 0;
    for (int i = 0; i < nconn; i++) {
        cs[i].fd = dial(host, port, 1);
        if (cs[i].fd < 0) {
            fprintf(stderr, "connect failed\n");
            return 1;
        }
        cs[i].interval_ns = interval;
        cs[i].next_ns = t0 + (interval * i) / nconn; /* stagger */
        cs[i].need = -1;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
    }
    struct epoll_event evs[256];
    for (;;) {
        uint64_t now = now_ns();
        if (now >= end)
            break;
        /* send every due, idle connection */
        uint64_t soonest = end;
        for (int i = 0; i < nconn; i++) {
            conn_t *c = &cs[i];
            if (!c->busy && c->next_ns <= now) {
                ssize_t w = write(c->fd, req, reqlen);
                if (w != (ssize_t)reqlen) {
                    errors++;
                    goto reconnect;
                }
                if (now - c->next_ns > 1000000ull)
                    late++;
                c->busy = 1;
                c->sent_ns = c->next_ns;
                c->got = 0;
                c->need = -1;
                c->next_ns += c->interval_ns;
                sent++;
                continue;
            reconnect:
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = dial(host, port, 1);
                reconnects++;
                c->busy = 0;
                c->next_ns = now + c->interval_ns;
                if (c->fd >= 0) {
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = i};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
                }
            }
            if (!c->busy && c->next_ns < soonest)
                soonest = c->next_ns;
        }
        now = now_ns();
        uint64_t d = soonest > now ? soonest - now : 0;
        struct timespec tmo = {(time_t)(d / 1000000000ull), (long)(d % 1000000000ull)};
        int n = epoll_pwait2(ep, evs, 256, &tmo, NULL); /* ns-resolution timeout */
        for (int k = 0; k < n; k++) {
            conn_t *c = &cs[evs[k].data.u32];
            int r = do_read(c);
            int done = c->got ? parse_resp(c) : 0;
            if (done == 1) {
                uint64_t t = now_ns();
                if (c->sent_ns >= warm_end && nlat < cap)
                    lat[nlat++] = t - c->sent_ns;
                c->busy = 0;
                c->got = 0;
                c->need = -1;
            } else if (r < 0) {
                errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = dial(host, port, 1);
                reconnects++;
                c->busy = 0;
                if (c->fd >= 0) {
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP,
                                             .data.u32 = evs[k].data.u32};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
                }
            }
        }
    }
    qsort(lat, nlat, sizeof(uint64_t), cmp_u64);
    double sum = 0;
    for (size_t i = 0; i < nlat; i++)
        sum += lat[i];
#define PCT(p) (nlat ? lat[(size_t)((p) / 100.0 * (nlat - 1))] / 1000.0 : 0)
    printf("mode=rate target_rps=%.0f conns=%d secs=%.0f completed=%zu achieved_rps=%.1f "
           "p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f mean_us=%.1f "
           "errors=%ld reconnects=%ld late_sends=%ld\n",
           rps, nconn, secs, nlat, nlat / secs, PCT(50), PCT(90), PCT(99), PCT(99.9),
           nlat ? lat[nlat - 1] / 1000.0 : 0, nlat ? sum / nlat / 1000.0 : 0, errors, reconnects,
           late);
    fflush(stdout);
    for (int i = 0; i < nconn; i++)
        if (cs[i].fd >= 0)
            close(cs[i].fd);
    close(ep);
    free(lat);
    free(cs);
    return 0;
}

static int mode_hold(const char *host, int port, int nconn, double secs, double setup_max)
{
    int held = 0;
    int *fds = calloc(nconn, sizeof(int));
    uint64_t setup_end = now_ns() + (uint64_t)(setup_max * 1e9);
    for (int i = 0; i < nconn && now_ns() < setup_end; i++) {
        int fd = dial(host, port, 0);
        if (fd < 0)
            continue;
        struct timeval tv = {5, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (write(fd, req, reqlen) != (ssize_t)reqlen) {
            close(fd);
            continue;
        }
        conn_t c;
        memset(&c, 0, sizeof c);
        c.fd = fd;
        c.need = -1;
        int ok = 0;
        for (;;) {
            ssize_t n = read(fd, c.buf + c.got, RBUF - 1 - c.got);
            if (n <= 0)
                break;
            c.got += n;
            if (parse_resp(&c) == 1) {
                ok = 1;
                break;
            }
        }
        if (!ok) {
            close(fd);
            continue;
        }
        fds[held++] = fd;
    }
    printf("held=%d\n", held);
    fflush(stdout);
    struct timespec ts = {(time_t)secs, (long)((secs - (time_t)secs) * 1e9)};
    nanosleep(&ts, NULL);
    for (int i = 0; i < held; i++)
        close(fds[i]);
    free(fds);
    return held == nconn ? 0 : 2;
}

int main(int argc, char **argv)
{
    if (argc < 7) {
        fprintf(stderr,
                "usage: %s rate HOST PORT PATH CONNS RPS SECONDS [WARMUP]\n"
                "       %s hold HOST PORT PATH CONNS SECONDS [SETUP_MAX_S]\n",
                argv[0], argv[0]);
        return 1;
    }
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* precise wakeups for the send schedule */
    const char *host = argv[2];
    if (strncmp(host, "127.", 4) != 0 && !in_own_netns()) {
        fprintf(stderr,
                "loopback only (or any address from inside a network namespace of the caller's)\n");
        return 1;
    }
    int port = atoi(argv[3]);
    reqlen =
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: ratebench\r\n\r\n",
                 argv[4], host, port);
    int nconn = atoi(argv[5]);
    if (!strcmp(argv[1], "rate") && argc >= 8)
        return mode_rate(host, port, nconn, atof(argv[6]), atof(argv[7]),
                         argc > 8 ? atof(argv[8]) : 1.0);
    if (!strcmp(argv[1], "hold"))
        return mode_hold(host, port, nconn, atof(argv[6]), argc > 7 ? atof(argv[7]) : 120.0);
    fprintf(stderr, "bad mode\n");
    return 1;
}
