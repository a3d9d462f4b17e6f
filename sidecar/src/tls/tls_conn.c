// tls_conn.c — the TLS transport of struct sc_stream: one SSL per stream,
// fed from our own buffers through a custom BIO (h2o read_bio/write_bio).
//
// Ciphertext path:  socket -> pool buffer (s->in) -> BIO read -> SSL
//                   SSL -> BIO write -> pool buffer (s->out) -> uv_write
// Plaintext read:   SSL_read fills a pool buffer that the user's read callback
//                   owns. Nothing is held while idle: s->in is released once
//                   SSL has taken its bytes and s->out as soon as it is written.
//
// Invariant: the socket is read (uv_read_start) only while s->in is empty and
// either the handshake runs or the user wants data, so unread ciphertext
// never piles up: backpressure reaches the peer through TCP.
#include "core/stream_int.h"

#include <stdio.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>

#include "sc/err.h"
#include "sc/log.h"
#include "sc/tls.h"
#include "tls/tls_int.h"

static void tls_process(struct sc_stream *s);
static int flush_out(struct sc_stream *s, sc_stream_write_cb cb, void *arg);

// ---- custom BIO ----------------------------------------------------------

static int bio_write(BIO *b, const char *data, int len)
{
    struct sc_stream *s = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    size_t left = (size_t)len;
    while (left > 0) {
        if (s->out == NULL) {
            s->out = sc_buf_get_sized(s->pool,
                                      (s->flags & (SC_STREAM_F_BULK | SC_STREAM_F_BIG_WRITE)) != 0);
            s->out_len = 0;
        }
        size_t cap = sc_buf_size(s->out);
        size_t n = cap - s->out_len;
        if (n > left) {
            n = left;
        }
        memcpy(s->out + s->out_len, data, n);
        s->out_len += n;
        data += n;
        left -= n;
        if (s->out_len == cap) {
            // A full buffer goes to the socket now; ordering is kept by libuv.
            int r = flush_out(s, NULL, NULL);
            if (r != 0) {
                s->out_err = r;
            }
        }
    }
    return len;
}

static int bio_read(BIO *b, char *out, int len)
{
    struct sc_stream *s = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (s->in == NULL) {
        if (s->flags & SC_STREAM_F_IN_EOF) {
            return 0; // EOF
        }
        BIO_set_retry_read(b);
        return -1;
    }
    size_t n = s->in_len - s->in_off;
    if (n > (size_t)len) {
        n = (size_t)len;
    }
    memcpy(out, s->in + s->in_off, n);
    s->in_off += n;
    if (s->in_off == s->in_len) {
        sc_buf_release(s->in);
        s->in = NULL;
        s->in_off = s->in_len = 0;
    }
    return (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long larg, void *parg)
{
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    default:
        return 0;
    }
}

static BIO_METHOD *bio_method;
static uv_once_t bio_method_once = UV_ONCE_INIT;

static void init_bio_method(void)
{
    bio_method = BIO_meth_new(BIO_TYPE_SOURCE_SINK, "sc_stream");
    if (bio_method != NULL) {
        BIO_meth_set_write(bio_method, bio_write);
        BIO_meth_set_read(bio_method, bio_read);
        BIO_meth_set_ctrl(bio_method, bio_ctrl);
    }
}

// ---- output --------------------------------------------------------------

// flush_out writes the pending ciphertext (if any) and attaches |cb| to that
// write, or to an empty write if nothing is pending, so the callback still
// runs after every earlier byte went out.
static int flush_out(struct sc_stream *s, sc_stream_write_cb cb, void *arg)
{
    if (s->out_len == 0 && cb == NULL) {
        return 0;
    }
    char *owned = s->out;
    uv_buf_t b = uv_buf_init(owned, (unsigned)s->out_len);
    s->out = NULL;
    s->out_len = 0;
    if (owned == NULL) {
        b = uv_buf_init((char *)"", 0);
    }
    return sc_stream__write_raw(s, &b, 1, owned, cb, arg);
}

// ---- handshake failure classification -----------------------------------

