// stream.c — the common part of struct sc_stream (lifetime, connect, close,
// raw writes) and the plain-TCP transport. The TLS transport is in
// tls/tls_conn.c; both share the layout in stream_int.h.
#include "core/stream_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <netinet/in.h>

#include "sc/err.h"
#include "sc/parse.h"

// One uv_write in flight. |owned| is a pool buffer released on completion.
struct write_req {
    uv_write_t req;
    struct sc_stream *s;
    sc_stream_write_cb cb;
    void *arg;
    char *owned;
    size_t len;
};

uint64_t sc_stream__now_us(void)
{
    return uv_hrtime() / 1000;
}

static void on_handle_close(uv_handle_t *h);

struct sc_stream *sc_stream_new(uv_loop_t *loop, struct sc_bufpool *pool)
{
    struct sc_stream *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        fprintf(stderr, "seam: out of memory\n");
        abort();
    }
    s->loop = loop;
    s->pool = pool;
    s->ops = &sc_stream__plain_ops;
    // uv_tcp_init and uv_timer_init cannot fail on a valid loop.
    uv_tcp_init(loop, &s->tcp);
    uv_timer_init(loop, &s->timer);
    uv_timer_init(loop, &s->defer);
    s->tcp.data = s;
    s->timer.data = s;
    s->defer.data = s;
    s->connect_req.data = s;
    s->shutdown_req.data = s;
    s->fail = SC_TLS_FAIL_OTHER;
    return s;
}

void sc_stream_set_data(struct sc_stream *s, void *data)
{
    s->data = data;
}

void *sc_stream_get_data(const struct sc_stream *s)
{
    return s->data;
}

uv_tcp_t *sc_stream_get0_tcp(struct sc_stream *s)
{
    return &s->tcp;
}

uv_loop_t *sc_stream_get0_loop(const struct sc_stream *s)
{
    return s->loop;
}

bool sc_stream_is_closing(const struct sc_stream *s)
{
    return (s->flags & SC_STREAM_F_CLOSING) != 0;
}

int sc_stream_accept(struct sc_stream *s, uv_stream_t *server)
{
    int r = uv_accept(server, (uv_stream_t *)&s->tcp);
    if (r == 0) {
        uv_tcp_nodelay(&s->tcp, 1);
    }
    return r;
}

int sc_stream_accept_inherited(struct sc_stream *s, uv_stream_t *server)
{
    return uv_accept(server, (uv_stream_t *)&s->tcp);
}

char *sc_stream_peer_name(struct sc_stream *s, char *out, size_t cap)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getpeername(&s->tcp, (struct sockaddr *)&ss, &len) != 0) {
        snprintf(out, cap, "-");
        return out;
    }
    // On a dual-stack listener an IPv4 peer shows up as ::ffff:a.b.c.d; log
    // it as the IPv4 address it is.
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (ss.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
        struct sockaddr_in in4;
        memset(&in4, 0, sizeof(in4));
        in4.sin_family = AF_INET;
        in4.sin_port = in6->sin6_port;
        memcpy(&in4.sin_addr, &in6->sin6_addr.s6_addr[12], 4);
        return sc_format_addr((struct sockaddr *)&in4, out, cap);
    }
    return sc_format_addr((struct sockaddr *)&ss, out, cap);
}

// Connect: the timer bounds the attempt. A connect request cannot be
// cancelled on its own, so on timeout we report UV_ETIMEDOUT at once and
// ignore the request's later (cancelled) completion.
static void on_connect(uv_connect_t *req, int status)
{
    struct sc_stream *s = req->data;
    if (!(s->flags & SC_STREAM_F_CONNECTING)) {
        return;
    }
    s->flags &= ~SC_STREAM_F_CONNECTING;
    uv_timer_stop(&s->timer);
    if (status == 0) {
        uv_tcp_nodelay(&s->tcp, 1);
    }
    s->connect_cb(s, status);
}

static void on_connect_timeout(uv_timer_t *t)
{
    struct sc_stream *s = t->data;
    if (!(s->flags & SC_STREAM_F_CONNECTING)) {
        return;
    }
    s->flags &= ~SC_STREAM_F_CONNECTING;
    s->connect_cb(s, UV_ETIMEDOUT);
}

