// cc/grpc.h — gRPC-over-HTTP/2 framing and status helpers (PROTOCOLS.md §1).
//
// Pure functions with no I/O, shared by the control-client (seam_cc) and the
// control plane (seam_cp): one copy of the framing code. Fuzzed by
// tests/fuzz/fuzz_grpc_reassembly.c.
#ifndef CC_GRPC_H
#define CC_GRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

// gRPC status codes (grpc/grpc doc/statuscodes.md).
enum cc_grpc_status {
    CC_GRPC_OK = 0,
    CC_GRPC_CANCELLED = 1,
    CC_GRPC_UNKNOWN = 2,
    CC_GRPC_INVALID_ARGUMENT = 3,
    CC_GRPC_DEADLINE_EXCEEDED = 4,
    CC_GRPC_NOT_FOUND = 5,
    CC_GRPC_ALREADY_EXISTS = 6,
    CC_GRPC_PERMISSION_DENIED = 7,
    CC_GRPC_RESOURCE_EXHAUSTED = 8,
    CC_GRPC_FAILED_PRECONDITION = 9,
    CC_GRPC_ABORTED = 10,
    CC_GRPC_OUT_OF_RANGE = 11,
    CC_GRPC_UNIMPLEMENTED = 12,
    CC_GRPC_INTERNAL = 13,
    CC_GRPC_UNAVAILABLE = 14,
    CC_GRPC_DATA_LOSS = 15,
    CC_GRPC_UNAUTHENTICATED = 16,
};

// CC_GRPC_PREFIX_LEN is the size of the length prefix of every gRPC message:
// 1 byte compressed flag + 4 bytes big-endian length.
#define CC_GRPC_PREFIX_LEN 5

// CC_GRPC_DEFAULT_MAX_MSG is the default receive cap (4 MiB, as in grpc core).
#define CC_GRPC_DEFAULT_MAX_MSG (4u * 1024 * 1024)

// cc_grpc_status_name returns the canonical upper-case name of |code|
// ("OK", "UNAUTHENTICATED", ...) or "UNKNOWN" for codes outside 0..16. The
// string is static.
const char *cc_grpc_status_name(int code);

// cc_grpc_status_from_name parses a canonical name (case-sensitive) and returns
// the code, or -1 if |name| is not a status name.
int cc_grpc_status_from_name(const char *name);

// cc_grpc_status_parse parses a `grpc-status` header value of |len| bytes:
// decimal digits, no sign, no leading zeros (except "0"). It stores the value
// in |*out_code| and returns 0, or returns -1 for a malformed value. Values
// above 16 are accepted (a client treats them as UNKNOWN via
// cc_grpc_status_name); values above 2^31-1 are malformed.
int cc_grpc_status_parse(int *out_code, const char *value, size_t len);

// cc_grpc_status_from_http returns the gRPC status a client synthesizes when a
// response carries HTTP status |http_status| and no `grpc-status`
// (doc/http-grpc-status-mapping.md): 400 INTERNAL, 401 UNAUTHENTICATED, 403
// PERMISSION_DENIED, 404 UNIMPLEMENTED, 429/502/503/504 UNAVAILABLE, 431
// INTERNAL, anything else (200 included) UNKNOWN.
int cc_grpc_status_from_http(int http_status);

// cc_grpc_status_from_h2_error maps the error code of a received RST_STREAM
// (or a stream closed with |h2_error|) to a gRPC status (PROTOCOLS.md §1.5).
// If |deadline_expired| is true, a CANCEL maps to DEADLINE_EXCEEDED (the
// client's own deadline), otherwise CANCEL maps to CANCELLED. Returns -1 for
// STREAM_CLOSED (no mapping; the caller logs it and uses INTERNAL) and for
// unknown codes it returns INTERNAL.
int cc_grpc_status_from_h2_error(uint32_t h2_error, bool deadline_expired);

// cc_grpc_prefix_encode writes the 5-byte message prefix for a message of
// |msg_len| bytes into |out|.
void cc_grpc_prefix_encode(uint8_t out[CC_GRPC_PREFIX_LEN], uint32_t msg_len, bool compressed);

// cc_grpc_pack serializes |msg| behind a 5-byte prefix (flag 0) into a newly
// allocated buffer and stores its total length in |*out_len|. It returns the
// buffer (released with free()) or NULL if the message is larger than 4 GiB or
// on allocation failure.
uint8_t *cc_grpc_pack(size_t *out_len, const ProtobufCMessage *msg);

