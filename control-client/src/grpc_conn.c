// grpc_conn.c — gRPC client channel: HTTP/2 (nghttp2 mem_send/mem_recv) over
// the core TLS stream (sc/stream.h), unary and bidirectional calls.
//
// Structure:
//   channel  configuration, the SSL_CTX, the list of calls, the current
//            connection and connections still draining after a GOAWAY.
//   conn     one TCP+TLS+HTTP/2 connection. Dies on any transport error;
//            every call bound to it then ends with UNAVAILABLE.
//   call     one gRPC call: send queue (read by the nghttp2 data provider),
//            message reassembler, response headers/trailers, deadline timer.
//
// nghttp2 callbacks only record state (STYLE §5). Calls end through
// call_finish(), which records the status; channel_process() reports ended
// calls to the user (on_close) outside of nghttp2, flushes output and starts
// connections. So user callbacks never run inside nghttp2 except on_msg,
// which may only queue sends / cancel.
#define _GNU_SOURCE // vasprintf, strndup
#include "cc/grpc_client.h"

#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "sc/err.h"
#include "sc/log.h"
#include "sc/pem.h"
#include "sc/stats.h"
#include "sc/stream.h"

#define USER_AGENT "grpc-c-seam/0.1"
#define MAX_TOKEN_LEN 16384

enum conn_state { CONN_CONNECTING, CONN_HANDSHAKING, CONN_READY, CONN_DEAD };

struct cc_conn {
    struct cc_channel *ch; // owner; NULL once the channel is gone
    struct cc_conn *next;  // channel's list of live connections
    struct sc_stream *stream;
    nghttp2_session *h2; // NULL until the handshake finished
    enum conn_state state;
    uv_timer_t ka;                    // keepalive tick
    uv_getaddrinfo_t gai;             // name resolution (host names only)
    bool resolving;                   // gai is pending
    int open_handles;                 // ka + streams + gai not yet done; freed at 0
    struct sockaddr_storage addrs[8]; // resolved addresses, tried in order
    int num_addrs;
    int addr_idx;          // next address to try
    bool in_recv;          // inside nghttp2_session_mem_recv
    bool teardown_pending; // died inside mem_recv; tear down after it
    bool torn_down;        // handles are closing
    bool goaway;           // no new streams on this connection
    bool ping_out;         // a keepalive PING waits for its ACK
    uint64_t ping_sent_ms;
    uint64_t last_read_ms;
    char peer[64];
};

struct cc_call {
    struct cc_channel *ch;
    struct cc_call *next; // channel's list
    struct cc_conn *conn; // bound connection, NULL while waiting for one
    int32_t stream_id;    // 0 until submitted
    char *path;
    char *token;          // bearer token read at start, NULL if none
    uint64_t timeout_ms;  // 0 = no deadline
    uint64_t deadline_ms; // loop time of the deadline
    uv_timer_t timer;     // deadline timer (always initialised)
    // Sending.
    uint8_t *out; // queued request bytes (prefixed messages)
    size_t out_len;
    size_t out_off;
    size_t out_cap;
    bool send_closed; // cc_call_close_send called
    bool eos_sent;    // END_STREAM handed to nghttp2
    bool deferred;    // data provider returned DEFERRED
    // Receiving.
    struct cc_grpc_reasm reasm;
    int http_status; // 0 until :status arrives
    bool ct_ok;      // content-type is application/grpc*
    bool have_grpc_status;
    int grpc_status;
    char *grpc_message;
    bool h2_closed; // nghttp2 closed the stream
    bool rst_sent;  // we reset the stream
    bool deadline_hit;
    // End.
    bool finished;
    int status;
    char *message;
    cc_call_msg_cb on_msg;
    cc_call_close_cb on_close;
    void *arg;
};

struct cc_channel {
    uv_loop_t *loop;
    char *host; // without brackets
    char *port;
    char *authority; // SNI / verified name / :authority
    char *token_file;
    char *name; // log label
    SSL_CTX *ctx;
    uint64_t connect_timeout_ms;
    uint64_t keepalive_ms;
    uint64_t keepalive_timeout_ms;
    size_t max_recv_msg;
    struct cc_conn *conn;  // current connection (new calls go here)
    struct cc_conn *conns; // every live connection (current + draining)
    struct cc_call *calls; // calls not yet reported
    uv_timer_t kick;       // runs channel_process on the next loop turn
    bool closing;
    bool processing;
    bool reprocess;
};

static void channel_process(struct cc_channel *ch);
static void conn_fail(struct cc_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static char *xstrdup(const char *s)
{
    char *p = strdup(s != NULL ? s : "");
    if (p == NULL) {
        abort();
    }
    return p;
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *out = NULL;
    if (vasprintf(&out, fmt, ap) < 0) {
        abort();
    }
    va_end(ap);
    return out;
}

static bool is_ip_literal(const char *host)
{
    struct sockaddr_in6 a6;
    struct sockaddr_in a4;
    return uv_ip4_addr(host, 0, &a4) == 0 || uv_ip6_addr(host, 0, &a6) == 0;
}

static void on_kick(uv_timer_t *t)
{
    channel_process(t->data);
}

// channel_kick schedules channel_process on the next loop turn.
static void channel_kick(struct cc_channel *ch)
{
    if (!ch->closing) {
        uv_timer_start(&ch->kick, on_kick, 0, 0);
    }
}

/* ---- calls ---------------------------------------------------------------- */

// call_rst resets the call's stream once, if it is open on a live session.
static void call_rst(struct cc_call *call, uint32_t code)
{
    struct cc_conn *c = call->conn;
    if (c != NULL && c->h2 != NULL && call->stream_id > 0 && !call->h2_closed && !call->rst_sent) {
        call->rst_sent = true;
        nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, call->stream_id, code);
    }
}

// call_finish records the final status of |call| (first one wins); it is
// reported by channel_process.
static void call_finish(struct cc_call *call, int status, const char *message)
{
    if (call->finished) {
        return;
    }
    call->finished = true;
    call->status = status;
    call->message = xstrdup(message);
    uv_timer_stop(&call->timer);
}

