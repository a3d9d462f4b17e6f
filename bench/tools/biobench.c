/*
 * biobench - the memory-BIO vs direct-fd question of bench/NOTES.md §3 and §17,
 * measured on one TLS 1.3 connection over loopback, without a proxy around it.
 *
 *   biobench PKI_DIR MIB [ROUNDS]
 *
 * A sender process (pinned to CPU 1) pushes MIB MiB of application data
 * through SSL_write to a receiver process (pinned to CPU 0) that SSL_reads
 * it, once per mode and round, modes in turn (fd mem fd mem ...):
 *
 *   fd   nginx style (SSL_set_fd): BoringSSL's BIO calls go straight to the
 *        socket, one read()/write() per call: each 16 KiB record is written
 *        on its own, and a record is read as its 5-byte header, then its
 *        body. The BIO here is a pass-through that counts the calls; it
 *        does what BIO_s_socket does.
 *   mem  seam style (sidecar/src/tls/tls_conn.c): ciphertext goes through
 *        our buffers. The sender's records are copied into a 256 KiB buffer,
 *        written when it is full and after each SSL_write; the receiver
 *        reads up to 256 KiB of ciphertext per read() and BoringSSL copies
 *        its records out of that buffer.
 *
 * Both modes SSL_write 256 KiB - 512 bytes of plaintext at a time and
 * SSL_read into a buffer that size (what seam reads into its 256 KiB bulk
 * buffers). Printed per mode, the median of the rounds (min-max): Gbit/s,
 * each side's user and kernel CPU seconds per GB (getrusage of the process
 * over the transfer, handshake excluded), and syscalls per MiB on each side; then one key=value
 * line of the medians for bench/run.sh (fd_gbits fd_cpu_s_gb fd_calls_mib, the same for mem; CPU
 * and calls summed over both ends). Sockets use reno, as seam's loopback
 * sockets do (--loopback-cc auto), so the pacing of BBR does not blur it.
 * Certificates: PKI_DIR/server.pem and server.key (tests/certs/gen.sh); the
 * client does not verify (only the record layer is measured).
 *
 * Build: gcc -O2 -I/usr/include/android -L/usr/lib/x86_64-linux-gnu/android \
 *        -Wl,-rpath,/usr/lib/x86_64-linux-gnu/android biobench.c -lssl -lcrypto
 * Loopback only; the child is waited for.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (256 * 1024)
/* What seam reads into a 256 KiB buffer (SC_BUF_READ_RESERVE): the records of
 * one read, once encrypted, still fit one buffer and leave in one write. */
#define PLAIN (CHUNK - 512)
#define MAX_ROUNDS 15

enum mode { M_FD, M_MEM };
static const char *mode_name[] = {"fd", "mem"};

struct io {
    int fd;
    enum mode mode;
    uint64_t reads, writes;
    /* mem mode */
    char *out;
    size_t out_len;
    char *in;
    size_t in_off, in_len;
    bool hs; /* handshaking: a flush (end of a flight) writes the buffer */
};

static void die(const char *m)
{
    fprintf(stderr, "biobench: %s (%s)\n", m, strerror(errno));
    ERR_print_errors_fp(stderr);
    exit(1);
}

static void write_all(struct io *io, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t r = write(io->fd, p, n);
        io->writes++;
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            die("write");
        }
        p += r;
        n -= (size_t)r;
    }
}

static int bio_write_cb(BIO *b, const char *data, int len)
{
    struct io *io = BIO_get_data(b);
    if (io->mode == M_FD) {
        write_all(io, data, (size_t)len);
        return len;
    }
    size_t left = (size_t)len;
    while (left > 0) {
        size_t n = CHUNK - io->out_len;
        if (n > left) {
            n = left;
        }
        memcpy(io->out + io->out_len, data, n);
        io->out_len += n;
        data += n;
        left -= n;
        if (io->out_len == CHUNK) {
            write_all(io, io->out, io->out_len);
            io->out_len = 0;
        }
    }
    return len;
}

static int bio_read_cb(BIO *b, char *out, int len)
{
    struct io *io = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (io->mode == M_FD) {
        ssize_t r;
        do {
            r = read(io->fd, out, (size_t)len);
            io->reads++;
        } while (r < 0 && errno == EINTR);
        return (int)r;
    }
    if (io->in_off == io->in_len) {
        ssize_t r;
        do {
            r = read(io->fd, io->in, CHUNK);
            io->reads++;
        } while (r < 0 && errno == EINTR);
        if (r <= 0) {
            return (int)r;
        }
        io->in_off = 0;
        io->in_len = (size_t)r;
    }
    size_t n = io->in_len - io->in_off;
    if (n > (size_t)len) {
        n = (size_t)len;
    }
    memcpy(out, io->in + io->in_off, n);
    io->in_off += n;
    return (int)n;
}

static void flush_mem(struct io *io)
{
    if (io->mode == M_MEM && io->out_len > 0) {
        write_all(io, io->out, io->out_len);
        io->out_len = 0;
    }
}

