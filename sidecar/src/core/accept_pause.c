// accept_pause.c — pause a listening handle instead of letting libuv's
// accept loop spin on EMFILE/ENFILE, or on ENOBUFS/ENOMEM (the kernel short
// of memory for the new socket: libuv would retry the same pending
// connection at once, for as long as the shortage lasts) (sc/accept_pause.h).
//
// Invariant: the handle listens only while a spare dup of its fd exists. A
// pause therefore never has to close the socket itself: the spare keeps it
// in LISTEN with its backlog while libuv's fd is closed, and the resume makes
// the next spare before it listens again. The dup is made from the kept fd
// and fails only when the process has no fd to spare (EMFILE) — exactly when
// accept would fail too — so a failed dup just means "still paused". That is
// why there is no close-and-recreate path: a new socket would need an fd at
// the moment there are none, would reset every connection in the old queue,
// and would leave and rejoin the SO_REUSEPORT group (and could lose a port
// picked with port 0).
#include "sc/accept_pause.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "sc/log.h"

#define SC_AP_MIN_DELAY_MS 100
#define SC_AP_MAX_DELAY_MS 1000

static void on_tcp_closed(uv_handle_t *h);
static void on_resume(uv_timer_t *t);

// log_event formats "<component>.<what>" for sc_log.
static const char *log_event(const struct sc_accept_pause *ap, const char *what, char *buf,
                             size_t len)
{
    snprintf(buf, len, "%s.%s", ap->component, what);
    return buf;
}

// closed_one counts a finished uv_close of sc_accept_pause_close and reports
// when it was the last: nothing touches |ap| after the callback.
static void closed_one(struct sc_accept_pause *ap)
{
    if (--ap->pending_closes > 0) {
        return;
    }
    ap->state = SC_AP_CLOSED;
    sc_accept_pause_close_cb cb = ap->close_cb;
    if (cb != NULL) {
        cb(ap, ap->close_arg);
    }
}

static void on_timer_closed(uv_handle_t *h)
{
    closed_one(h->data);
}

// arm starts the pause timer and doubles the next pause, up to the cap.
static void arm(struct sc_accept_pause *ap)
{
    uv_timer_start(&ap->timer, on_resume, ap->delay_ms, 0);
    ap->delay_ms *= 2;
    if (ap->delay_ms > SC_AP_MAX_DELAY_MS) {
        ap->delay_ms = SC_AP_MAX_DELAY_MS;
    }
}

// start_pause closes libuv's fd of the listening handle. uv__server_io
// re-checks the handle's fd after each callback, so its accept loop ends;
// libuv removes the fd from epoll before closing it, and the spare dup keeps
// the socket open. The handle's data points at |ap| until it is made again.
static void start_pause(struct sc_accept_pause *ap)
{
    ap->state = SC_AP_PAUSING;
    ap->tcp->data = ap;
    uv_close((uv_handle_t *)ap->tcp, on_tcp_closed);
}

static void on_tcp_closed(uv_handle_t *h)
{
    struct sc_accept_pause *ap = h->data;
    if (ap->state == SC_AP_CLOSING) {
        closed_one(ap);
        return;
    }
    // The timer starts only now, so a resume never re-initializes a handle
    // that is still closing.
    ap->state = SC_AP_PAUSED;
    arm(ap);
}

// on_resume makes the handle again on the kept socket and listens: a new
// spare first (see the invariant at the top of the file).
static void on_resume(uv_timer_t *t)
{
    struct sc_accept_pause *ap = t->data;
    char ev[48];
    int spare = fcntl(ap->fd, F_DUPFD_CLOEXEC, 0);
    if (spare < 0) {
        int err = -errno;
        sc_debug(log_event(ap, "accept_still_paused", ev, sizeof(ev)), "%s error=%s retry_ms=%llu",
                 ap->label, uv_err_name(err), (unsigned long long)ap->delay_ms);
        arm(ap);
        return;
    }
    if (uv_tcp_init(ap->loop, ap->tcp) != 0) { // cannot fail on Unix; stay paused if it does
        close(spare);
        arm(ap);
        return;
    }
    int fd = ap->fd;
    ap->fd = spare;
    ap->tcp->data = ap->data;
    int rc = uv_tcp_open(ap->tcp, fd);
    if (rc == 0) {
        rc = uv_listen((uv_stream_t *)ap->tcp, ap->backlog, ap->cb);
    }
    if (rc != 0) {
        uv_os_fd_t owned;
        if (uv_fileno((uv_handle_t *)ap->tcp, &owned) != 0) {
            close(fd); // libuv did not take it; the spare keeps the socket
        }
        sc_warn(log_event(ap, "accept_resume_failed", ev, sizeof(ev)), "%s error=%s retry_ms=%llu",
                ap->label, uv_err_name(rc), (unsigned long long)ap->delay_ms);
        start_pause(ap);
        return;
    }
    ap->state = SC_AP_LISTENING;
}