static void on_call_timer_closed(uv_handle_t *h)
{
    struct cc_call *call = h->data;
    cc_grpc_reasm_cleanup(&call->reasm);
    free(call->out);
    free(call->path);
    if (call->token != NULL) {
        OPENSSL_cleanse(call->token, strlen(call->token));
    }
    free(call->token);
    free(call->grpc_message);
    free(call->message);
    free(call);
}

// call_release detaches |call| from nghttp2 and frees it via its timer close.
static void call_release(struct cc_call *call)
{
    struct cc_conn *c = call->conn;
    if (c != NULL && c->h2 != NULL && call->stream_id > 0 && !call->h2_closed) {
        // Still open on the wire: tell the server we are gone.
        call_rst(call, NGHTTP2_CANCEL);
        nghttp2_session_set_stream_user_data(c->h2, call->stream_id, NULL);
    }
    call->conn = NULL;
    uv_close((uv_handle_t *)&call->timer, on_call_timer_closed);
}

// call_complete derives the final status once the HTTP/2 stream closed with
// |h2_error| (PROTOCOLS.md §1.3, §1.5).
static void call_complete(struct cc_call *call, uint32_t h2_error)
{
    if (call->finished) {
        return;
    }
    if (call->deadline_hit) {
        call_finish(call, CC_GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
        return;
    }
    if (call->have_grpc_status) {
        int st = call->grpc_status > CC_GRPC_UNAUTHENTICATED ? CC_GRPC_UNKNOWN : call->grpc_status;
        if (st == CC_GRPC_OK && cc_grpc_reasm_partial(&call->reasm)) {
            call_finish(call, CC_GRPC_INTERNAL, "stream ended inside a message");
            return;
        }
        call_finish(call, st, call->grpc_message != NULL ? call->grpc_message : "");
        return;
    }
    char *msg = NULL;
    int st;
    if (h2_error != NGHTTP2_NO_ERROR) {
        st = cc_grpc_status_from_h2_error(h2_error, false);
        if (st < 0) {
            sc_warn("grpc.stream_closed", "path=%s detail=RST_STREAM(STREAM_CLOSED)", call->path);
            st = CC_GRPC_INTERNAL;
        }
        msg = xasprintf("stream reset by server: %s", nghttp2_http2_strerror(h2_error));
    } else if (call->http_status == 0) {
        st = CC_GRPC_UNKNOWN;
        msg = xasprintf("stream closed without response headers");
    } else if (call->http_status != 200) {
        st = cc_grpc_status_from_http(call->http_status);
        msg = xasprintf("server answered HTTP %d without grpc-status", call->http_status);
    } else if (!call->ct_ok) {
        st = CC_GRPC_UNKNOWN;
        msg = xasprintf("response content-type is not application/grpc");
    } else {
        st = CC_GRPC_UNKNOWN;
        msg = xasprintf("response ended without grpc-status");
    }
    call_finish(call, st, msg);
    free(msg);
}

static void on_deadline(uv_timer_t *t)
{
    struct cc_call *call = t->data;
    call->deadline_hit = true;
    // An expired deadline is a client cancellation (§1.5).
    call_rst(call, NGHTTP2_CANCEL);
    char msg[96];
    snprintf(msg, sizeof(msg), "deadline of %llu ms exceeded",
             (unsigned long long)call->timeout_ms);
    call_finish(call, CC_GRPC_DEADLINE_EXCEEDED, msg);
    channel_process(call->ch);
}

// read_token reads the bearer token file: trimmed, printable ASCII only.
static int read_token(const char *file, char **out, char *err, size_t err_len)
{
    FILE *f = fopen(file, "rb");
    if (f == NULL) {
        snprintf(err, err_len, "cannot read token file %s: %s", file, strerror(errno));
        return -1;
    }
    char *buf = malloc(MAX_TOKEN_LEN + 1);
    if (buf == NULL) {
        fclose(f);
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    size_t n = fread(buf, 1, MAX_TOKEN_LEN + 1, f);
    fclose(f);
    if (n > MAX_TOKEN_LEN) {
        free(buf);
        snprintf(err, err_len, "token file %s is larger than %d bytes", file, MAX_TOKEN_LEN);
        return -1;
    }
    while (n > 0 && isspace((unsigned char)buf[n - 1])) {
        n--;
    }
    size_t start = 0;
    while (start < n && isspace((unsigned char)buf[start])) {
        start++;
    }
    if (start == n) {
        free(buf);
        snprintf(err, err_len, "token file %s is empty", file);
        return -1;
    }
    for (size_t i = start; i < n; i++) {
        if (buf[i] < 0x21 || buf[i] > 0x7e) {
            OPENSSL_cleanse(buf, n);
            free(buf);
            snprintf(err, err_len, "token file %s holds characters not allowed in a header", file);
            return -1;
        }
    }
    memmove(buf, buf + start, n - start);
    buf[n - start] = '\0';
    *out = buf;
    return 0;
}

struct cc_call *cc_call_start(struct cc_channel *ch, const char *path, uint64_t timeout_ms,
                              cc_call_msg_cb on_msg, cc_call_close_cb on_close, void *arg)
{
    struct cc_call *call = calloc(1, sizeof(*call));
    if (call == NULL) {
        abort();
    }
    call->ch = ch;
    call->path = xstrdup(path);
    call->timeout_ms = timeout_ms;
    call->on_msg = on_msg;
    call->on_close = on_close;
    call->arg = arg;
    cc_grpc_reasm_init(&call->reasm, ch->max_recv_msg);
    uv_timer_init(ch->loop, &call->timer);
    call->timer.data = call;
    // Append, so calls are submitted in start order.
    struct cc_call **pp = &ch->calls;
    while (*pp != NULL) {
        pp = &(*pp)->next;
    }
    *pp = call;

    if (ch->closing) {
        call_finish(call, CC_GRPC_CANCELLED, "channel is closing");
    } else if (ch->token_file != NULL) {
        char err[256];
        if (read_token(ch->token_file, &call->token, err, sizeof(err)) != 0) {
            call_finish(call, CC_GRPC_UNAUTHENTICATED, err);
        }
    }
    if (!call->finished && timeout_ms > 0) {
        call->deadline_ms = uv_now(ch->loop) + timeout_ms;
        uv_timer_start(&call->timer, on_deadline, timeout_ms, 0);
    }
    channel_kick(ch);
    return call;
}

// call_resume_send wakes the DATA source of |call| if nghttp2 parked it
// waiting for bytes (or for the end of the send side) and flushes the channel.
static void call_resume_send(struct cc_call *call)
{
    struct cc_conn *c = call->conn;
    if (call->deferred && c != NULL && c->h2 != NULL && call->stream_id > 0) {
        call->deferred = false;
        nghttp2_session_resume_data(c->h2, call->stream_id);
    }
    channel_kick(call->ch);
}

int cc_call_send_raw(struct cc_call *call, const uint8_t *msg, size_t len)
{
    if (call->send_closed || call->finished || len > UINT32_MAX) {
        return SC_ESTATE;
    }
    size_t need = call->out_len + CC_GRPC_PREFIX_LEN + len;
    if (need > call->out_cap) {
        size_t cap = call->out_cap ? call->out_cap : 256;
        while (cap < need) {
            cap *= 2;
        }
        uint8_t *p = realloc(call->out, cap);
        if (p == NULL) {
            abort();
        }
        call->out = p;
        call->out_cap = cap;
    }
    cc_grpc_prefix_encode(call->out + call->out_len, (uint32_t)len, false);
    if (len > 0) {
        memcpy(call->out + call->out_len + CC_GRPC_PREFIX_LEN, msg, len);
    }
    call->out_len = need;
    call_resume_send(call);
    return 0;
}

int cc_call_send(struct cc_call *call, const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf == NULL) {
        abort();
    }
    protobuf_c_message_pack(msg, buf);
    int rc = cc_call_send_raw(call, buf, n);
    free(buf);
    return rc;
}

void cc_call_close_send(struct cc_call *call)
{
    if (call->send_closed) {
        return;
    }
    call->send_closed = true;
    call_resume_send(call);
}

void cc_call_cancel(struct cc_call *call, const char *message)
{
    if (call->finished) {
        return;
    }
    call_rst(call, NGHTTP2_CANCEL);
    call_finish(call, CC_GRPC_CANCELLED, message != NULL ? message : "cancelled by the client");
    channel_kick(call->ch);
}

void cc_call_abandon(struct cc_call *call)
{
    call->on_msg = NULL;
    call->on_close = NULL;
    cc_call_cancel(call, "abandoned");
}

uv_loop_t *cc_channel_get0_loop(const struct cc_channel *ch)
{
    return ch->loop;
}

/* ---- nghttp2 callbacks ---------------------------------------------------- */

static ssize_t on_data_read(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t length,
                            uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    struct cc_call *call = nghttp2_session_get_stream_user_data(s, stream_id);
    if (call == NULL) {
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    size_t avail = call->out_len - call->out_off;
    size_t n = avail < length ? avail : length;
    if (n > 0) {
        memcpy(buf, call->out + call->out_off, n);
        call->out_off += n;
        if (call->out_off == call->out_len) {
            call->out_off = call->out_len = 0;
        }
    }
    if (call->out_len == call->out_off && call->send_closed) {
        // Nothing left: END_STREAM (an empty DATA frame if n == 0, §1.1).
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        call->eos_sent = true;
        return (ssize_t)n;
    }
    if (n == 0) {
        call->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                     size_t name_len, const uint8_t *value, size_t value_len, uint8_t flags,
                     void *user_data)
{
    if (frame->hd.type != NGHTTP2_HEADERS) {
        return 0;
    }
    struct cc_call *call = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    if (call == NULL) {
        return 0;
    }
    const char *n = (const char *)name;
    const char *v = (const char *)value;
    if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE) {
        if (name_len == 7 && memcmp(n, ":status", 7) == 0) {
            int st = 0;
            for (size_t i = 0; i < value_len && i < 3; i++) {
                st = st * 10 + (v[i] - '0');
            }
            call->http_status = st;
            return 0;
        }
        if (name_len == 12 && memcmp(n, "content-type", 12) == 0) {
            call->ct_ok = cc_grpc_content_type_ok(v, value_len);
            return 0;
        }
    }
    // grpc-status / grpc-message: in trailers, or in a Trailers-Only response.
    if (name_len == 11 && memcmp(n, "grpc-status", 11) == 0) {
        int code;
        if (cc_grpc_status_parse(&code, v, value_len) == 0) {
            call->have_grpc_status = true;
            call->grpc_status = code;
        } else {
            call->have_grpc_status = true;
            call->grpc_status = CC_GRPC_UNKNOWN;
        }
    } else if (name_len == 12 && memcmp(n, "grpc-message", 12) == 0) {
        free(call->grpc_message);
        call->grpc_message = cc_grpc_message_decode(v, value_len);
    }
    return 0;
}

static int deliver_msg(void *arg, const uint8_t *msg, size_t len, bool compressed)
{
    struct cc_call *call = arg;
    if (compressed) {
        // We never send grpc-accept-encoding, so a compressed message is a violation.
        cc_grpc_reasm_fail(&call->reasm, CC_GRPC_INTERNAL,
                           "compressed message received without grpc-encoding");
        return 1;
    }
    if (call->finished || call->on_msg == NULL) {
        return 0;
    }
    if (call->on_msg(call, msg, len, call->arg) != 0) {
        cc_grpc_reasm_fail(&call->reasm, CC_GRPC_INTERNAL,
                           "response message could not be parsed or was refused");
        return 1;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t stream_id, const uint8_t *data,
                         size_t len, void *user_data)
{
    struct cc_call *call = nghttp2_session_get_stream_user_data(s, stream_id);
    if (call == NULL || call->finished) {
        return 0;
    }
    if (call->http_status != 200 || !call->ct_ok) {
        return 0; // not a gRPC response; the status is synthesized at the end
    }
    if (cc_grpc_reasm_feed(&call->reasm, data, len, deliver_msg, call) != 0) {
        call_rst(call, NGHTTP2_CANCEL);
        call_finish(call, call->reasm.status, call->reasm.error);
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *user_data)
{
    struct cc_conn *c = user_data;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
    case NGHTTP2_DATA:
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            struct cc_call *call = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
            if (call != NULL && !call->eos_sent) {
                // Response ended before our END_STREAM: reset with NO_ERROR (§1.3).
                call_rst(call, NGHTTP2_NO_ERROR);
            }
        }
        break;
    case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK) {
            c->ping_out = false;
            sc_debug("grpc.ping_ack", "peer=%s", c->peer);
        }
        break;
    case NGHTTP2_GOAWAY: {
        int32_t last = frame->goaway.last_stream_id;
        uint32_t code = frame->goaway.error_code;
        c->goaway = true;
        if (c->ch == NULL) {
            break;
        }
        struct cc_channel *ch = c->ch;
        if (code == NGHTTP2_ENHANCE_YOUR_CALM && frame->goaway.opaque_data_len == 14 &&
            memcmp(frame->goaway.opaque_data, "too_many_pings", 14) == 0) {
            ch->keepalive_ms *= 2;
            sc_warn("grpc.too_many_pings", "channel=%s keepalive_ms=%llu", ch->name,
                    (unsigned long long)ch->keepalive_ms);
        }
        sc_info("grpc.goaway", "channel=%s peer=%s last_stream_id=%d code=%s", ch->name, c->peer,
                (int)last, nghttp2_http2_strerror(code));
        if (ch->conn == c) {
            ch->conn = NULL; // new calls go to a new connection
        }
        for (struct cc_call *call = ch->calls; call != NULL; call = call->next) {
            if (call->conn != c || call->finished) {
                continue;
            }
            if (call->stream_id == 0) {
                call->conn = NULL; // not sent yet: goes to the next connection
            } else if (call->stream_id > last) {
                // Not processed by the server: UNAVAILABLE, safe to retry (§1.6).
                call_finish(call, CC_GRPC_UNAVAILABLE, "server sent GOAWAY (not processed)");
            }
        }
        break;
    }
    default:
        break;
    }
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    struct cc_call *call = nghttp2_session_get_stream_user_data(s, stream_id);
    if (call == NULL) {
        return 0;
    }
    call->h2_closed = true;
    call_complete(call, error_code);
    return 0;
}

/* ---- connection ----------------------------------------------------------- */

static void conn_maybe_free(struct cc_conn *c)
{
    if (c->open_handles == 0) {
        free(c);
    }
}

static void on_stream_closed(struct sc_stream *s)
{
    struct cc_conn *c = sc_stream_get_data(s);
    c->open_handles--;
    conn_maybe_free(c);
}

static void on_ka_closed(uv_handle_t *h)
{
    struct cc_conn *c = h->data;
    c->open_handles--;
    conn_maybe_free(c);
}

// conn_teardown releases the session and closes the handles; the memory goes
// in the last close callback.
static void conn_teardown(struct cc_conn *c)
{
    if (c->torn_down) {
        return;
    }
    if (c->in_recv) {
        c->teardown_pending = true;
        return;
    }
    c->torn_down = true;
    if (c->h2 != NULL) {
        nghttp2_session_del(c->h2);
        c->h2 = NULL;
    }
    if (c->ch != NULL) {
        struct cc_conn **pp = &c->ch->conns;
        while (*pp != NULL && *pp != c) {
            pp = &(*pp)->next;
        }
        if (*pp == c) {
            *pp = c->next;
        }
        if (c->ch->conn == c) {
            c->ch->conn = NULL;
        }
        c->ch = NULL;
    }
    uv_timer_stop(&c->ka);
    uv_close((uv_handle_t *)&c->ka, on_ka_closed);
    if (c->stream != NULL) {
        sc_stream_close(c->stream, on_stream_closed);
    }
    if (c->resolving) {
        // Its callback still runs (UV_ECANCELED, or the answer if the lookup
        // had started) and drops the last reference.
        uv_cancel((uv_req_t *)&c->gai);
    }
}

// conn_fail ends every call bound to |c| with UNAVAILABLE and tears it down.
static void conn_fail(struct cc_conn *c, const char *fmt, ...)
{
    if (c->state == CONN_DEAD) {
        return;
    }
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    c->state = CONN_DEAD;
    if (c->ch != NULL) {
        struct cc_channel *ch = c->ch;
        bool had_calls = false;
        for (struct cc_call *call = ch->calls; call != NULL; call = call->next) {
            if (call->conn == c) {
                had_calls = had_calls || !call->finished;
                if (!call->finished) {
                    call_finish(
                        call, call->deadline_hit ? CC_GRPC_DEADLINE_EXCEEDED : CC_GRPC_UNAVAILABLE,
                        msg);
                }
                // The session goes away with the connection: forget the stream.
                call->h2_closed = true;
                call->conn = NULL;
            }
        }
        if (had_calls) {
            sc_warn("grpc.conn_failed", "channel=%s peer=%s detail=%s", ch->name, c->peer, msg);
        } else {
            sc_debug("grpc.conn_closed", "channel=%s peer=%s detail=%s", ch->name, c->peer, msg);
        }
        channel_kick(ch);
    }
    conn_teardown(c);
}

static void on_write_done(struct sc_stream *s, int status, void *arg)
{
    free(arg);
}

// conn_flush hands everything nghttp2 wants to send to the stream in one write.
static void conn_flush(struct cc_conn *c)
{
    if (c->state != CONN_READY || c->h2 == NULL || c->in_recv) {
        return;
    }
    uint8_t *out = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(c->h2, &p);
        if (n < 0) {
            free(out);
            conn_fail(c, "http2 send error: %s", nghttp2_strerror((int)n));
            return;
        }
        if (n == 0) {
            break;
        }
        if (len + (size_t)n > cap) {
            cap = cap ? cap : 16384;
            while (cap < len + (size_t)n) {
                cap *= 2;
            }
            uint8_t *np = realloc(out, cap);
            if (np == NULL) {
                abort();
            }
            out = np;
        }
        memcpy(out + len, p, (size_t)n);
        len += (size_t)n;
    }
    if (len > 0) {
        uv_buf_t b = uv_buf_init((char *)out, (unsigned)len);
        int rc = sc_stream_write(c->stream, &b, 1, on_write_done, out);
        if (rc != 0) {
            free(out);
            conn_fail(c, "write to %s failed: %s", c->peer, sc_strerror(rc));
            return;
        }
    }
    if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2)) {
        conn_fail(c, "connection closed (GOAWAY)");
    }
}

