// grpc_frame.c — gRPC message framing, reassembly, status mapping and header
// value codecs (PROTOCOLS.md §1). No I/O and no global state: shared with the
// control plane and fuzzed.
#include "cc/grpc.h"

#include <nghttp2/nghttp2.h>
#include <stdlib.h>
#include <string.h>

static const char *const status_names[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

#define NUM_STATUS (sizeof(status_names) / sizeof(status_names[0]))

const char *cc_grpc_status_name(int code)
{
    if (code < 0 || (size_t)code >= NUM_STATUS) {
        return "UNKNOWN";
    }
    return status_names[code];
}

int cc_grpc_status_from_name(const char *name)
{
    if (name == NULL) {
        return -1;
    }
    for (size_t i = 0; i < NUM_STATUS; i++) {
        if (strcmp(name, status_names[i]) == 0) {
            return (int)i;
        }
    }
    return -1;
}

int cc_grpc_status_parse(int *out_code, const char *value, size_t len)
{
    // "The status is a decimal number without leading zeros" (PROTOCOL-HTTP2).
    if (len == 0 || len > 10 || (len > 1 && value[0] == '0')) {
        return -1;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (value[i] < '0' || value[i] > '9') {
            return -1;
        }
        v = v * 10 + (uint64_t)(value[i] - '0');
    }
    if (v > INT32_MAX) {
        return -1;
    }
    *out_code = (int)v;
    return 0;
}

int cc_grpc_status_from_http(int http_status)
{
    switch (http_status) {
    case 400:
    case 431:
        return CC_GRPC_INTERNAL;
    case 401:
        return CC_GRPC_UNAUTHENTICATED;
    case 403:
        return CC_GRPC_PERMISSION_DENIED;
    case 404:
        return CC_GRPC_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
        return CC_GRPC_UNAVAILABLE;
    default:
        return CC_GRPC_UNKNOWN;
    }
}

int cc_grpc_status_from_h2_error(uint32_t h2_error, bool deadline_expired)
{
    switch (h2_error) {
    case NGHTTP2_REFUSED_STREAM:
        // The server did not process the stream: retrying is safe.
        return CC_GRPC_UNAVAILABLE;
    case NGHTTP2_CANCEL:
        // After our own deadline every cancellation is DEADLINE_EXCEEDED (§1.5).
        return deadline_expired ? CC_GRPC_DEADLINE_EXCEEDED : CC_GRPC_CANCELLED;
    case NGHTTP2_ENHANCE_YOUR_CALM:
        return CC_GRPC_RESOURCE_EXHAUSTED;
    case NGHTTP2_INADEQUATE_SECURITY:
        return CC_GRPC_PERMISSION_DENIED;
    case NGHTTP2_STREAM_CLOSED:
        return -1;
    case NGHTTP2_NO_ERROR:
    case NGHTTP2_PROTOCOL_ERROR:
    case NGHTTP2_INTERNAL_ERROR:
    case NGHTTP2_FLOW_CONTROL_ERROR:
    case NGHTTP2_SETTINGS_TIMEOUT:
    case NGHTTP2_FRAME_SIZE_ERROR:
    case NGHTTP2_COMPRESSION_ERROR:
    case NGHTTP2_CONNECT_ERROR:
    default:
        return CC_GRPC_INTERNAL;
    }
}

void cc_grpc_prefix_encode(uint8_t out[CC_GRPC_PREFIX_LEN], uint32_t msg_len, bool compressed)
{
    out[0] = compressed ? 1 : 0;
    out[1] = (uint8_t)(msg_len >> 24);
    out[2] = (uint8_t)(msg_len >> 16);
    out[3] = (uint8_t)(msg_len >> 8);
    out[4] = (uint8_t)msg_len;
}

uint8_t *cc_grpc_pack(size_t *out_len, const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    if (n > UINT32_MAX) {
        return NULL;
    }
    uint8_t *buf = malloc(CC_GRPC_PREFIX_LEN + n);
    if (buf == NULL) {
        return NULL;
    }
    cc_grpc_prefix_encode(buf, (uint32_t)n, false);
    if (protobuf_c_message_pack(msg, buf + CC_GRPC_PREFIX_LEN) != n) {
        free(buf);
        return NULL;
    }
    *out_len = CC_GRPC_PREFIX_LEN + n;
    return buf;
}

void cc_grpc_reasm_init(struct cc_grpc_reasm *r, size_t max_len)
{
    memset(r, 0, sizeof(*r));
    r->max_len = max_len ? max_len : CC_GRPC_DEFAULT_MAX_MSG;
    r->status = CC_GRPC_OK;
}

void cc_grpc_reasm_cleanup(struct cc_grpc_reasm *r)
{
    free(r->buf);
    r->buf = NULL;
    r->hdr_have = 0;
    r->msg_have = 0;
    r->msg_len = 0;
}

void cc_grpc_reasm_fail(struct cc_grpc_reasm *r, int status, const char *error)
{
    if (r->status == CC_GRPC_OK) {
        r->status = status;
        r->error = error;
    }
}

bool cc_grpc_reasm_partial(const struct cc_grpc_reasm *r)
{
    return r->hdr_have > 0;
}

// deliver hands one message to the callback and resets the per-message state.
static int deliver(struct cc_grpc_reasm *r, const uint8_t *msg, size_t len, cc_grpc_msg_cb cb,
                   void *arg)
{
    static const uint8_t empty[1];
    bool compressed = r->hdr[0] == 1;
    r->hdr_have = 0;
    r->msg_have = 0;
    r->msg_len = 0;
    r->num_msgs++;
    int rc = cb(arg, msg != NULL ? msg : empty, len, compressed);
    if (rc != 0) {
        cc_grpc_reasm_fail(r, CC_GRPC_CANCELLED, "message callback stopped the stream");
        return -1;
    }
    return 0;
}

int cc_grpc_reasm_feed(struct cc_grpc_reasm *r, const uint8_t *data, size_t len, cc_grpc_msg_cb cb,
                       void *arg)
{
    if (r->status != CC_GRPC_OK) {
        return -1;
    }
    while (len > 0) {
        if (r->hdr_have < CC_GRPC_PREFIX_LEN) {
            size_t take = CC_GRPC_PREFIX_LEN - r->hdr_have;
            if (take > len) {
                take = len;
            }
            memcpy(r->hdr + r->hdr_have, data, take);
            r->hdr_have += take;
            data += take;
            len -= take;
            if (r->hdr_have < CC_GRPC_PREFIX_LEN) {
                break;
            }
            if (r->hdr[0] > 1) {
                cc_grpc_reasm_fail(r, CC_GRPC_INTERNAL,
                                   "invalid compressed flag in message prefix");
                return -1;
            }
            uint32_t n = (uint32_t)r->hdr[1] << 24 | (uint32_t)r->hdr[2] << 16 |
                         (uint32_t)r->hdr[3] << 8 | (uint32_t)r->hdr[4];
            // The cap is checked on the announced length, before any allocation.
            if (n > r->max_len) {
                cc_grpc_reasm_fail(r, CC_GRPC_RESOURCE_EXHAUSTED,
                                   "received message larger than the limit");
                return -1;
            }
            r->msg_len = n;
            r->msg_have = 0;
            if (n == 0) {
                if (deliver(r, NULL, 0, cb, arg) != 0) {
                    return -1;
                }
                continue;
            }
        }
        if (len == 0) {
            break; // allocate only once body bytes arrive
        }
        // Fast path: the whole body is inside this chunk and nothing is buffered.
        if (r->buf == NULL && len >= r->msg_len) {
            size_t n = r->msg_len;
            if (deliver(r, data, n, cb, arg) != 0) {
                return -1;
            }
            data += n;
            len -= n;
            continue;
        }
        if (r->buf == NULL) {
            r->buf = malloc(r->msg_len);
            if (r->buf == NULL) {
                cc_grpc_reasm_fail(r, CC_GRPC_RESOURCE_EXHAUSTED, "out of memory for message");
                return -1;
            }
        }
        size_t take = r->msg_len - r->msg_have;
        if (take > len) {
            take = len;
        }
        memcpy(r->buf + r->msg_have, data, take);
        r->msg_have += take;
        data += take;
        len -= take;
        if (r->msg_have == r->msg_len) {
            uint8_t *buf = r->buf;
            r->buf = NULL;
            int rc = deliver(r, buf, r->msg_len, cb, arg);
            free(buf);
            if (rc != 0) {
                return -1;
            }
        }
    }
    return 0;
}

// Bytes 0x20-0x24 and 0x26-0x7E are sent as-is; everything else is %XX.
static bool msg_plain(uint8_t c)
{
    return c >= 0x20 && c <= 0x7e && c != '%';
}

char *cc_grpc_message_encode(const char *msg, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t out_len = 0;
    for (size_t i = 0; i < len; i++) {
        out_len += msg_plain((uint8_t)msg[i]) ? 1 : 3;
    }
    char *out = malloc(out_len + 1);
    if (out == NULL) {
        return NULL;
    }
    char *p = out;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)msg[i];
        if (msg_plain(c)) {
            *p++ = (char)c;
        } else {
            *p++ = '%';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];
        }
    }
    *p = '\0';
    return out;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

