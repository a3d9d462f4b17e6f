// tests/tools/delayline.c - a link with a round trip between two network
// namespaces, for a kernel without netem (tests/e2e/path and bench/rtt.py).
//
//   delayline --ns-a PATH --ns-b PATH --delay-us D [--mtu M] [--queue N]
//             [--rate-mbit R]
//
// Creates a tun device "dlA" inside the namespace at PATH A and "dlB" inside
// B (setns, then /dev/net/tun: the devices exist only while this process
// runs), prints "ready" and then moves every IP packet read from one device to
// the other D microseconds later, one packet per write, in the order read. So
// the packets arrive spaced as the sender's TCP sent them (its pacing, its
// segment sizes up to the MTU) and a round trip is 2 D plus the stack's time
// - unlike a TCP relay, which delivers what it read as one burst.
// With --rate-mbit a packet also waits for the one before it to have been
// "sent" at R Mbit/s: a bottleneck with a queue of at most N packets.
// A packet that finds N packets queued in its direction (in the delay or at
// the bottleneck) is dropped and counted, as is one longer than the MTU.
// SIGTERM or SIGINT ends it with one line of counts on stdout; so does the
// end of the process that started it.
// The caller sets the devices' addresses, MTU and routes (ip -n NS ...).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    uint64_t due_ns;
    uint32_t len;
} slot_hdr;

typedef struct {
    int in_fd, out_fd;
    uint8_t *slots; // queue_n slots of slot_size bytes: header, then packet
    size_t slot_size;
    uint32_t head, count;
    uint64_t last_due_ns; // when the previous packet leaves the bottleneck
    uint64_t pkts, bytes, drops, truncated, write_errors;
    uint32_t max_count;
} direction;

static uint32_t queue_n = 8192;
static uint32_t mtu = 9000;
static uint64_t delay_ns;
static uint64_t ns_per_byte_x1000; // 0: no rate limit

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "delayline: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int open_tun_in(const char *ns_path, const char *name)
{
    int nsfd = open(ns_path, O_RDONLY | O_CLOEXEC);
    if (nsfd < 0) {
        die(ns_path);
    }
    if (setns(nsfd, CLONE_NEWNET) != 0) {
        die("setns");
    }
    close(nsfd);
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        die("/dev/net/tun");
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
    if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
        die("TUNSETIFF");
    }
    return fd;
}

static slot_hdr *slot_at(direction *d, uint32_t i)
{
    return (slot_hdr *)(d->slots + (size_t)(i % queue_n) * d->slot_size);
}

// Reads every packet waiting on d->in_fd into the queue.
static void drain(direction *d)
{
    for (;;) {
        slot_hdr *s = NULL;
        static uint8_t spill[65536];
        uint8_t *buf;
        size_t cap;
        int full = d->count == queue_n;
        if (full) {
            buf = spill;
            cap = sizeof(spill);
        } else {
            s = slot_at(d, d->head + d->count);
            buf = (uint8_t *)(s + 1);
            cap = d->slot_size - sizeof(*s);
        }
        ssize_t n = read(d->in_fd, buf, cap);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN) {
                die("read");
            }
            return;
        }
        if (full) {
            d->drops++;
            continue;
        }
        if ((size_t)n == cap) {
            d->truncated++; // longer than --mtu: cut, so not passed on
            continue;
        }
        uint64_t t = now_ns();
        uint64_t due = t + delay_ns;
        if (ns_per_byte_x1000) {
            // The bottleneck sends one packet after the other: this one
            // starts when the previous one is out, or now.
            uint64_t start = d->last_due_ns > t ? d->last_due_ns : t;
            d->last_due_ns = start + (uint64_t)n * ns_per_byte_x1000 / 1000;
            due = d->last_due_ns + delay_ns;
        }
        s->due_ns = due;
        s->len = (uint32_t)n;
        d->count++;
        if (d->count > d->max_count) {
            d->max_count = d->count;
        }
    }
}