static void on_read(struct sc_stream *s, ssize_t nread, const uv_buf_t *buf)
{
    struct cc_conn *c = sc_stream_get_data(s);
    struct cc_channel *ch = c->ch;
    if (nread < 0) {
        if (nread == UV_EOF) {
            conn_fail(c, "server %s closed the connection", c->peer);
        } else {
            conn_fail(c, "read from %s failed: %s", c->peer, sc_strerror((int)nread));
        }
    } else {
        c->last_read_ms = uv_now(sc_stream_get0_loop(s));
        c->in_recv = true;
        ssize_t rv = nghttp2_session_mem_recv(c->h2, (const uint8_t *)buf->base, (size_t)nread);
        c->in_recv = false;
        sc_buf_release(buf->base);
        if (c->teardown_pending) {
            c->teardown_pending = false;
            conn_teardown(c);
        } else if (rv < 0) {
            conn_fail(c, "http2 protocol error from %s: %s", c->peer, nghttp2_strerror((int)rv));
        }
    }
    if (ch != NULL) {
        channel_process(ch);
    }
}

static void on_ka_tick(uv_timer_t *t)
{
    struct cc_conn *c = t->data;
    struct cc_channel *ch = c->ch;
    if (ch == NULL || c->state != CONN_READY) {
        return;
    }
    uint64_t now = uv_now(ch->loop);
    if (c->ping_out) {
        if (now - c->ping_sent_ms >= ch->keepalive_timeout_ms) {
            conn_fail(c, "keepalive PING to %s not answered within %llu ms", c->peer,
                      (unsigned long long)ch->keepalive_timeout_ms);
            channel_process(ch);
        }
        return;
    }
    if (now - c->last_read_ms < ch->keepalive_ms) {
        return;
    }
    bool active = false;
    for (struct cc_call *call = ch->calls; call != NULL; call = call->next) {
        active = active || (call->conn == c && !call->finished);
    }
    if (!active) {
        return; // KEEPALIVE_WITHOUT_CALLS is false (A8)
    }
    uint8_t opaque[8] = {'s', 'e', 'a', 'm', 'p', 'i', 'n', 'g'};
    if (nghttp2_submit_ping(c->h2, NGHTTP2_FLAG_NONE, opaque) == 0) {
        c->ping_out = true;
        c->ping_sent_ms = now;
        sc_debug("grpc.ping", "channel=%s peer=%s idle_ms=%llu", ch->name, c->peer,
                 (unsigned long long)(now - c->last_read_ms));
        conn_flush(c);
    }
}