int sc_stream_connect(struct sc_stream *s, const struct sockaddr *addr, uint64_t timeout_ms,
                      sc_stream_connect_cb cb)
{
    if (s->flags & (SC_STREAM_F_CLOSING | SC_STREAM_F_CONNECTING)) {
        return SC_ESTATE;
    }
    int r = uv_tcp_connect(&s->connect_req, &s->tcp, addr, on_connect);
    if (r != 0) {
        return r;
    }
    s->connect_cb = cb;
    s->flags |= SC_STREAM_F_CONNECTING;
    if (timeout_ms > 0) {
        uv_timer_start(&s->timer, on_connect_timeout, timeout_ms, 0);
    }
    return 0;
}

void sc_stream__alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct sc_stream *s = h->data;
    buf->base = sc_buf_get_sized(s->pool, (s->flags & (SC_STREAM_F_BULK | SC_STREAM_F_SMALL)) ==
                                              SC_STREAM_F_BULK);
    buf->len = sc_buf_size(buf->base) - SC_BUF_READ_RESERVE;
}

void sc_stream_set_small_reads(struct sc_stream *s, bool on)
{
    if (on) {
        s->flags |= SC_STREAM_F_SMALL;
    } else {
        s->flags &= ~SC_STREAM_F_SMALL;
    }
}

void sc_stream__uv_read(struct sc_stream *s, bool on, uv_read_cb read_cb)
{
    if (on && !(s->flags & SC_STREAM_F_UV_READING)) {
        if (uv_read_start((uv_stream_t *)&s->tcp, sc_stream__alloc, read_cb) == 0) {
            s->flags |= SC_STREAM_F_UV_READING;
        }
    } else if (!on && (s->flags & SC_STREAM_F_UV_READING)) {
        uv_read_stop((uv_stream_t *)&s->tcp);
        s->flags &= ~SC_STREAM_F_UV_READING;
    }
}

static struct write_req *get_req(struct sc_stream *s)
{
    struct write_req *wr = s->spare_req;
    s->spare_req = NULL;
    if (wr == NULL) {
        wr = malloc(sizeof(*wr));
        if (wr == NULL) {
            fprintf(stderr, "seam: out of memory\n");
            abort();
        }
    }
    return wr;
}

static void put_req(struct sc_stream *s, struct write_req *wr)
{
    // Keep one request for the next write: the pump has one in flight per
    // direction, so this saves a malloc/free pair per write.
    if (s->spare_req == NULL) {
        s->spare_req = wr;
    } else {
        free(wr);
    }
}

// run_done runs the callbacks of writes that completed synchronously. The
// list is detached first: callbacks that write again queue for a later turn.
static void run_done(struct sc_stream *s)
{
    struct write_req *wr = s->done_head;
    s->done_head = s->done_tail = NULL;
    while (wr != NULL) {
        struct write_req *next = (struct write_req *)wr->req.data;
        sc_stream_write_cb cb = wr->cb;
        void *arg = wr->arg;
        put_req(s, wr);
        cb(s, 0, arg);
        wr = next;
    }
}

static void on_defer(uv_timer_t *t)
{
    struct sc_stream *s = t->data;
    s->flags &= ~SC_STREAM_F_DEFER;
    run_done(s);
    if ((s->flags & SC_STREAM_F_TLS_KICK) && !(s->flags & SC_STREAM_F_CLOSING)) {
        s->flags &= ~SC_STREAM_F_TLS_KICK;
        sc_stream__tls_process(s);
    }
}

void sc_stream__schedule(struct sc_stream *s)
{
    if (!(s->flags & SC_STREAM_F_DEFER) && !(s->flags & SC_STREAM_F_CLOSING)) {
        s->flags |= SC_STREAM_F_DEFER;
        uv_timer_start(&s->defer, on_defer, 0, 0);
    }
}

static void on_write(uv_write_t *req, int status)
{
    struct write_req *wr = req->data;
    struct sc_stream *s = wr->s;
    s->queued_bytes -= wr->len;
    sc_buf_release(wr->owned);
    sc_stream_write_cb cb = wr->cb;
    void *arg = wr->arg;
    put_req(s, wr);
    if (cb != NULL) {
        cb(s, status, arg);
    }
}

