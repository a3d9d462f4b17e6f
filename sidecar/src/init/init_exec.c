// init_exec.c — run iptables tools with fork/exec (no shell), feeding stdin
// and capturing stdout/stderr through poll() so neither side can block.
#define _GNU_SOURCE // pipe2
#include "init_int.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define CAPTURE_MAX (16u << 20)

struct capture {
    char *buf;
    size_t len;
    size_t cap;
};

static int capture_read(struct capture *c, int fd)
{
    if (c->cap - c->len < 4097) {
        size_t cap = c->cap == 0 ? 8192 : c->cap * 2;
        if (cap > CAPTURE_MAX) {
            return -1;
        }
        char *buf = realloc(c->buf, cap);
        if (buf == NULL) {
            return -1;
        }
        c->buf = buf;
        c->cap = cap;
    }
    ssize_t n = read(fd, c->buf + c->len, c->cap - c->len - 1);
    if (n < 0) {
        return errno == EINTR || errno == EAGAIN ? 1 : -1;
    }
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    return n == 0 ? 0 : 1;
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

int sc_init_run(const char *const argv[], const char *input, char **out_stdout, char **out_stderr)
{
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
    struct capture cout = {0}, cerr = {0};
    int status = -1;
    pid_t pid = -1;

    *out_stdout = NULL;
    *out_stderr = NULL;
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
        goto cleanup;
    }
    pid = fork();
    if (pid < 0) {
        goto cleanup;
    }
    if (pid == 0) {
        signal(SIGPIPE, SIG_DFL);
        dup2(in[0], 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        execv(argv[0], (char *const *)argv);
        dprintf(2, "cannot execute %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close_fd(&in[0]);
    close_fd(&out[1]);
    close_fd(&err[1]);
    // A child that exits without reading stdin must not kill us with SIGPIPE.
    signal(SIGPIPE, SIG_IGN);
    fcntl(in[1], F_SETFL, O_NONBLOCK);

    size_t in_len = input != NULL ? strlen(input) : 0, in_off = 0;
    if (in_len == 0) {
        close_fd(&in[1]);
    }
    while (out[0] >= 0 || err[0] >= 0) {
        struct pollfd fds[3];
        nfds_t n = 0;
        int idx_in = -1, idx_out = -1, idx_err = -1;
        if (in[1] >= 0) {
            idx_in = (int)n;
            fds[n++] = (struct pollfd){.fd = in[1], .events = POLLOUT};
        }
        if (out[0] >= 0) {
            idx_out = (int)n;
            fds[n++] = (struct pollfd){.fd = out[0], .events = POLLIN};
        }
        if (err[0] >= 0) {
            idx_err = (int)n;
            fds[n++] = (struct pollfd){.fd = err[0], .events = POLLIN};
        }
        int pr = poll(fds, n, 30000);
        if (pr < 0 && errno == EINTR) {
            continue;
        }
        if (pr <= 0) {
            kill(pid, SIGKILL); // a hung tool must not hang the pod's init
            break;
        }
        if (idx_in >= 0 && fds[idx_in].revents != 0) {
            ssize_t w = write(in[1], input + in_off, in_len - in_off);
            if (w > 0) {
                in_off += (size_t)w;
            }
            if ((w < 0 && errno != EAGAIN && errno != EINTR) || in_off == in_len) {
                close_fd(&in[1]);
            }
        }
        if (idx_out >= 0 && fds[idx_out].revents != 0 && capture_read(&cout, out[0]) <= 0) {
            close_fd(&out[0]);
        }
        if (idx_err >= 0 && fds[idx_err].revents != 0 && capture_read(&cerr, err[0]) <= 0) {
            close_fd(&err[0]);
        }
    }
    close_fd(&in[1]);
    int ws;
    while (waitpid(pid, &ws, 0) < 0) {
        if (errno != EINTR) {
            goto cleanup;
        }
    }
    status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);

cleanup:
    for (int i = 0; i < 2; i++) {
        close_fd(&in[i]);
        close_fd(&out[i]);
        close_fd(&err[i]);
    }
    *out_stdout = cout.buf != NULL ? cout.buf : strdup("");
    *out_stderr = cerr.buf != NULL ? cerr.buf : strdup("");
    return status;
}

int sc_init_which(const char *name, char *out, size_t cap)
{
    const char *env = getenv("PATH");
    char path[4096];
    snprintf(path, sizeof(path), "%s:/usr/sbin:/sbin:/usr/local/sbin:/usr/bin:/bin",
             env != NULL ? env : "");
    char *save = NULL;
    for (char *dir = strtok_r(path, ":", &save); dir != NULL; dir = strtok_r(NULL, ":", &save)) {
        if (dir[0] != '/') {
            continue; // never a relative PATH entry for a root tool
        }
        int n = snprintf(out, cap, "%s/%s", dir, name);
        if (n > 0 && (size_t)n < cap && access(out, X_OK) == 0) {
            return 0;
        }
    }
    return -1;
}