static void on_handshake(struct sc_stream *s, int status)
{
    struct cc_conn *c = sc_stream_get_data(s);
    struct cc_channel *ch = c->ch;
    if (ch == NULL) {
        conn_fail(c, "channel closed");
        return;
    }
    if (status != 0) {
        const char *detail = NULL;
        enum sc_tls_fail r = sc_stream_tls_fail(s, &detail);
        sc_warn("tls.handshake_failed", "dir=outbound reason=%s peer=%s peer_id=- detail=%s",
                sc_tls_fail_name(r), c->peer, detail != NULL ? detail : "-");
        conn_fail(c, "TLS handshake with %s failed: %s (%s)", c->peer, sc_tls_fail_name(r),
                  detail != NULL ? detail : "-");
        channel_process(ch);
        return;
    }
    const uint8_t *alpn;
    size_t alpn_len;
    if (!sc_stream_alpn(s, &alpn, &alpn_len) || alpn_len != 2 || memcmp(alpn, "h2", 2) != 0) {
        conn_fail(c, "server %s did not negotiate ALPN h2", c->peer);
        channel_process(ch);
        return;
    }
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0) {
        abort();
    }
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    int rv = nghttp2_session_client_new(&c->h2, cbs, c);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0) {
        conn_fail(c, "nghttp2 session: %s", nghttp2_strerror(rv));
        channel_process(ch);
        return;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
    };
    nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, 4 << 20);
    c->state = CONN_READY;
    c->last_read_ms = uv_now(ch->loop);
    sc_debug("grpc.connected", "channel=%s peer=%s tls=%s", ch->name, c->peer,
             sc_stream_tls_version(s));
    rv = sc_stream_read_start(s, on_read);
    if (rv != 0) {
        conn_fail(c, "read start: %s", sc_strerror(rv));
    } else if (ch->keepalive_ms > 0) {
        uint64_t tick = ch->keepalive_ms / 4;
        tick = tick < 50 ? 50 : tick > 1000 ? 1000 : tick;
        uv_timer_start(&c->ka, on_ka_tick, tick, tick);
    }
    channel_process(ch);
}