int sc_stream__write_raw(struct sc_stream *s, const uv_buf_t bufs[], unsigned nbufs, char *owned,
                         sc_stream_write_cb cb, void *arg)
{
    if (s->flags & SC_STREAM_F_CLOSING) {
        sc_buf_release(owned);
        return UV_ECANCELED;
    }
    size_t total = 0;
    for (unsigned i = 0; i < nbufs; i++) {
        total += bufs[i].len;
    }
    // Fast path: when nothing is queued, write now without a request. A
    // uv_write that completes at once still costs an epoll_ctl (libuv
    // re-arms the watcher when it drains), which this avoids; the callback
    // runs on the next turn from the done list.
    uv_buf_t rest[8];
    unsigned nrest = 0;
    if (nbufs <= 8 && total > 0) {
        int n = uv_try_write((uv_stream_t *)&s->tcp, bufs, nbufs);
        if (n < 0 && n != UV_EAGAIN) {
            sc_buf_release(owned);
            return n;
        }
        size_t done = n > 0 ? (size_t)n : 0;
        if (done == total) {
            sc_buf_release(owned);
            if (cb != NULL) {
                struct write_req *wr = get_req(s);
                wr->cb = cb;
                wr->arg = arg;
                wr->req.data = NULL;
                if (s->done_tail != NULL) {
                    ((struct write_req *)s->done_tail)->req.data = wr;
                } else {
                    s->done_head = wr;
                }
                s->done_tail = wr;
                sc_stream__schedule(s);
            }
            return 0;
        }
        // Partly written: queue the rest.
        for (unsigned i = 0; i < nbufs; i++) {
            if (done >= bufs[i].len) {
                done -= bufs[i].len;
                continue;
            }
            rest[nrest] = uv_buf_init(bufs[i].base + done, (unsigned)(bufs[i].len - done));
            nrest++;
            done = 0;
        }
        bufs = rest;
        nbufs = nrest;
    }
    struct write_req *wr = get_req(s);
    wr->req.data = wr;
    wr->s = s;
    wr->cb = cb;
    wr->arg = arg;
    wr->owned = owned;
    wr->len = 0;
    for (unsigned i = 0; i < nbufs; i++) {
        wr->len += bufs[i].len;
    }
    int r = uv_write(&wr->req, (uv_stream_t *)&s->tcp, bufs, nbufs, on_write);
    if (r != 0) {
        sc_buf_release(owned);
        put_req(s, wr);
        return r;
    }
    s->queued_bytes += wr->len;
    return 0;
}

size_t sc_stream_write_queue_size(const struct sc_stream *s)
{
    // libuv's count of bytes not yet taken by the kernel (plain or ciphertext).
    return s->tcp.write_queue_size;
}

bool sc_stream__read_skip(struct sc_stream *s, ssize_t nread, const uv_buf_t *buf)
{
    if (nread == 0 || (s->flags & SC_STREAM_F_CLOSING)) {
        sc_buf_release(buf->base);
        return true;
    }
    // A read that fills its buffer means more was waiting: read the next
    // ones into large buffers. Two in a row that do not fill a small buffer
    // end the bulk mode: one is the end of a burst (a sender paced by a
    // window or a peer writing in rounds), and the next burst should not
    // start with a small read.
    if (nread > 0) {
        if ((size_t)nread >= sc_buf_size(buf->base) - SC_BUF_READ_RESERVE) {
            s->flags |= SC_STREAM_F_BULK;
            s->flags &= ~SC_STREAM_F_BULK_TAIL;
        } else if ((size_t)nread < SC_BUF_READ_SIZE) {
            if ((s->flags & (SC_STREAM_F_BULK | SC_STREAM_F_BULK_TAIL)) == SC_STREAM_F_BULK) {
                s->flags |= SC_STREAM_F_BULK_TAIL;
            } else {
                s->flags &= ~(SC_STREAM_F_BULK | SC_STREAM_F_BULK_TAIL);
            }
        } else {
            s->flags &= ~SC_STREAM_F_BULK_TAIL; // not short: the short ones were not in a row
        }
    }
    return false;
}

// Plain TCP transport: bytes go straight between the socket and the user.
static void on_plain_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct sc_stream *s = stream->data;
    if (sc_stream__read_skip(s, nread, buf)) {
        return;
    }
    if (nread < 0) {
        sc_buf_release(buf->base);
        sc_stream__uv_read(s, false, NULL);
        s->flags |= SC_STREAM_F_EOF_SENT;
        s->read_cb(s, nread, NULL);
        return;
    }
    uv_buf_t out = uv_buf_init(buf->base, (unsigned)nread);
    s->read_cb(s, nread, &out);
}