// classify_failure picks the one reason of a failed handshake. The verifier's
// own verdict wins; then what BoringSSL reported; then transport facts.
static void classify_failure(struct sc_stream *s, int ssl_err)
{
    enum sc_tls_fail reason = SC_TLS_FAIL_OTHER;
    const char *detail = NULL;
    char errs[128];
    uint32_t e = sc_tls_drain_errors(errs, sizeof(errs));

    if (sc_tls_verify_result(s->ssl, &reason, &detail)) {
        goto out;
    }
    reason = SC_TLS_FAIL_OTHER;
    detail = errs;
    if ((s->flags & SC_STREAM_F_GOT_BYTES) && s->first_byte != 0x16 && s->first_byte != 0x15) {
        // A TLS peer's first record is a handshake (22) or an alert (21).
        reason = SC_TLS_FAIL_NOT_TLS;
        detail = "first byte is not a TLS record";
        goto out;
    }
    if (e != 0 && ERR_GET_LIB(e) == ERR_LIB_SSL) {
        int r = ERR_GET_REASON(e);
        switch (r) {
        case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
            reason = SC_TLS_FAIL_NO_PEER_CERT;
            goto out;
        case SSL_R_UNSUPPORTED_PROTOCOL:
        case SSL_R_NO_SUPPORTED_VERSIONS_ENABLED:
        case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
            reason = SC_TLS_FAIL_PROTOCOL_VERSION;
            goto out;
        case SSL_R_HTTP_REQUEST:
        case SSL_R_HTTPS_PROXY_REQUEST:
        case SSL_R_WRONG_VERSION_NUMBER:
            reason = SC_TLS_FAIL_NOT_TLS;
            goto out;
        default:
            break;
        }
        if (r >= SSL_AD_REASON_OFFSET) {
            reason = SC_TLS_FAIL_PEER_ALERT;
            goto out;
        }
    }
    if (s->flags & SC_STREAM_F_IN_EOF) {
        reason = SC_TLS_FAIL_PEER_CLOSED;
        detail =
            s->in_err == UV_EOF ? "connection closed during handshake" : uv_strerror(s->in_err);
        goto out;
    }
    (void)ssl_err;
out:
    s->fail = reason;
    snprintf(s->fail_detail, sizeof(s->fail_detail), "%s", detail != NULL ? detail : "-");
}

static void fail_handshake(struct sc_stream *s, enum sc_tls_fail forced, int ssl_err)
{
    if (forced != SC_TLS_FAIL_MAX) {
        s->fail = forced;
        snprintf(s->fail_detail, sizeof(s->fail_detail), "%s",
                 forced == SC_TLS_FAIL_TIMEOUT ? "handshake timed out" : "-");
        ERR_clear_error();
    } else {
        classify_failure(s, ssl_err);
    }
    s->tls_state = SC_STREAM_TLS_FAILED;
    uv_timer_stop(&s->timer);
    // Send the alert BoringSSL queued so the peer learns why.
    flush_out(s, NULL, NULL);
    sc_stream__uv_read(s, false, NULL);
    s->hs_cb(s, SC_ETLS);
}

static void on_hs_timeout(uv_timer_t *t)
{
    struct sc_stream *s = t->data;
    if (s->tls_state == SC_STREAM_TLS_HANDSHAKE) {
        fail_handshake(s, SC_TLS_FAIL_TIMEOUT, 0);
    }
}

// ---- the driver ----------------------------------------------------------

static void on_tls_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

// sync_uv_read keeps the invariant: read the socket only while no ciphertext
// is buffered and someone (handshake or user) wants bytes.
static void sync_uv_read(struct sc_stream *s)
{
    bool want = !(s->flags & (SC_STREAM_F_CLOSING | SC_STREAM_F_IN_EOF)) && s->in == NULL &&
                (s->tls_state == SC_STREAM_TLS_HANDSHAKE ||
                 (s->tls_state == SC_STREAM_TLS_OPEN && (s->flags & SC_STREAM_F_READING) &&
                  !(s->flags & SC_STREAM_F_EOF_SENT)));
    sc_stream__uv_read(s, want, on_tls_read);
}

static void deliver_end(struct sc_stream *s, ssize_t status)
{
    s->flags |= SC_STREAM_F_EOF_SENT;
    s->read_cb(s, status, NULL);
}