static void on_connected(struct sc_stream *s, int status);

// set_peer renders the address being tried for logs and errors.
static void set_peer(struct cc_conn *c, const struct sockaddr *a)
{
    // INET6_ADDRSTRLEN: "[ip]:port" always fits c->peer (gcc's
    // -Wformat-truncation proves it at -O0 too).
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (a->sa_family == AF_INET6) {
        uv_ip6_name((const struct sockaddr_in6 *)a, ip, sizeof(ip));
        port = ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
        snprintf(c->peer, sizeof(c->peer), "[%s]:%d", ip, port);
    } else {
        uv_ip4_name((const struct sockaddr_in *)a, ip, sizeof(ip));
        port = ntohs(((const struct sockaddr_in *)a)->sin_port);
        snprintf(c->peer, sizeof(c->peer), "%s:%d", ip, port);
    }
}

// conn_connect_next starts a TCP connect to the next resolved address
// ("localhost" may give ::1 before 127.0.0.1). Returns 0 or the last error.
static int conn_connect_next(struct cc_conn *c)
{
    struct cc_channel *ch = c->ch;
    int rc = UV_EADDRNOTAVAIL;
    while (c->addr_idx < c->num_addrs) {
        const struct sockaddr *a = (const struct sockaddr *)&c->addrs[c->addr_idx++];
        set_peer(c, a);
        c->stream = sc_stream_new(ch->loop, NULL);
        sc_stream_set_data(c->stream, c);
        c->open_handles++;
        rc = sc_stream_connect(c->stream, a, ch->connect_timeout_ms, on_connected);
        if (rc == 0) {
            return 0;
        }
        sc_stream_close(c->stream, on_stream_closed);
        c->stream = NULL;
    }
    return rc;
}