/* Blocking sockets: a handshake flight must leave before its writer waits for
 * the answer (seam's non-blocking loop writes it when SSL_do_handshake returns
 * WANT_READ). Application data is written when the buffer fills and after
 * each SSL_write, as seam does. */
static long bio_ctrl_cb(BIO *b, int cmd, long larg, void *parg)
{
    (void)larg, (void)parg;
    struct io *io = BIO_get_data(b);
    if (cmd != BIO_CTRL_FLUSH) {
        return 0;
    }
    if (io->hs) {
        flush_mem(io);
    }
    return 1;
}

static BIO_METHOD *method;

static SSL *make_ssl(SSL_CTX *ctx, struct io *io)
{
    SSL *ssl = SSL_new(ctx);
    BIO *b = BIO_new(method);
    if (ssl == NULL || b == NULL) {
        die("SSL_new");
    }
    BIO_set_data(b, io);
    BIO_set_init(b, 1);
    SSL_set_bio(ssl, b, b);
    return ssl;
}

static double cpu_s(const struct timeval *tv)
{
    return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sysconf(_SC_NPROCESSORS_ONLN) > cpu) {
        sched_setaffinity(0, sizeof(set), &set);
    }
}

static void set_reno(int fd)
{
    setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, "reno", 4);
}

/* One side's result of one transfer. */
struct side {
    double user, sys, wall;
    uint64_t calls;
};

static struct side usage_since(const struct rusage *r0, double t0, const struct io *io)
{
    struct rusage r1;
    getrusage(RUSAGE_SELF, &r1);
    struct side s = {
        .user = cpu_s(&r1.ru_utime) - cpu_s(&r0->ru_utime),
        .sys = cpu_s(&r1.ru_stime) - cpu_s(&r0->ru_stime),
        .wall = now_s() - t0,
        .calls = io->reads + io->writes,
    };
    return s;
}

static void sender(SSL_CTX *cctx, int fd, enum mode m, uint64_t bytes, int report_fd)
{
    pin(1);
    struct io io = {.fd = fd, .mode = m, .in = malloc(CHUNK), .out = malloc(CHUNK), .hs = true};
    char *plain = malloc(CHUNK);
    if (io.in == NULL || io.out == NULL || plain == NULL) {
        die("malloc");
    }
    memset(plain, 'x', CHUNK);
    SSL *ssl = make_ssl(cctx, &io);
    SSL_set_connect_state(ssl);
    if (SSL_do_handshake(ssl) != 1) {
        die("client handshake");
    }
    flush_mem(&io);
    io.hs = false;
    struct rusage r0;
    getrusage(RUSAGE_SELF, &r0);
    io.reads = io.writes = 0;
    double t0 = now_s();
    for (uint64_t sent = 0; sent < bytes; sent += PLAIN) {
        if (SSL_write(ssl, plain, PLAIN) != PLAIN) {
            die("SSL_write");
        }
        flush_mem(&io);
    }
    struct side s = usage_since(&r0, t0, &io);
    SSL_shutdown(ssl);
    flush_mem(&io);
    if (write(report_fd, &s, sizeof(s)) != (ssize_t)sizeof(s)) {
        die("report");
    }
    SSL_free(ssl);
    free(plain);
    free(io.in);
    free(io.out);
}