// read_plaintext decrypts into pool buffers and hands them to the user while
// the user is reading. Returns when SSL needs more input or the user stops.
static void read_plaintext(struct sc_stream *s)
{
    while ((s->flags & SC_STREAM_F_READING) &&
           !(s->flags & (SC_STREAM_F_CLOSING | SC_STREAM_F_EOF_SENT))) {
        char *pb = sc_buf_get_sized(s->pool, (s->flags & SC_STREAM_F_BULK) != 0);
        // The whole buffer: plaintext is never encrypted again, so it needs
        // no SC_BUF_READ_RESERVE, and a pass over one large read's records
        // (up to a record more than the read) then fits one callback instead
        // of a full buffer and a few stray bytes (bench/NOTES.md §19.1).
        size_t cap = sc_buf_size(pb);
        size_t n = 0;
        int r = 1;
        int err = SSL_ERROR_NONE;
        while (n < cap) {
            ERR_clear_error();
            r = SSL_read(s->ssl, pb + n, (int)(cap - n));
            if (r <= 0) {
                err = SSL_get_error(s->ssl, r);
                break;
            }
            n += (size_t)r;
        }
        if (n > 0) {
            uv_buf_t b = uv_buf_init(pb, (unsigned)n);
            s->read_cb(s, (ssize_t)n, &b);
        } else {
            sc_buf_release(pb);
        }
        if (r > 0) {
            continue; // buffer full: more may be waiting
        }
        if (s->flags & (SC_STREAM_F_CLOSING)) {
            return;
        }
        switch (err) {
        case SSL_ERROR_WANT_READ:
            return;
        case SSL_ERROR_ZERO_RETURN:
            ERR_clear_error();
            deliver_end(s, UV_EOF);
            return;
        case SSL_ERROR_SYSCALL:
            // The transport ended without close_notify. Plenty of peers do
            // that after their last byte; report it as the end of data.
            ERR_clear_error();
            deliver_end(s, (s->in_err != 0 && s->in_err != UV_EOF) ? s->in_err : UV_EOF);
            return;
        default: {
            // A fatal alert or a bad record after the handshake: the end of
            // this stream, reported to the user who logs it in context.
            char errs[128];
            sc_tls_drain_errors(errs, sizeof(errs));
            snprintf(s->fail_detail, sizeof(s->fail_detail), "%s", errs);
            sc_debug("tls.read_error", "errors=%s", errs);
            deliver_end(s, SC_ETLS);
        }
            return;
        }
    }
}

static void tls_process(struct sc_stream *s)
{
    if (s->flags & SC_STREAM_F_CLOSING) {
        return;
    }
    if (s->tls_state == SC_STREAM_TLS_HANDSHAKE) {
        if (!(s->flags & SC_STREAM_F_HS_STARTED)) {
            // First flight: offer a stored session (client). Done here, not
            // in start_tls, so a per-connection expected ID set right after
            // start_tls picks the matching session.
            s->flags |= SC_STREAM_F_HS_STARTED;
            sc_tls__before_handshake(s->ssl);
        }
        ERR_clear_error();
        int r = SSL_do_handshake(s->ssl);
        if (r != 1) {
            int err = SSL_get_error(s->ssl, r);
            flush_out(s, NULL, NULL);
            if (err == SSL_ERROR_WANT_READ && !(s->flags & SC_STREAM_F_IN_EOF)) {
                sync_uv_read(s);
                return;
            }
            fail_handshake(s, SC_TLS_FAIL_MAX, err);
            return;
        }
        flush_out(s, NULL, NULL);
        if (!sc_tls__verify_resumed(s->ssl)) {
            fail_handshake(s, SC_TLS_FAIL_MAX, SSL_ERROR_SSL);
            return;
        }
        s->tls_state = SC_STREAM_TLS_OPEN;
        s->hs_us = sc_stream__now_us() - s->hs_start_us;
        if (s->hs_us == 0) {
            s->hs_us = 1;
        }
        uv_timer_stop(&s->timer);
        // Reading stays on through the callback; sync_uv_read below stops
        // it if nobody wants plaintext yet (no epoll_ctl churn otherwise).
        s->hs_cb(s, 0);
        if (s->flags & SC_STREAM_F_CLOSING) {
            return;
        }
    }
    if (s->tls_state != SC_STREAM_TLS_OPEN) {
        return;
    }
    read_plaintext(s);
    if (s->flags & SC_STREAM_F_CLOSING) {
        return;
    }
    // SSL_read may have produced records (alerts, KeyUpdate acks).
    flush_out(s, NULL, NULL);
    sync_uv_read(s);
}