static void on_connected(struct sc_stream *s, int status)
{
    struct cc_conn *c = sc_stream_get_data(s);
    struct cc_channel *ch = c->ch;
    if (ch == NULL || c->state == CONN_DEAD) {
        conn_fail(c, "channel closed");
        return;
    }
    if (status != 0) {
        const char *why = status == UV_ETIMEDOUT ? "timed out" : sc_strerror(status);
        if (c->addr_idx < c->num_addrs) {
            sc_debug("grpc.connect_next", "channel=%s peer=%s detail=%s", ch->name, c->peer, why);
            sc_stream_close(c->stream, on_stream_closed);
            c->stream = NULL;
            if (conn_connect_next(c) == 0) {
                return;
            }
        }
        conn_fail(c, "connect to %s failed: %s", c->peer, why);
        channel_process(ch);
        return;
    }
    c->state = CONN_HANDSHAKING;
    const char *sni = is_ip_literal(ch->authority) ? NULL : ch->authority;
    int rc = sc_stream_start_tls(s, ch->ctx, false, sni, ch->connect_timeout_ms, on_handshake);
    if (rc != 0) {
        conn_fail(c, "TLS start: %s", sc_strerror(rc));
        channel_process(ch);
    }
}

// take_addrs copies the IPv4/IPv6 addresses of |res| (at most 8) into c->addrs.
static int take_addrs(struct cc_conn *c, const struct addrinfo *res, char *err, size_t err_len)
{
    c->num_addrs = 0;
    c->addr_idx = 0;
    for (const struct addrinfo *ai = res; ai != NULL && c->num_addrs < 8; ai = ai->ai_next) {
        if (ai->ai_addrlen <= sizeof(c->addrs[0]) &&
            (ai->ai_family == AF_INET || ai->ai_family == AF_INET6)) {
            memcpy(&c->addrs[c->num_addrs++], ai->ai_addr, ai->ai_addrlen);
        }
    }
    if (c->num_addrs == 0) {
        snprintf(err, err_len, "cannot resolve %s: no IPv4/IPv6 address", c->peer);
        return -1;
    }
    return 0;
}

// resolve_literal fills c->addrs from a host that is an IP address: no
// lookup, so it is done at once (AI_NUMERICHOST never asks DNS).
static int resolve_literal(struct cc_conn *c, char *err, size_t err_len)
{
    struct cc_channel *ch = c->ch;
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(ch->host, ch->port, &hints, &res);
    if (rc != 0 || res == NULL) {
        snprintf(err, err_len, "cannot resolve %s: %s", ch->host, gai_strerror(rc));
        return -1;
    }
    rc = take_addrs(c, res, err, err_len);
    freeaddrinfo(res);
    return rc;
}

// on_resolved continues conn_start once a host name is looked up. The lookup
// ran on libuv's thread pool: a slow or dead DNS server never blocks the
// loop (the admin endpoints and the data path share it).
static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct cc_conn *c = req->data;
    c->resolving = false;
    c->open_handles--;
    if (c->state == CONN_DEAD || c->ch == NULL) {
        uv_freeaddrinfo(res);
        conn_maybe_free(c);
        return;
    }
    struct cc_channel *ch = c->ch;
    char err[256];
    int rc = -1;
    if (status != 0) {
        snprintf(err, sizeof(err), "cannot resolve %s: %s", ch->host, uv_strerror(status));
    } else {
        rc = take_addrs(c, res, err, sizeof(err));
    }
    uv_freeaddrinfo(res);
    if (rc != 0) {
        conn_fail(c, "%s", err);
        channel_process(ch);
        return;
    }
    rc = conn_connect_next(c);
    if (rc != 0) {
        conn_fail(c, "connect to %s failed: %s", c->peer, sc_strerror(rc));
        channel_process(ch);
    }
}

// conn_start creates a connection and binds every waiting call to it.
static void conn_start(struct cc_channel *ch)
{
    struct cc_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        abort();
    }
    c->ch = ch;
    c->state = CONN_CONNECTING;
    uv_timer_init(ch->loop, &c->ka);
    c->ka.data = c;
    c->open_handles = 1;
    c->next = ch->conns;
    ch->conns = c;
    ch->conn = c;
    bool v6 = strchr(ch->host, ':') != NULL;
    snprintf(c->peer, sizeof(c->peer), v6 ? "[%s]:%s" : "%s:%s", ch->host, ch->port);
    for (struct cc_call *call = ch->calls; call != NULL; call = call->next) {
        if (call->conn == NULL && !call->finished && call->stream_id == 0) {
            call->conn = c;
        }
    }
    char err[256];
    if (!is_ip_literal(ch->host)) {
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        c->gai.data = c;
        int rc = uv_getaddrinfo(ch->loop, &c->gai, on_resolved, ch->host, ch->port, &hints);
        if (rc != 0) {
            conn_fail(c, "cannot resolve %s: %s", ch->host, uv_strerror(rc));
            return;
        }
        c->resolving = true;
        c->open_handles++;
        return;
    }
    if (resolve_literal(c, err, sizeof(err)) != 0) {
        conn_fail(c, "%s", err);
        return;
    }
    int rc = conn_connect_next(c);
    if (rc != 0) {
        conn_fail(c, "connect to %s failed: %s", c->peer, sc_strerror(rc));
    }
}