int sc_accept_pause_init(struct sc_accept_pause *ap, uv_loop_t *loop, uv_tcp_t *tcp)
{
    ap->state = SC_AP_UNUSED;
    int rc = uv_tcp_init(loop, tcp);
    if (rc != 0) {
        return rc;
    }
    uv_timer_init(loop, &ap->timer);
    ap->timer.data = ap;
    ap->tcp = tcp;
    ap->loop = loop;
    ap->fd = -1;
    ap->delay_ms = SC_AP_MIN_DELAY_MS;
    ap->num_failed = 0;
    ap->pending_closes = 0;
    ap->component = "listener";
    ap->label[0] = '\0';
    ap->state = SC_AP_IDLE;
    return 0;
}

int sc_accept_pause_listen(struct sc_accept_pause *ap, int backlog, uv_connection_cb cb,
                           const char *component, const char *label)
{
    uv_os_fd_t fd;
    int rc = uv_fileno((uv_handle_t *)ap->tcp, &fd);
    if (rc != 0) {
        return rc;
    }
    int spare = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (spare < 0) {
        return -errno;
    }
    rc = uv_listen((uv_stream_t *)ap->tcp, backlog, cb);
    if (rc != 0) {
        close(spare);
        return rc;
    }
    ap->fd = spare;
    ap->data = ap->tcp->data;
    ap->cb = cb;
    ap->backlog = backlog;
    ap->component = component;
    snprintf(ap->label, sizeof(ap->label), "%s", label);
    ap->state = SC_AP_LISTENING;
    return 0;
}

bool sc_accept_pause_on_status(struct sc_accept_pause *ap, int status)
{
    char ev[48];
    if (status == 0) {
        if (ap->num_failed > 0) {
            sc_info(log_event(ap, "accept_resumed", ev, sizeof(ev)),
                    "%s paused_ms=%llu failed_accepts=%llu", ap->label,
                    (unsigned long long)(uv_now(ap->loop) - ap->paused_at),
                    (unsigned long long)ap->num_failed);
            ap->num_failed = 0;
        }
        ap->delay_ms = SC_AP_MIN_DELAY_MS;
        return false;
    }
    bool shortage =
        status == UV_EMFILE || status == UV_ENFILE || status == UV_ENOBUFS || status == UV_ENOMEM;
    if (!shortage || ap->state != SC_AP_LISTENING) {
        return false;
    }
    if (ap->num_failed++ == 0) {
        ap->paused_at = uv_now(ap->loop);
        sc_warn(log_event(ap, "accept_paused", ev, sizeof(ev)), "%s error=%s retry_ms=%llu",
                ap->label, uv_err_name(status), (unsigned long long)ap->delay_ms);
    } else {
        sc_debug(log_event(ap, "accept_paused", ev, sizeof(ev)),
                 "%s error=%s retry_ms=%llu failed_accepts=%llu", ap->label, uv_err_name(status),
                 (unsigned long long)ap->delay_ms, (unsigned long long)ap->num_failed);
    }
    start_pause(ap);
    return true;
}

void sc_accept_pause_close(struct sc_accept_pause *ap, sc_accept_pause_close_cb cb, void *arg)
{
    enum sc_accept_pause_state prev = ap->state;
    if (prev == SC_AP_UNUSED || prev == SC_AP_CLOSING || prev == SC_AP_CLOSED) {
        return;
    }
    ap->state = SC_AP_CLOSING;
    ap->close_cb = cb;
    ap->close_arg = arg;
    ap->pending_closes = 1;
    uv_timer_stop(&ap->timer);
    uv_close((uv_handle_t *)&ap->timer, on_timer_closed);
    if (prev == SC_AP_IDLE || prev == SC_AP_LISTENING) {
        ap->pending_closes++;
        ap->tcp->data = ap;
        uv_close((uv_handle_t *)ap->tcp, on_tcp_closed);
    } else if (prev == SC_AP_PAUSING) {
        ap->pending_closes++; // its on_tcp_closed is on its way and sees SC_AP_CLOSING
    }
    if (ap->fd >= 0) {
        close(ap->fd);
        ap->fd = -1;
    }
}