static int plain_read_start(struct sc_stream *s)
{
    if (s->flags & SC_STREAM_F_EOF_SENT) {
        return 0;
    }
    sc_stream__uv_read(s, true, on_plain_read);
    return (s->flags & SC_STREAM_F_UV_READING) ? 0 : UV_EINVAL;
}

static int plain_read_stop(struct sc_stream *s)
{
    sc_stream__uv_read(s, false, NULL);
    return 0;
}

static int plain_write(struct sc_stream *s, const uv_buf_t bufs[], unsigned nbufs, char *owned,
                       sc_stream_write_cb cb, void *arg)
{
    return sc_stream__write_raw(s, bufs, nbufs, owned, cb, arg);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    // Nothing to do: errors show up on the next read or write.
}

static int plain_shutdown(struct sc_stream *s)
{
    return uv_shutdown(&s->shutdown_req, (uv_stream_t *)&s->tcp, on_shutdown);
}

const struct sc_stream_ops sc_stream__plain_ops = {
    .name = "plain",
    .read_start = plain_read_start,
    .read_stop = plain_read_stop,
    .write = plain_write,
    .shutdown = plain_shutdown,
};

int sc_stream_read_start(struct sc_stream *s, sc_stream_read_cb cb)
{
    if (s->flags & SC_STREAM_F_CLOSING) {
        return SC_ESTATE;
    }
    s->read_cb = cb;
    s->flags |= SC_STREAM_F_READING;
    return s->ops->read_start(s);
}

int sc_stream_read_stop(struct sc_stream *s)
{
    s->flags &= ~SC_STREAM_F_READING;
    if (s->flags & SC_STREAM_F_CLOSING) {
        return 0;
    }
    return s->ops->read_stop(s);
}

int sc_stream_write(struct sc_stream *s, const uv_buf_t bufs[], unsigned nbufs,
                    sc_stream_write_cb cb, void *arg)
{
    return sc_stream_write_owned(s, bufs, nbufs, NULL, cb, arg);
}

int sc_stream_write_owned(struct sc_stream *s, const uv_buf_t bufs[], unsigned nbufs, char *owned,
                          sc_stream_write_cb cb, void *arg)
{
    if (s->flags & (SC_STREAM_F_CLOSING | SC_STREAM_F_SHUTDOWN)) {
        sc_buf_release(owned);
        return SC_ESTATE;
    }
    return s->ops->write(s, bufs, nbufs, owned, cb, arg);
}

int sc_stream_shutdown(struct sc_stream *s)
{
    if (s->flags & SC_STREAM_F_CLOSING) {
        return SC_ESTATE;
    }
    if (s->flags & SC_STREAM_F_SHUTDOWN) {
        return 0;
    }
    s->flags |= SC_STREAM_F_SHUTDOWN;
    return s->ops->shutdown(s);
}

// The last handle's close callback frees the stream: SSL, buffers, memory.
static void on_handle_close(uv_handle_t *h)
{
    struct sc_stream *s = h->data;
    if (--s->pending_closes > 0) {
        return;
    }
    // Writes that completed synchronously still report, before close_cb.
    run_done(s);
    if (s->close_cb != NULL) {
        s->close_cb(s);
    }
    sc_stream__tls_free(s);
    free(s->spare_req);
    free(s);
}

static void do_close(struct sc_stream *s, sc_stream_close_cb cb, bool reset)
{
    if (s->flags & SC_STREAM_F_CLOSING) {
        return;
    }
    s->flags |= SC_STREAM_F_CLOSING;
    s->close_cb = cb;
    if (!reset && s->tls_state == SC_STREAM_TLS_OPEN) {
        sc_stream__tls_close_notify(s);
    }
    s->flags &= ~SC_STREAM_F_UV_READING;
    uv_timer_stop(&s->timer);
    uv_timer_stop(&s->defer);
    s->pending_closes = 3;
    uv_close((uv_handle_t *)&s->timer, on_handle_close);
    uv_close((uv_handle_t *)&s->defer, on_handle_close);
    // uv_tcp_close_reset refuses a handle with a pending shutdown; fall back
    // to an orderly close then.
    if (!reset || uv_tcp_close_reset(&s->tcp, on_handle_close) != 0) {
        uv_close((uv_handle_t *)&s->tcp, on_handle_close);
    }
}

void sc_stream_close(struct sc_stream *s, sc_stream_close_cb cb)
{
    do_close(s, cb, false);
}

void sc_stream_close_reset(struct sc_stream *s, sc_stream_close_cb cb)
{
    do_close(s, cb, true);
}