static struct side receiver(SSL_CTX *sctx, int fd, enum mode m, uint64_t bytes)
{
    struct io io = {.fd = fd, .mode = m, .in = malloc(CHUNK), .out = malloc(CHUNK), .hs = true};
    char *plain = malloc(CHUNK);
    if (io.in == NULL || io.out == NULL || plain == NULL) {
        die("malloc");
    }
    SSL *ssl = make_ssl(sctx, &io);
    SSL_set_accept_state(ssl);
    if (SSL_do_handshake(ssl) != 1) {
        die("server handshake");
    }
    flush_mem(&io);
    io.hs = false;
    struct rusage r0 = {0};
    double t0 = 0;
    uint64_t got = 0;
    bool started = false;
    while (got < bytes) {
        int r = SSL_read(ssl, plain, PLAIN);
        if (r <= 0) {
            die("SSL_read");
        }
        if (!started) { /* start the clock at the first byte: handshake excluded */
            started = true;
            getrusage(RUSAGE_SELF, &r0);
            io.reads = io.writes = 0;
            t0 = now_s();
        }
        got += (uint64_t)r;
    }
    struct side s = usage_since(&r0, t0, &io);
    SSL_free(ssl);
    free(plain);
    free(io.in);
    free(io.out);
    return s;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void stat3(double *v, int n, double *med, double *lo, double *hi)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_d);
    *med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    *lo = v[0];
    *hi = v[n - 1];
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s PKI_DIR MIB [ROUNDS]\n", argv[0]);
        return 2;
    }
    uint64_t mib = strtoull(argv[2], NULL, 10);
    int rounds = argc > 3 ? atoi(argv[3]) : 3;
    if (mib == 0 || rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "biobench: MIB must be > 0 and ROUNDS 1-%d\n", MAX_ROUNDS);
        return 2;
    }
    uint64_t bytes = mib << 20;
    char p[4096];
    method = BIO_meth_new(BIO_TYPE_SOURCE_SINK, "biobench");
    BIO_meth_set_write(method, bio_write_cb);
    BIO_meth_set_read(method, bio_read_cb);
    BIO_meth_set_ctrl(method, bio_ctrl_cb);
    SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(sctx, TLS1_3_VERSION);
    SSL_CTX_set_min_proto_version(cctx, TLS1_3_VERSION);
    snprintf(p, sizeof p, "%s/server.pem", argv[1]);
    if (SSL_CTX_use_certificate_chain_file(sctx, p) != 1) {
        die("server.pem");
    }
    snprintf(p, sizeof p, "%s/server.key", argv[1]);
    if (SSL_CTX_use_PrivateKey_file(sctx, p, SSL_FILETYPE_PEM) != 1) {
        die("server.key");
    }
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);

    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(ls, 4) != 0 ||
        getsockname(ls, (struct sockaddr *)&a, &al) != 0) {
        die("listen on 127.0.0.1");
    }
    /* [mode][round] */
    static double gbit[2][MAX_ROUNDS], su[2][MAX_ROUNDS], ss[2][MAX_ROUNDS], sc[2][MAX_ROUNDS],
        ru[2][MAX_ROUNDS], rs[2][MAX_ROUNDS], rc[2][MAX_ROUNDS];
    double gb = (double)bytes / 1e9, mb = (double)bytes / (1 << 20);
    pin(0);
    for (int round = 0; round < rounds; round++) {
        for (int m = M_FD; m <= M_MEM; m++) {
            int rep[2];
            if (pipe(rep) != 0) {
                die("pipe");
            }
            pid_t pid = fork();
            if (pid < 0) {
                die("fork");
            }
            if (pid == 0) {
                close(rep[0]);
                int fd = socket(AF_INET, SOCK_STREAM, 0);
                set_reno(fd);
                if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
                    die("connect");
                }
                sender(cctx, fd, (enum mode)m, bytes, rep[1]);
                close(fd);
                _exit(0);
            }
            close(rep[1]);
            int fd = accept(ls, NULL, NULL);
            if (fd < 0) {
                die("accept");
            }
            set_reno(fd);
            struct side r = receiver(sctx, fd, (enum mode)m, bytes);
            struct side s;
            if (read(rep[0], &s, sizeof(s)) != (ssize_t)sizeof(s)) {
                die("sender report");
            }
            close(rep[0]);
            close(fd);
            int st;
            waitpid(pid, &st, 0);
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                fprintf(stderr, "biobench: sender failed\n");
                return 1;
            }
            gbit[m][round] = gb * 8 / r.wall;
            su[m][round] = s.user / gb;
            ss[m][round] = s.sys / gb;
            sc[m][round] = (double)s.calls / mb;
            ru[m][round] = r.user / gb;
            rs[m][round] = r.sys / gb;
            rc[m][round] = (double)r.calls / mb;
        }
    }
    printf("| mode | Gbit/s | sender user s/GB | sender kernel s/GB | sender syscalls/MiB "
           "| receiver user s/GB | receiver kernel s/GB | receiver syscalls/MiB |\n");
    printf("|---|---|---|---|---|---|---|---|\n");
    for (int m = M_FD; m <= M_MEM; m++) {
        double *cols[] = {gbit[m], su[m], ss[m], sc[m], ru[m], rs[m], rc[m]};
        printf("| %s |", mode_name[m]);
        for (size_t c = 0; c < sizeof(cols) / sizeof(cols[0]); c++) {
            double med, lo, hi;
            stat3(cols[c], rounds, &med, &lo, &hi);
            const char *f = (c == 3 || c == 6) ? " %.1f (%.1f-%.1f) |" : " %.3f (%.3f-%.3f) |";
            printf(f, med, lo, hi);
        }
        printf("\n");
    }
    printf("\n%llu MiB per transfer, median (min-max) of %d rounds; sender on CPU 1, receiver "
           "on CPU 0; TLS 1.3 %s\n",
           (unsigned long long)mib, rounds, "AES-128-GCM (BoringSSL default on AES-NI)");
    for (int m = M_FD; m <= M_MEM; m++) {
        double cpu[MAX_ROUNDS], calls[MAX_ROUNDS], g, c, k, lo, hi;
        for (int i = 0; i < rounds; i++) {
            cpu[i] = su[m][i] + ss[m][i] + ru[m][i] + rs[m][i];
            calls[i] = sc[m][i] + rc[m][i];
        }
        stat3(gbit[m], rounds, &g, &lo, &hi);
        stat3(cpu, rounds, &c, &lo, &hi);
        stat3(calls, rounds, &k, &lo, &hi);
        printf("%s%s_gbits=%.2f %s_cpu_s_gb=%.3f %s_calls_mib=%.0f", m == M_FD ? "" : " ",
               mode_name[m], g, mode_name[m], c, mode_name[m], k);
    }
    printf("\n");
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    close(ls);
    return 0;
}
