// stream_int.h — the layout of struct sc_stream, shared by core/stream.c
// (common part + plain TCP) and tls/tls_conn.c (the TLS transport).
#ifndef SC_STREAM_INT_H
#define SC_STREAM_INT_H

#include "sc/stream.h"

enum sc_stream_tls_state {
    SC_STREAM_TLS_NONE = 0, // plain TCP
    SC_STREAM_TLS_HANDSHAKE,
    SC_STREAM_TLS_OPEN,
    SC_STREAM_TLS_FAILED,
};

#define SC_STREAM_F_CLOSING 0x01u     // sc_stream_close called
#define SC_STREAM_F_READING 0x02u     // the user wants plaintext
#define SC_STREAM_F_UV_READING 0x04u  // uv_read_start is active
#define SC_STREAM_F_CONNECTING 0x08u  // connect_cb not yet reported
#define SC_STREAM_F_SHUTDOWN 0x10u    // sc_stream_shutdown called
#define SC_STREAM_F_IN_EOF 0x20u      // TLS: the socket reported EOF/error (in_err)
#define SC_STREAM_F_EOF_SENT 0x40u    // a negative nread was delivered
#define SC_STREAM_F_DEFER 0x80u       // the defer timer is armed
#define SC_STREAM_F_GOT_BYTES 0x100u  // TLS: first byte from the peer seen
#define SC_STREAM_F_TLS_KICK 0x200u   // TLS: run the driver on the deferred turn
#define SC_STREAM_F_HS_STARTED 0x400u // TLS: the first SSL_do_handshake ran
#define SC_STREAM_F_BULK 0x800u       // the last read filled its buffer: read into large ones
#define SC_STREAM_F_BIG_WRITE 0x1000u // TLS: this write is larger than a small buffer
#define SC_STREAM_F_SMALL 0x2000u     // reads stay in small buffers (sc_stream_set_small_reads)
#define SC_STREAM_F_BULK_TAIL 0x4000u // one short read since the last full one, in bulk mode

struct sc_stream {
    uv_tcp_t tcp;     // the connection; data = this stream
    uv_timer_t timer; // connect / handshake timeout
    uv_timer_t defer; // TLS: resume processing of buffered input
    uv_connect_t connect_req;
    uv_shutdown_t shutdown_req;
    uv_loop_t *loop;
    struct sc_bufpool *pool;
    const struct sc_stream_ops *ops;
    void *data;          // user pointer
    unsigned flags;      // SC_STREAM_F_*
    int pending_closes;  // handles whose close callback has not run yet
    size_t queued_bytes; // bytes in uv_write requests not completed
    void *spare_req;     // one completed write request kept for reuse
    void *done_head;     // writes completed synchronously, callbacks not yet run
    void *done_tail;
    sc_stream_read_cb read_cb;
    sc_stream_connect_cb connect_cb;
    sc_stream_handshake_cb hs_cb;
    sc_stream_close_cb close_cb;

    // TLS only.
    enum sc_stream_tls_state tls_state;
    SSL *ssl; // owns the BIO; freed in the final free
    char *in; // ciphertext read from the socket, not yet fed to SSL
    size_t in_off;
    size_t in_len;
    int in_err; // UV_EOF or error seen on the socket
    char *out;  // ciphertext produced by SSL, not yet written
    size_t out_len;
    int out_err;           // a write of ciphertext failed synchronously
    uint8_t first_byte;    // first byte the peer sent (TLS detection)
    enum sc_tls_fail fail; // handshake failure reason
    char fail_detail[160];
    uint64_t hs_start_us;
    uint64_t hs_us;
};

extern const struct sc_stream_ops sc_stream__plain_ops;
extern const struct sc_stream_ops sc_stream__tls_ops;

// sc_stream__write_raw writes bytes to the socket (plain or ciphertext) with
// an optional completion. |owned| (may be NULL) is a buffer from sc_buf_get
// released when the write completes. Returns 0 or a UV_E*; on error |owned|
// is released and |cb| does not run.
int sc_stream__write_raw(struct sc_stream *s, const uv_buf_t bufs[], unsigned nbufs, char *owned,
                         sc_stream_write_cb cb, void *arg);

// sc_stream__schedule arms the defer timer: on the next loop turn the stream
// runs the callbacks of writes that completed synchronously, then (with
// SC_STREAM_F_TLS_KICK) the TLS driver. Callbacks never run re-entrantly.
void sc_stream__schedule(struct sc_stream *s);

// sc_stream__tls_process runs the TLS driver (tls_conn.c).
void sc_stream__tls_process(struct sc_stream *s);

// sc_stream__alloc is the uv_alloc_cb of every stream (a pool buffer).
void sc_stream__alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

// sc_stream__read_skip is the start of every transport's uv_read_cb: for a
// read to ignore (nothing read, or the stream is closing) it gives |buf| back
// to the pool and returns true.
bool sc_stream__read_skip(struct sc_stream *s, ssize_t nread, const uv_buf_t *buf);

// sc_stream__uv_read sets whether uv_read_start is active on the socket.
void sc_stream__uv_read(struct sc_stream *s, bool on, uv_read_cb read_cb);

// sc_stream__now_us returns a monotonic time in microseconds.
uint64_t sc_stream__now_us(void);

// sc_stream__tls_free releases the TLS state (close path).
void sc_stream__tls_free(struct sc_stream *s);

// sc_stream__tls_close_notify sends close_notify with uv_try_write if the
// socket has nothing queued (no waiting).
void sc_stream__tls_close_notify(struct sc_stream *s);

#endif
