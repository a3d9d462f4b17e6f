// sc/stream.h — a byte stream over TCP, plain or TLS, on a libuv loop.
//
// One `struct sc_stream` wraps one TCP connection (an embedded `uv_tcp_t`).
// Plain TCP and TLS are two implementations of the same operations (a vtable,
// like HAProxy's xprt_ops); callers read and write plaintext and never ask
// which one they have. TLS is BoringSSL fed from our own buffers through a
// custom BIO (h2o's read_bio/write_bio): libuv owns the fd, TLS sees bytes.
//
// Lifetime and threading:
//   - A stream lives on one loop and is used only from that loop's thread.
//   - sc_stream_new allocates it; sc_stream_close (idempotent) closes it, and
//     the memory is freed after the close callback returns, once every libuv
//     handle has closed. Calling sc_stream_close from inside any callback of
//     the stream is allowed; the stream stays valid until the close callback.
//   - The SSL, its BIO and all buffers belong to the stream and are freed
//     once, in the final free.
//
// Callbacks (libuv's async contract): if a call that takes a callback returns
// an error, the callback never runs; otherwise it runs exactly once, after
// the call has returned. Write and connect callbacks of a stream that is
// closed before they complete run with UV_ECANCELED before the close
// callback. Read and handshake callbacks never run after sc_stream_close.
//
// Signals: writes to a connection the peer reset raise SIGPIPE (libuv uses
// write(2)); a program using streams must ignore SIGPIPE (seam-sidecar does).
//
// Buffers: reads hand out buffers of SC_BUF_SIZE from the stream's pool; the
// read callback owns them (sc_buf_release when done, e.g. after writing the
// bytes on: the pump forwards them without a copy).
#ifndef SC_STREAM_H
#define SC_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "sc/buf.h"
#include "sc/stats.h"

struct sc_stream;

// sc_stream_connect_cb reports the end of sc_stream_connect: 0, a UV_E* code,
// UV_ETIMEDOUT after the connect timeout, or UV_ECANCELED on close.
typedef void (*sc_stream_connect_cb)(struct sc_stream *s, int status);

// sc_stream_handshake_cb reports the end of the TLS handshake: 0, or SC_ETLS
// (sc/err.h) with the reason in sc_stream_tls_fail().
typedef void (*sc_stream_handshake_cb)(struct sc_stream *s, int status);

// sc_stream_read_cb delivers plaintext. nread > 0: |buf->base| is a buffer
// from sc_buf_get holding |nread| bytes, and the callback owns it (release it
// with sc_buf_release). nread < 0: UV_EOF (orderly end of the peer's data:
// FIN or TLS close_notify) or an error (a UV_E* code or SC_ETLS); |buf| is
// NULL. After a negative nread no more read callbacks run. nread is never 0.
typedef void (*sc_stream_read_cb)(struct sc_stream *s, ssize_t nread, const uv_buf_t *buf);

// sc_stream_write_cb reports that the bytes of one sc_stream_write have been
// handed to the kernel (status 0), or failed, or were cancelled by close.
typedef void (*sc_stream_write_cb)(struct sc_stream *s, int status, void *arg);

// sc_stream_close_cb runs once all handles are closed, right before the
// stream's memory is freed.
typedef void (*sc_stream_close_cb)(struct sc_stream *s);

// sc_stream_new allocates a stream on |loop| with an initialised TCP handle.
// Read buffers come from |pool| (NULL: malloc). It aborts on OOM. Always
// finish with sc_stream_close, even if nothing else was done with it.
struct sc_stream *sc_stream_new(uv_loop_t *loop, struct sc_bufpool *pool);

// sc_stream_set_data / sc_stream_get_data store and return one user pointer.
void sc_stream_set_data(struct sc_stream *s, void *data);
void *sc_stream_get_data(const struct sc_stream *s);

// sc_stream_accept accepts one pending connection from the listening
// |server| into |s| (uv_accept), and sets TCP_NODELAY. Returns 0 or a UV_E*.
int sc_stream_accept(struct sc_stream *s, uv_stream_t *server);

// sc_stream_accept_inherited is sc_stream_accept for a listener that has
// TCP_NODELAY set itself: Linux copies it to every accepted socket, so the
// per-connection setsockopt is skipped.
int sc_stream_accept_inherited(struct sc_stream *s, uv_stream_t *server);

// sc_stream_connect starts a TCP connection to |addr|. |timeout_ms| (0 = no
// limit) bounds it; |cb| runs once. Returns 0 or a UV_E* (|cb| will not run).
int sc_stream_connect(struct sc_stream *s, const struct sockaddr *addr, uint64_t timeout_ms,
                      sc_stream_connect_cb cb);

// sc_stream_start_tls switches a connected stream to TLS and starts the
// handshake. |ctx| is any SSL_CTX (the caller chooses ALPN, verify, certs);
// the stream's SSL takes its own reference, so the caller may drop its own at
// any time (rotation). |sni| (client only, may be NULL) is sent as the server
// name. |timeout_ms| (0 = none) bounds the handshake. |cb| runs once. The
// stream must not be reading or writing plaintext until |cb| reports 0.
// Returns 0, or SC_ETLS / SC_ESTATE (|cb| will not run).
int sc_stream_start_tls(struct sc_stream *s, SSL_CTX *ctx, bool is_server, const char *sni,
                        uint64_t timeout_ms, sc_stream_handshake_cb cb);