// cc_grpc_msg_cb receives one complete message of |len| bytes. |msg| is only
// valid during the call (it may point into the fed chunk). |compressed| is the
// prefix flag. A non-zero return stops the reassembler: cc_grpc_reasm_feed
// returns -1 with status CANCELLED unless the callback already set one with
// cc_grpc_reasm_fail.
typedef int (*cc_grpc_msg_cb)(void *arg, const uint8_t *msg, size_t len, bool compressed);

// cc_grpc_reasm reassembles gRPC messages from arbitrary DATA chunks: messages
// may be split over and packed within chunks. Embed it and use
// cc_grpc_reasm_init / cc_grpc_reasm_cleanup.
struct cc_grpc_reasm {
    // Public, read after a failure.
    int status;        // gRPC status of the failure, CC_GRPC_OK while healthy.
    const char *error; // static description of the failure, or NULL.
    // Private.
    size_t max_len; // receive cap in bytes.
    uint8_t hdr[CC_GRPC_PREFIX_LEN];
    size_t hdr_have;   // prefix bytes collected so far.
    uint8_t *buf;      // body being collected (NULL when none).
    size_t msg_len;    // announced body length of the current message.
    size_t msg_have;   // body bytes collected so far.
    uint64_t num_msgs; // messages delivered so far.
};

// cc_grpc_reasm_init prepares |r| with a receive cap of |max_len| bytes per
// message (0 means CC_GRPC_DEFAULT_MAX_MSG).
void cc_grpc_reasm_init(struct cc_grpc_reasm *r, size_t max_len);

// cc_grpc_reasm_cleanup frees any partial message held by |r|.
void cc_grpc_reasm_cleanup(struct cc_grpc_reasm *r);

// cc_grpc_reasm_feed consumes |len| bytes of DATA and calls |cb| for each
// complete message, in order. The announced length is checked against the cap
// before anything is allocated. It returns 0, or -1 after a failure with
// |r->status| set: RESOURCE_EXHAUSTED (message over the cap), INTERNAL
// (compressed flag other than 0/1), or the callback's stop. Once failed, every
// later feed returns -1 without calling |cb|.
int cc_grpc_reasm_feed(struct cc_grpc_reasm *r, const uint8_t *data, size_t len, cc_grpc_msg_cb cb,
                       void *arg);

// cc_grpc_reasm_fail marks |r| as failed with |status| and the static string
// |error|; used from inside a cc_grpc_msg_cb to report why it stopped.
void cc_grpc_reasm_fail(struct cc_grpc_reasm *r, int status, const char *error);

// cc_grpc_reasm_partial returns true if |r| holds part of a message; at the end
// of a stream that means the message was truncated (INTERNAL).
bool cc_grpc_reasm_partial(const struct cc_grpc_reasm *r);

// cc_grpc_message_encode percent-encodes |len| bytes of |msg| for the
// `grpc-message` header: bytes 0x20-0x24 and 0x26-0x7E as-is, everything else
// (including '%') as %XX. It returns a NUL-terminated string released with
// free(), or NULL on allocation failure.
char *cc_grpc_message_encode(const char *msg, size_t len);

// cc_grpc_message_decode percent-decodes a `grpc-message` value of |len|
// bytes. Decoding never fails: malformed escapes are passed through as they
// are. Decoded control characters (< 0x20, 0x7F) and NUL are replaced with '?'
// so the result is safe to log on one line. Returns a NUL-terminated string
// released with free(), or NULL on allocation failure.
char *cc_grpc_message_decode(const char *value, size_t len);

// CC_GRPC_TIMEOUT_MAX_LEN is the buffer size for cc_grpc_timeout_encode
// (8 digits + unit + NUL).
#define CC_GRPC_TIMEOUT_MAX_LEN 10

// cc_grpc_timeout_encode writes the `grpc-timeout` value for |timeout_ms|
// milliseconds into |out|, picking the finest unit (m, S, M, H) whose value
// fits in 8 digits and rounding up. A zero timeout is encoded as "1m" (the
// value must be positive). Returns the string length.
size_t cc_grpc_timeout_encode(char out[CC_GRPC_TIMEOUT_MAX_LEN], uint64_t timeout_ms);

// cc_grpc_timeout_parse parses a `grpc-timeout` value of |len| bytes: 1 to 8
// ASCII digits and a unit H, M, S, m, u or n. It stores the timeout in
// milliseconds (sub-millisecond values rounded up, so a positive timeout never
// becomes 0) in |*out_ms| and returns 0, or returns -1 if malformed.
int cc_grpc_timeout_parse(uint64_t *out_ms, const char *value, size_t len);

// cc_grpc_content_type_ok returns true if the `content-type` value is
// "application/grpc" optionally followed by "+<subtype>" or ";<params>".
bool cc_grpc_content_type_ok(const char *value, size_t len);

#endif