static void on_tls_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct sc_stream *s = stream->data;
    if (sc_stream__read_skip(s, nread, buf)) {
        return;
    }
    if (nread < 0) {
        sc_buf_release(buf->base);
        s->flags |= SC_STREAM_F_IN_EOF;
        s->in_err = (int)nread;
        sc_stream__uv_read(s, false, NULL);
    } else {
        if (!(s->flags & SC_STREAM_F_GOT_BYTES)) {
            s->flags |= SC_STREAM_F_GOT_BYTES;
            s->first_byte = (uint8_t)buf->base[0];
        }
        // The socket is read only while s->in is empty (sync_uv_read), so
        // nothing is pending here. Reading stays on unless processing leaves
        // bytes behind: stopping and restarting around every read would cost
        // two epoll_ctl calls per read.
        s->in = buf->base;
        s->in_off = 0;
        s->in_len = (size_t)nread;
    }
    tls_process(s);
}

void sc_stream__tls_process(struct sc_stream *s)
{
    tls_process(s);
}

static void kick(struct sc_stream *s)
{
    s->flags |= SC_STREAM_F_TLS_KICK;
    sc_stream__schedule(s);
}

// ---- ops -----------------------------------------------------------------

static int tls_read_start(struct sc_stream *s)
{
    if (s->tls_state != SC_STREAM_TLS_OPEN) {
        return SC_ESTATE;
    }
    if (s->flags & SC_STREAM_F_EOF_SENT) {
        return 0;
    }
    // Bytes already buffered (ciphertext, decrypted records, or a pending
    // EOF) are delivered on the next turn, never re-entrantly.
    if (s->in != NULL || SSL_pending(s->ssl) > 0 || (s->flags & SC_STREAM_F_IN_EOF)) {
        kick(s);
        return 0;
    }
    sync_uv_read(s);
    return 0;
}

static int tls_read_stop(struct sc_stream *s)
{
    if (s->tls_state == SC_STREAM_TLS_OPEN) {
        sc_stream__uv_read(s, false, NULL);
    }
    return 0;
}

static int tls_write(struct sc_stream *s, const uv_buf_t bufs[], unsigned nbufs, char *owned,
                     sc_stream_write_cb cb, void *arg)
{
    if (s->tls_state != SC_STREAM_TLS_OPEN) {
        sc_buf_release(owned);
        return SC_ESTATE;
    }
    size_t total = 0;
    for (unsigned i = 0; i < nbufs; i++) {
        total += bufs[i].len;
    }
    // Ciphertext of a large write goes into large buffers: one socket write
    // for the whole of it.
    if (total > SC_BUF_READ_SIZE) {
        s->flags |= SC_STREAM_F_BIG_WRITE;
    }
    bool ok = true;
    for (unsigned i = 0; i < nbufs && ok; i++) {
        if (bufs[i].len == 0) {
            continue;
        }
        ERR_clear_error();
        // The BIO never refuses bytes, so SSL_write takes everything at once.
        int r = SSL_write(s->ssl, bufs[i].base, (int)bufs[i].len);
        ok = r > 0 && (size_t)r == bufs[i].len;
    }
    s->flags &= ~SC_STREAM_F_BIG_WRITE;
    sc_buf_release(owned); // the plaintext is encrypted (or refused): no longer needed
    if (!ok) {
        sc_tls_log_errors("tls.write");
        return SC_ETLS;
    }
    if (s->out_err != 0) {
        return s->out_err;
    }
    return flush_out(s, cb, arg);
}

static void on_tls_shutdown(uv_shutdown_t *req, int status)
{
}

static int tls_shutdown(struct sc_stream *s)
{
    if (s->tls_state == SC_STREAM_TLS_OPEN) {
        ERR_clear_error();
        SSL_shutdown(s->ssl); // queues close_notify; we do not wait for the peer's
        ERR_clear_error();
        flush_out(s, NULL, NULL);
    }
    return uv_shutdown(&s->shutdown_req, (uv_stream_t *)&s->tcp, on_tls_shutdown);
}

const struct sc_stream_ops sc_stream__tls_ops = {
    .name = "tls",
    .read_start = tls_read_start,
    .read_stop = tls_read_stop,
    .write = tls_write,
    .shutdown = tls_shutdown,
};

// ---- public --------------------------------------------------------------

int sc_stream_start_tls(struct sc_stream *s, SSL_CTX *ctx, bool is_server, const char *sni,
                        uint64_t timeout_ms, sc_stream_handshake_cb cb)
{
    return sc_stream_start_tls_prefixed(s, ctx, is_server, sni, timeout_ms, cb, NULL, 0);
}