// sc_stream_start_tls_prefixed is sc_stream_start_tls for a stream whose
// first |len| bytes were already read (protocol detection): |buf| (from
// sc_buf_get, may be NULL when |len| is 0) is handed to TLS as the first
// input. Ownership of |buf| passes to the stream, also on error. The stream
// must not be reading (sc_stream_read_stop first).
int sc_stream_start_tls_prefixed(struct sc_stream *s, SSL_CTX *ctx, bool is_server, const char *sni,
                                 uint64_t timeout_ms, sc_stream_handshake_cb cb, char *buf,
                                 size_t len);

// sc_stream_read_start starts delivering plaintext to |cb|. It may be
// called again after sc_stream_read_stop; bytes TLS had already decrypted
// are delivered on the next loop turn, never from inside this call.
int sc_stream_read_start(struct sc_stream *s, sc_stream_read_cb cb);

// sc_stream_read_stop stops delivering data (backpressure). No read callback
// runs until the next sc_stream_read_start. Returns 0.
int sc_stream_read_stop(struct sc_stream *s);

// sc_stream_write queues the |nbufs| buffers for writing, in order with all
// earlier writes. The caller keeps the bytes alive until |cb| runs (TLS
// encrypts them during this call, plain TCP writes them in place). |cb| may
// be NULL. Returns 0, or a negative code (then |cb| will not run).
int sc_stream_write(struct sc_stream *s, const uv_buf_t bufs[], unsigned nbufs,
                    sc_stream_write_cb cb, void *arg);

// sc_stream_write_owned is sc_stream_write for bytes that live in |owned|, a
// pool buffer (sc_buf_get*) the stream takes over: it is released as soon as
// the stream no longer needs it — right after encryption (TLS), at once when
// the kernel took every byte, else when the queued write completes — and on
// error. |cb| still runs after the write, as for sc_stream_write. The pump
// uses it so that a burst of reads written through at once does not hold
// every read's buffer until the callbacks of the next loop turn.
int sc_stream_write_owned(struct sc_stream *s, const uv_buf_t bufs[], unsigned nbufs, char *owned,
                          sc_stream_write_cb cb, void *arg);

// sc_stream_write_queue_size returns the bytes accepted by sc_stream_write
// (as sent on the wire, i.e. ciphertext for TLS) that the kernel has not
// taken yet: the backpressure signal. 0 means everything is in the kernel.
size_t sc_stream_write_queue_size(const struct sc_stream *s);

// sc_stream_set_small_reads keeps the stream's reads in small buffers
// (SC_BUF_SIZE) even when they fill up, or (|on| false) lets a full read move
// to large ones again. A mux stream whose session is backed up reads less at
// a time, so that other streams' bytes are not queued behind a large read.
void sc_stream_set_small_reads(struct sc_stream *s, bool on);

// sc_stream_shutdown half-closes the sending side after all queued writes:
// TLS sends close_notify, then the TCP FIN follows. Reading goes on. Safe to
// call more than once. Returns 0 or a negative code.
int sc_stream_shutdown(struct sc_stream *s);

// sc_stream_close closes the stream (idempotent): stops timers, sends a TLS
// close_notify if it can without waiting, and closes every handle. |cb| (may
// be NULL) runs once after that; then the stream is freed. Only the first
// call's |cb| counts.
void sc_stream_close(struct sc_stream *s, sc_stream_close_cb cb);

// sc_stream_close_reset is sc_stream_close but aborts the TCP connection with
// a RST (uv_tcp_close_reset) instead of an orderly FIN.
void sc_stream_close_reset(struct sc_stream *s, sc_stream_close_cb cb);

// sc_stream_is_closing reports whether sc_stream_close has been called.
bool sc_stream_is_closing(const struct sc_stream *s);

// sc_stream_get0_tcp returns the embedded TCP handle (for socket options and
// addresses). Do not close it or change its data pointer.
uv_tcp_t *sc_stream_get0_tcp(struct sc_stream *s);

// sc_stream_get0_loop returns the stream's loop.
uv_loop_t *sc_stream_get0_loop(const struct sc_stream *s);

// sc_stream_peer_name writes the peer address ("127.0.0.1:5555",
// "[::1]:5555", or "-" if unknown) into |out| and returns |out|.
char *sc_stream_peer_name(struct sc_stream *s, char *out, size_t cap);

// sc_stream_get0_ssl returns the stream's SSL (borrowed), or NULL for plain
// TCP. Use it for SSL_get0_peer_certificates, SSL_get0_alpn_selected ...
SSL *sc_stream_get0_ssl(const struct sc_stream *s);

// sc_stream_tls_version returns "TLSv1.3" etc. after a handshake, or "plain".
const char *sc_stream_tls_version(const struct sc_stream *s);

// sc_stream_alpn sets |*out|/|*out_len| to the negotiated ALPN protocol
// (borrowed) and returns true, or returns false if none.
bool sc_stream_alpn(const struct sc_stream *s, const uint8_t **out, size_t *out_len);

// sc_stream_tls_fail returns why the handshake failed (valid after the
// handshake callback reported SC_ETLS) and, if |out_detail| is not NULL, a
// short static-or-stream-owned description for logs.
enum sc_tls_fail sc_stream_tls_fail(const struct sc_stream *s, const char **out_detail);

// sc_stream_handshake_us returns the duration of the finished handshake in
// microseconds (0 before).
uint64_t sc_stream_handshake_us(const struct sc_stream *s);

// sc_stream_ops is the transport vtable. Plain TCP and TLS are two tables;
// exposed for tests and for future transports, not for direct use.
struct sc_stream_ops {
    const char *name;
    int (*read_start)(struct sc_stream *s);
    int (*read_stop)(struct sc_stream *s);
    int (*write)(struct sc_stream *s, const uv_buf_t bufs[], unsigned nbufs, char *owned,
                 sc_stream_write_cb cb, void *arg);
    int (*shutdown)(struct sc_stream *s);
};

#endif