// submit_call sends the request HEADERS of |call| on its ready connection.
static void submit_call(struct cc_conn *c, struct cc_call *call)
{
    struct cc_channel *ch = c->ch;
    char timeout[CC_GRPC_TIMEOUT_MAX_LEN];
    bool has_timeout = false;
    if (call->timeout_ms > 0) {
        uint64_t now = uv_now(ch->loop);
        uint64_t left = call->deadline_ms > now ? call->deadline_ms - now : 1;
        cc_grpc_timeout_encode(timeout, left);
        has_timeout = true;
    }
    char *auth = call->token != NULL ? xasprintf("Bearer %s", call->token) : NULL;
    nghttp2_nv nva[10];
    size_t n = 0;
#define NV(k, v)                                                                                   \
    nva[n++] =                                                                                     \
        (nghttp2_nv){(uint8_t *)(k), (uint8_t *)(v), strlen(k), strlen(v), NGHTTP2_NV_FLAG_NONE}
    NV(":method", "POST");
    NV(":scheme", "https");
    NV(":path", call->path);
    NV(":authority", ch->authority);
    if (has_timeout) {
        NV("grpc-timeout", timeout);
    }
    NV("te", "trailers");
    NV("content-type", "application/grpc");
    NV("user-agent", USER_AGENT);
    if (auth != NULL) {
        nva[n++] = (nghttp2_nv){(uint8_t *)"authorization", (uint8_t *)auth, 13, strlen(auth),
                                NGHTTP2_NV_FLAG_NO_INDEX};
    }
#undef NV
    nghttp2_data_provider prd = {.source.ptr = call, .read_callback = on_data_read};
    int32_t id = nghttp2_submit_request(c->h2, NULL, nva, n, &prd, call);
    if (auth != NULL) {
        OPENSSL_cleanse(auth, strlen(auth));
        free(auth);
    }
    if (id < 0) {
        call_finish(call, CC_GRPC_UNAVAILABLE, nghttp2_strerror(id));
        return;
    }
    call->stream_id = id;
}

/* ---- channel -------------------------------------------------------------- */

// channel_process is the one driver: submits waiting calls, starts a
// connection when one is needed, flushes output and reports ended calls.
static void channel_process(struct cc_channel *ch)
{
    if (ch->processing) {
        ch->reprocess = true;
        return;
    }
    ch->processing = true;
    do {
        ch->reprocess = false;
        // 1. Calls that need a connection.
        bool waiting = false;
        for (struct cc_call *call = ch->calls; call != NULL; call = call->next) {
            if (call->finished || call->stream_id > 0) {
                continue;
            }
            if (call->conn == NULL) {
                waiting = true;
            } else if (call->conn->state == CONN_READY && !call->conn->goaway) {
                submit_call(call->conn, call);
            }
        }
        if (waiting && !ch->closing) {
            if (ch->conn != NULL && ch->conn->state != CONN_DEAD && !ch->conn->goaway) {
                for (struct cc_call *call = ch->calls; call != NULL; call = call->next) {
                    if (call->conn == NULL && !call->finished && call->stream_id == 0) {
                        call->conn = ch->conn;
                        if (ch->conn->state == CONN_READY) {
                            submit_call(ch->conn, call);
                        }
                    }
                }
            } else {
                conn_start(ch);
            }
        }
        // 2. Flush every live connection.
        for (struct cc_conn *c = ch->conns, *next; c != NULL; c = next) {
            next = c->next;
            conn_flush(c);
        }
        // 3. Report ended calls, in order.
        struct cc_call **pp = &ch->calls;
        while (*pp != NULL) {
            struct cc_call *call = *pp;
            if (!call->finished) {
                pp = &call->next;
                continue;
            }
            *pp = call->next;
            if (call->status != CC_GRPC_OK) {
                sc_debug("grpc.call_end", "channel=%s path=%s status=%s message=%s", ch->name,
                         call->path, cc_grpc_status_name(call->status), call->message);
            }
            if (call->on_close != NULL) {
                call->on_close(call, call->status, call->message, call->arg);
            }
            call_release(call);
            // on_close may have started or ended calls: rescan from the head.
            pp = &ch->calls;
            ch->reprocess = true;
        }
    } while (ch->reprocess && !ch->closing);
    ch->processing = false;
    if (!ch->closing) {
        for (struct cc_conn *c = ch->conns, *next; c != NULL; c = next) {
            next = c->next;
            conn_flush(c);
        }
    }
}

static int load_trust(SSL_CTX *ctx, const char *file, char *err, size_t err_len)
{
    int count = sc_pem_add_trust_file(SSL_CTX_get_cert_store(ctx), file);
    if (count < 0) {
        snprintf(err, err_len, "cannot read control-plane trust file %s: %s", file,
                 strerror(-count));
        return -1;
    }
    if (count == 0) {
        snprintf(err, err_len, "control-plane trust file %s holds no PEM certificate", file);
        return -1;
    }
    return 0;
}

// split_target parses "host:port" or "[v6]:port".
static int split_target(const char *target, char **out_host, char **out_port)
{
    const char *colon;
    const char *host = target;
    size_t host_len;
    if (target[0] == '[') {
        const char *end = strchr(target, ']');
        if (end == NULL || end[1] != ':') {
            return -1;
        }
        host = target + 1;
        host_len = (size_t)(end - host);
        colon = end + 1;
    } else {
        colon = strrchr(target, ':');
        if (colon == NULL || strchr(target, ':') != colon) {
            return -1;
        }
        host_len = (size_t)(colon - target);
    }
    const char *port = colon + 1;
    if (host_len == 0 || *port == '\0' || strlen(port) > 5) {
        return -1;
    }
    long p = 0;
    for (const char *q = port; *q; q++) {
        if (*q < '0' || *q > '9') {
            return -1;
        }
        p = p * 10 + (*q - '0');
    }
    if (p < 1 || p > 65535) {
        return -1;
    }
    *out_host = strndup(host, host_len);
    *out_port = xstrdup(port);
    return 0;
}

// channel_destroy frees |ch| and what it owns (its timer is closed or was
// never started).
static void channel_destroy(struct cc_channel *ch)
{
    SSL_CTX_free(ch->ctx);
    free(ch->host);
    free(ch->port);
    free(ch->authority);
    free(ch->token_file);
    free(ch->name);
    free(ch);
}