// Writes the packets whose time has come; returns the next one's due time or 0.
static uint64_t flush(direction *d, uint64_t t)
{
    while (d->count) {
        slot_hdr *s = slot_at(d, d->head);
        if (s->due_ns > t) {
            return s->due_ns;
        }
        ssize_t n = write(d->out_fd, s + 1, s->len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n != (ssize_t)s->len) {
            d->write_errors++;
        } else {
            d->pkts++;
            d->bytes += s->len;
        }
        d->head = (d->head + 1) % queue_n;
        d->count--;
    }
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: delayline --ns-a PATH --ns-b PATH --delay-us D [--mtu M] "
                    "[--queue N] [--rate-mbit R]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) {
        die("prctl");
    }
    const char *ns_a = NULL, *ns_b = NULL;
    long delay_us = -1, rate_mbit = 0;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) {
            usage();
        }
        const char *v = argv[++i];
        char *end;
        if (!strcmp(argv[i - 1], "--ns-a")) {
            ns_a = v;
        } else if (!strcmp(argv[i - 1], "--ns-b")) {
            ns_b = v;
        } else if (!strcmp(argv[i - 1], "--delay-us")) {
            delay_us = strtol(v, &end, 10);
            if (*end || delay_us < 0 || delay_us > 10000000) {
                usage();
            }
        } else if (!strcmp(argv[i - 1], "--mtu")) {
            long m = strtol(v, &end, 10);
            if (*end || m < 576 || m > 65535) {
                usage();
            }
            mtu = (uint32_t)m;
        } else if (!strcmp(argv[i - 1], "--queue")) {
            long q = strtol(v, &end, 10);
            if (*end || q < 16 || q > 1000000) {
                usage();
            }
            queue_n = (uint32_t)q;
        } else if (!strcmp(argv[i - 1], "--rate-mbit")) {
            rate_mbit = strtol(v, &end, 10);
            if (*end || rate_mbit < 1 || rate_mbit > 1000000) {
                usage();
            }
        } else {
            usage();
        }
    }
    if (!ns_a || !ns_b || delay_us < 0) {
        usage();
    }
    delay_ns = (uint64_t)delay_us * 1000u;
    if (rate_mbit) {
        // 8 bits per byte at R Mbit/s: 8000 / R ns per byte, kept x1000.
        ns_per_byte_x1000 = 8000000u / (uint64_t)rate_mbit;
    }

    int orig = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (orig < 0) {
        die("/proc/self/ns/net");
    }
    direction d[2];
    memset(d, 0, sizeof(d));
    int fa = open_tun_in(ns_a, "dlA");
    int fb = open_tun_in(ns_b, "dlB");
    if (setns(orig, CLONE_NEWNET) != 0) {
        die("setns back");
    }
    close(orig);
    d[0].in_fd = fa;
    d[0].out_fd = fb;
    d[1].in_fd = fb;
    d[1].out_fd = fa;
    for (int i = 0; i < 2; i++) {
        d[i].slot_size = (sizeof(slot_hdr) + mtu + 64 + 15) & ~(size_t)15;
        d[i].slots = malloc(d[i].slot_size * queue_n);
        if (!d[i].slots) {
            die("malloc");
        }
    }

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) != 0) {
        die("sigprocmask");
    }
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (sfd < 0 || tfd < 0 || ep < 0) {
        die("signalfd/timerfd/epoll");
    }
    int fds[4] = {fa, fb, tfd, sfd};
    for (int i = 0; i < 4; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) != 0) {
            die("epoll_ctl");
        }
    }
    printf("ready\n");
    fflush(stdout);

    for (;;) {
        struct epoll_event evs[4];
        int n = epoll_wait(ep, evs, 4, -1);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            uint32_t which = evs[i].data.u32;
            if (which < 2) {
                drain(&d[which]);
            } else if (which == 2) {
                uint64_t expirations;
                if (read(tfd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN) {
                    die("timerfd read");
                }
            } else {
                printf("a->b pkts=%llu bytes=%llu drops=%llu truncated=%llu write_errors=%llu "
                       "max_queued=%u; b->a pkts=%llu bytes=%llu drops=%llu truncated=%llu "
                       "write_errors=%llu max_queued=%u\n",
                       (unsigned long long)d[0].pkts, (unsigned long long)d[0].bytes,
                       (unsigned long long)d[0].drops, (unsigned long long)d[0].truncated,
                       (unsigned long long)d[0].write_errors, d[0].max_count,
                       (unsigned long long)d[1].pkts, (unsigned long long)d[1].bytes,
                       (unsigned long long)d[1].drops, (unsigned long long)d[1].truncated,
                       (unsigned long long)d[1].write_errors, d[1].max_count);
                fflush(stdout);
                free(d[0].slots);
                free(d[1].slots);
                return 0;
            }
        }
        uint64_t t = now_ns();
        uint64_t next = 0;
        for (int i = 0; i < 2; i++) {
            uint64_t due = flush(&d[i], t);
            if (due && (!next || due < next)) {
                next = due;
            }
        }
        struct itimerspec its;
        memset(&its, 0, sizeof(its));
        if (next) {
            its.it_value.tv_sec = (time_t)(next / 1000000000u);
            its.it_value.tv_nsec = (long)(next % 1000000000u);
        }
        if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) != 0) {
            die("timerfd_settime");
        }
    }
}