char *cc_grpc_message_decode(const char *value, size_t len)
{
    char *out = malloc(len + 1);
    if (out == NULL) {
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)value[i];
        if (c == '%' && i + 2 < len && hexval(value[i + 1]) >= 0 && hexval(value[i + 2]) >= 0) {
            c = (uint8_t)(hexval(value[i + 1]) << 4 | hexval(value[i + 2]));
            i += 2;
        }
        // Keep the text on one log line: no control characters, no NUL.
        if (c < 0x20 || c == 0x7f) {
            c = '?';
        }
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return out;
}

size_t cc_grpc_timeout_encode(char out[CC_GRPC_TIMEOUT_MAX_LEN], uint64_t timeout_ms)
{
    static const struct {
        uint64_t ms;
        char unit;
    } units[] = {{1, 'm'}, {1000, 'S'}, {60000, 'M'}, {3600000, 'H'}};
    const uint64_t max = 99999999;
    if (timeout_ms == 0) {
        timeout_ms = 1;
    }
    uint64_t v = max;
    char unit = 'H';
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        uint64_t q = timeout_ms / units[i].ms + (timeout_ms % units[i].ms != 0);
        if (q <= max) {
            v = q;
            unit = units[i].unit;
            break;
        }
    }
    // Render digits by hand: exact and independent of the locale.
    char digits[9];
    size_t n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0 && n < 8);
    size_t o = 0;
    while (n > 0) {
        out[o++] = digits[--n];
    }
    out[o++] = unit;
    out[o] = '\0';
    return o;
}

int cc_grpc_timeout_parse(uint64_t *out_ms, const char *value, size_t len)
{
    if (len < 2 || len > 9) {
        return -1;
    }
    uint64_t v = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (value[i] < '0' || value[i] > '9') {
            return -1;
        }
        v = v * 10 + (uint64_t)(value[i] - '0');
    }
    uint64_t ms;
    switch (value[len - 1]) {
    case 'H':
        ms = v * 3600000;
        break;
    case 'M':
        ms = v * 60000;
        break;
    case 'S':
        ms = v * 1000;
        break;
    case 'm':
        ms = v;
        break;
    case 'u':
        ms = v / 1000 + (v % 1000 != 0);
        break;
    case 'n':
        ms = v / 1000000 + (v % 1000000 != 0);
        break;
    default:
        return -1;
    }
    *out_ms = ms;
    return 0;
}

bool cc_grpc_content_type_ok(const char *value, size_t len)
{
    static const char base[] = "application/grpc";
    const size_t n = sizeof(base) - 1;
    if (len < n || strncmp(value, base, n) != 0) {
        return false;
    }
    return len == n || value[n] == '+' || value[n] == ';';
}