struct cc_channel *cc_channel_new(uv_loop_t *loop, const struct cc_channel_config *cfg, char *err,
                                  size_t err_len)
{
    if (cfg->target == NULL || cfg->trust_file == NULL) {
        snprintf(err, err_len, "control-plane address and trust file are required");
        return NULL;
    }
    struct cc_channel *ch = calloc(1, sizeof(*ch));
    if (ch == NULL) {
        abort();
    }
    if (split_target(cfg->target, &ch->host, &ch->port) != 0) {
        snprintf(err, err_len, "bad control-plane address '%s' (want HOST:PORT or [V6]:PORT)",
                 cfg->target);
        goto out_free;
    }
    ch->loop = loop;
    ch->authority = xstrdup(cfg->authority != NULL ? cfg->authority : ch->host);
    ch->token_file = cfg->token_file != NULL ? xstrdup(cfg->token_file) : NULL;
    ch->name = xstrdup("grpc");
    ch->connect_timeout_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms : 10000;
    ch->keepalive_ms = cfg->keepalive_ms;
    ch->keepalive_timeout_ms = cfg->keepalive_timeout_ms ? cfg->keepalive_timeout_ms : 20000;
    ch->max_recv_msg = cfg->max_recv_msg ? cfg->max_recv_msg : CC_GRPC_DEFAULT_MAX_MSG;

    ch->ctx = SSL_CTX_new(TLS_method());
    if (ch->ctx == NULL) {
        snprintf(err, err_len, "SSL_CTX_new failed");
        goto out_free;
    }
    SSL_CTX_set_min_proto_version(ch->ctx, TLS1_2_VERSION);
    static const uint8_t alpn[] = {2, 'h', '2'};
    if (SSL_CTX_set_alpn_protos(ch->ctx, alpn, sizeof(alpn)) != 0) {
        snprintf(err, err_len, "cannot set ALPN");
        goto out_free;
    }
    if (load_trust(ch->ctx, cfg->trust_file, err, err_len) != 0) {
        goto out_free;
    }
    SSL_CTX_set_verify(ch->ctx, SSL_VERIFY_PEER, NULL);
    // The server certificate must name the host we dialled (DNS or IP SAN).
    X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ch->ctx);
    int ok = is_ip_literal(ch->authority)
                 ? X509_VERIFY_PARAM_set1_ip_asc(param, ch->authority)
                 : X509_VERIFY_PARAM_set1_host(param, ch->authority, strlen(ch->authority));
    if (!ok) {
        snprintf(err, err_len, "cannot set the verified server name '%s'", ch->authority);
        goto out_free;
    }
    uv_timer_init(loop, &ch->kick);
    ch->kick.data = ch;
    return ch;

out_free:
    channel_destroy(ch);
    return NULL;
}

void cc_channel_set_debug_name(struct cc_channel *ch, const char *name)
{
    free(ch->name);
    ch->name = xstrdup(name);
}

static void on_kick_closed(uv_handle_t *h)
{
    channel_destroy(h->data);
}

void cc_channel_free(struct cc_channel *ch)
{
    if (ch == NULL || ch->closing) {
        return;
    }
    for (struct cc_call *call = ch->calls; call != NULL; call = call->next) {
        cc_call_cancel(call, "channel closed");
    }
    ch->closing = true;
    uv_timer_stop(&ch->kick);
    // Report the cancelled calls now (documented: before this returns).
    bool was_processing = ch->processing;
    ch->processing = false;
    while (ch->calls != NULL) {
        struct cc_call *call = ch->calls;
        ch->calls = call->next;
        if (call->on_close != NULL) {
            call->on_close(call, call->status, call->message, call->arg);
        }
        call_release(call);
    }
    ch->processing = was_processing;
    while (ch->conns != NULL) {
        struct cc_conn *c = ch->conns;
        if (c->h2 != NULL && !c->in_recv) {
            nghttp2_session_terminate_session(c->h2, NGHTTP2_NO_ERROR);
            c->state = CONN_READY;
            conn_flush(c);
        }
        c->state = CONN_DEAD;
        conn_teardown(c);
        if (ch->conns == c) { // teardown deferred (inside mem_recv): unlink by hand
            ch->conns = c->next;
            c->ch = NULL;
        }
    }
    ch->conn = NULL;
    uv_close((uv_handle_t *)&ch->kick, on_kick_closed);
}

/* ---- unary ---------------------------------------------------------------- */

struct unary {
    cc_unary_cb cb;
    void *arg;
    uint8_t *resp;
    size_t len;
    int count;
};

static int unary_msg(struct cc_call *call, const uint8_t *msg, size_t len, void *arg)
{
    struct unary *u = arg;
    if (u->count++ == 0) {
        u->resp = malloc(len ? len : 1);
        if (u->resp == NULL) {
            abort();
        }
        memcpy(u->resp, msg, len);
        u->len = len;
    }
    return 0;
}

static void unary_close(struct cc_call *call, int status, const char *message, void *arg)
{
    struct unary *u = arg;
    if (status == CC_GRPC_OK && u->count != 1) {
        char m[96];
        snprintf(m, sizeof(m), "unary call got %d response messages, want 1", u->count);
        u->cb(CC_GRPC_INTERNAL, m, NULL, 0, u->arg);
    } else {
        u->cb(status, message, status == CC_GRPC_OK ? u->resp : NULL,
              status == CC_GRPC_OK ? u->len : 0, u->arg);
    }
    free(u->resp);
    free(u);
}

int cc_unary(struct cc_channel *ch, const char *path, const ProtobufCMessage *req,
             uint64_t timeout_ms, cc_unary_cb cb, void *arg)
{
    size_t n = protobuf_c_message_get_packed_size(req);
    if (n > UINT32_MAX) {
        return SC_EPROTO;
    }
    struct unary *u = calloc(1, sizeof(*u));
    if (u == NULL) {
        abort();
    }
    u->cb = cb;
    u->arg = arg;
    struct cc_call *call = cc_call_start(ch, path, timeout_ms, unary_msg, unary_close, u);
    if (!call->finished) {
        cc_call_send(call, req);
    }
    cc_call_close_send(call);
    return 0;
}
