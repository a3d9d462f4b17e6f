// cc/grpc_client.h — a gRPC client over HTTP/2 + TLS on a libuv loop.
//
// A channel is one logical connection to one server ("host:port"): TLS with
// ALPN h2 and SNI, the server verified against a configured root file
// including the host name / IP SAN, then nghttp2 driven through
// mem_send/mem_recv over the core TLS stream (sc/stream.h). The connection is
// made lazily by the first call and re-made by the next call after it broke
// (calls in flight then fail with UNAVAILABLE; retry policy belongs to the
// caller, see cc/backoff.h).
//
// Threading: a channel and its calls belong to one loop thread.
// Callbacks: every call gets exactly one on_close, always from the loop (never
// from inside cc_call_start), after which the call pointer is invalid.
#ifndef CC_GRPC_CLIENT_H
#define CC_GRPC_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>
#include <uv.h>

#include "cc/grpc.h"

struct cc_channel;
struct cc_call;

struct cc_channel_config {
    const char *target;            // "host:port", "[v6]:port"; required
    const char *authority;         // :authority, SNI and verified name; NULL = host of target
    const char *trust_file;        // PEM root(s) the server chain must lead to; required
    const char *token_file;        // bearer token file re-read on every call; NULL = none
    uint64_t connect_timeout_ms;   // TCP connect + TLS handshake bound; 0 = 10 s
    uint64_t keepalive_ms;         // PING after this much read silence with calls open; 0 = off
    uint64_t keepalive_timeout_ms; // PING ACK wait; 0 = 20 s
    size_t max_recv_msg;           // receive cap per message; 0 = 4 MiB
};

// cc_call_msg_cb receives one response message (|msg| valid during the call).
// Returning non-zero cancels the call with INTERNAL (e.g. it does not parse).
typedef int (*cc_call_msg_cb)(struct cc_call *call, const uint8_t *msg, size_t len, void *arg);

// cc_call_close_cb reports the final status of a call and its decoded
// grpc-message (or a locally built description; never NULL, may be ""). The
// call is freed right after it returns.
typedef void (*cc_call_close_cb)(struct cc_call *call, int status, const char *message, void *arg);

// cc_channel_new creates a channel on |loop| (the strings of |cfg| are
// copied; the trust file is read now). On failure it returns NULL and writes
// a one-line reason into |err| (|err_len| bytes).
struct cc_channel *cc_channel_new(uv_loop_t *loop, const struct cc_channel_config *cfg, char *err,
                                  size_t err_len);

// cc_channel_free cancels every open call (each gets on_close with CANCELLED
// before this returns), closes the connection and frees the channel once its
// libuv handles have closed. NULL is ignored.
void cc_channel_free(struct cc_channel *ch);

// cc_channel_set_debug_name sets a label used in log lines ("ca", "config").
void cc_channel_set_debug_name(struct cc_channel *ch, const char *name);

// cc_call_start starts a call to |path| ("/pkg.Service/Method") with a
// deadline of |timeout_ms| from now (0 = none). Messages arrive at |on_msg|,
// the end at |on_close|. The bearer token (if configured) is read now; a
// missing or empty token file fails the call with UNAUTHENTICATED through
// on_close. Returns the call, which stays valid until on_close returns.
struct cc_call *cc_call_start(struct cc_channel *ch, const char *path, uint64_t timeout_ms,
                              cc_call_msg_cb on_msg, cc_call_close_cb on_close, void *arg);

// cc_call_send queues |msg| (serialized with a 5-byte prefix) for sending.
// Returns 0, or a negative code if the sending side is already closed or the
// call has ended.
int cc_call_send(struct cc_call *call, const ProtobufCMessage *msg);

// cc_call_send_raw queues already-serialized bytes as one message.
int cc_call_send_raw(struct cc_call *call, const uint8_t *msg, size_t len);

// cc_call_close_send half-closes the request stream (END_STREAM after the
// queued messages). Idempotent.
void cc_call_close_send(struct cc_call *call);

// cc_call_cancel cancels the call (RST_STREAM CANCEL); on_close then runs
// with CANCELLED and |message| from the loop. Idempotent.
void cc_call_cancel(struct cc_call *call, const char *message);

// cc_call_abandon cancels the call like cc_call_cancel but no callback of it
// runs any more (used when the owner of |arg| goes away). Idempotent.
void cc_call_abandon(struct cc_call *call);

// cc_channel_get0_loop returns the channel's loop.
uv_loop_t *cc_channel_get0_loop(const struct cc_channel *ch);

// cc_unary_cb reports the end of a unary call: |status| and |message| as in
// cc_call_close_cb, and on OK the single response message (|resp|, |len|,
// valid during the callback only).
typedef void (*cc_unary_cb)(int status, const char *message, const uint8_t *resp, size_t len,
                            void *arg);

// cc_unary starts a unary call: sends |req|, half-closes, and expects exactly
// one response message (none or more than one is INTERNAL). Returns 0, or a
// negative code if |req| could not be serialized (then |cb| never runs).
int cc_unary(struct cc_channel *ch, const char *path, const ProtobufCMessage *req,
             uint64_t timeout_ms, cc_unary_cb cb, void *arg);

#endif