int sc_stream_start_tls_prefixed(struct sc_stream *s, SSL_CTX *ctx, bool is_server, const char *sni,
                                 uint64_t timeout_ms, sc_stream_handshake_cb cb, char *buf,
                                 size_t len)
{
    if ((s->flags & (SC_STREAM_F_CLOSING | SC_STREAM_F_READING)) ||
        s->tls_state != SC_STREAM_TLS_NONE) {
        sc_buf_release(buf);
        return SC_ESTATE;
    }
    if (len == 0) {
        sc_buf_release(buf);
        buf = NULL;
    }
    uv_once(&bio_method_once, init_bio_method);
    if (bio_method == NULL) {
        sc_buf_release(buf);
        return SC_ENOMEM;
    }
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL) {
        sc_tls_log_errors("tls.ssl_new");
        sc_buf_release(buf);
        return SC_ETLS;
    }
    // Nothing of the handshake configuration (our chain, key, curves,
    // ALPN list) is needed once the connection is up: drop the SSL's copy
    // then, so a held connection keeps only its keys and session.
    SSL_set_shed_handshake_config(ssl, 1);
    BIO *bio = BIO_new(bio_method);
    if (bio == NULL) {
        goto out_free_ssl;
    }
    BIO_set_data(bio, s);
    BIO_set_init(bio, 1);
    SSL_set_bio(ssl, bio, bio); // one reference, owned by the SSL
    SSL_set_app_data(ssl, s);
    if (is_server) {
        SSL_set_accept_state(ssl);
    } else {
        SSL_set_connect_state(ssl);
        if (sni != NULL && !SSL_set_tlsext_host_name(ssl, sni)) {
            goto out_free_ssl;
        }
    }
    s->ssl = ssl;
    s->ops = &sc_stream__tls_ops;
    // The plain side may have stopped with reading on; TLS drives it now.
    sc_stream__uv_read(s, false, NULL);
    if (buf != NULL) {
        s->in = buf;
        s->in_off = 0;
        s->in_len = len;
        s->flags |= SC_STREAM_F_GOT_BYTES;
        s->first_byte = (uint8_t)buf[0];
    }
    s->tls_state = SC_STREAM_TLS_HANDSHAKE;
    s->hs_cb = cb;
    s->hs_start_us = sc_stream__now_us();
    if (timeout_ms > 0) {
        uv_timer_start(&s->timer, on_hs_timeout, timeout_ms, 0);
    }
    // Kick the handshake on the next turn: the client's ClientHello goes out,
    // the server waits for bytes. Deferring keeps |cb| out of this call.
    kick(s);
    return 0;

out_free_ssl:
    sc_tls_log_errors("tls.start");
    SSL_free(ssl);
    sc_buf_release(buf);
    return SC_ETLS;
}

void sc_stream__tls_close_notify(struct sc_stream *s)
{
    if (s->ssl == NULL || s->queued_bytes > 0 || (s->flags & SC_STREAM_F_SHUTDOWN)) {
        return;
    }
    ERR_clear_error();
    // Collect the alert without the BIO flushing through uv_write.
    s->flags |= SC_STREAM_F_CLOSING;
    SSL_shutdown(s->ssl);
    ERR_clear_error();
    if (s->out_len > 0) {
        uv_buf_t b = uv_buf_init(s->out, (unsigned)s->out_len);
        (void)uv_try_write((uv_stream_t *)&s->tcp, &b, 1);
    }
}

void sc_stream__tls_free(struct sc_stream *s)
{
    SSL_free(s->ssl);
    s->ssl = NULL;
    sc_buf_release(s->in);
    sc_buf_release(s->out);
    s->in = s->out = NULL;
}

SSL *sc_stream_get0_ssl(const struct sc_stream *s)
{
    return s->ssl;
}

const char *sc_stream_tls_version(const struct sc_stream *s)
{
    if (s->ssl == NULL || s->tls_state != SC_STREAM_TLS_OPEN) {
        return "plain";
    }
    return SSL_get_version(s->ssl);
}

bool sc_stream_alpn(const struct sc_stream *s, const uint8_t **out, size_t *out_len)
{
    if (s->ssl == NULL) {
        return false;
    }
    unsigned len = 0;
    SSL_get0_alpn_selected(s->ssl, out, &len);
    *out_len = len;
    return len > 0;
}

enum sc_tls_fail sc_stream_tls_fail(const struct sc_stream *s, const char **out_detail)
{
    if (out_detail != NULL) {
        *out_detail = s->fail_detail[0] ? s->fail_detail : "-";
    }
    return s->fail;
}

uint64_t sc_stream_handshake_us(const struct sc_stream *s)
{
    return s->hs_us;
}
