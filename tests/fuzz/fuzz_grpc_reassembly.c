// Fuzz target for the gRPC message reassembler (control-client/src/grpc_frame.c).
// Input layout: byte 0 picks the receive cap (0 -> 64 B .. 255 -> 16 KiB), then
// the rest is cut into DATA chunks whose sizes come from the data itself, so
// messages land split across and packed within chunks. Checks: every
// delivered message respects the cap, a reassembler that failed stays failed,
// and the grpc-message / grpc-timeout / grpc-status decoders never crash.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cc/grpc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct ctx {
    size_t cap;
    size_t total;
};

static int on_msg(void *arg, const uint8_t *msg, size_t len, bool compressed)
{
    struct ctx *c = arg;
    if (len > c->cap || msg == NULL) {
        abort();
    }
    // Touch every byte so ASan sees reads past a short buffer.
    for (size_t i = 0; i < len; i++) {
        c->total += msg[i];
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    struct ctx c = {.cap = 64 + (size_t)data[0] * 64};
    struct cc_grpc_reasm r;
    cc_grpc_reasm_init(&r, c.cap);
    size_t off = 1;
    bool failed = false;
    while (off < size) {
        size_t chunk = 1 + data[off] % 37;
        if (chunk > size - off) {
            chunk = size - off;
        }
        int rc = cc_grpc_reasm_feed(&r, data + off, chunk, on_msg, &c);
        if (failed && rc == 0) {
            abort(); // failure must be sticky
        }
        if (rc != 0) {
            failed = true;
            if (r.status == CC_GRPC_OK || r.error == NULL) {
                abort();
            }
        }
        off += chunk;
    }
    cc_grpc_reasm_cleanup(&r);

    // The header decoders take the raw input as a header value.
    char *dec = cc_grpc_message_decode((const char *)data, size);
    if (dec != NULL) {
        char *enc = cc_grpc_message_encode(dec, strlen(dec));
        free(enc);
        free(dec);
    }
    uint64_t ms;
    int code;
    (void)cc_grpc_timeout_parse(&ms, (const char *)data, size);
    (void)cc_grpc_status_parse(&code, (const char *)data, size);
    (void)cc_grpc_content_type_ok((const char *)data, size);
    return 0;
}
