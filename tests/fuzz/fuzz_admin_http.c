// fuzz_admin_http.c — the admin server's HTTP/1.1 request-head parser
// (sidecar/src/admin/http_parse.c) and the JSON string escaper.
//
// Invariants checked beyond "no crash / no sanitizer report":
//  - the result is 0, SC_HTTP_INCOMPLETE or one of the SC_HTTP_E_* codes;
//  - a complete head lies inside the input and within the limits, and its
//    target is origin-form and inside the buffer;
//  - parsing is deterministic, and every strict prefix of a valid head is
//    reported as incomplete (no early error on data that turns out valid);
//  - escaped JSON contains no raw control characters and is quoted.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "admin/http_parse.h"
#include "sc/admin.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    struct sc_http_request req;
    int rc = sc_http_parse_request(&req, buf, size);
    switch (rc) {
    case 0:
    case SC_HTTP_INCOMPLETE:
    case SC_HTTP_E_BAD_REQUEST:
    case SC_HTTP_E_TOO_LARGE:
    case SC_HTTP_E_HEADERS_TOO_LARGE:
    case SC_HTTP_E_NOT_IMPLEMENTED:
    case SC_HTTP_E_VERSION:
        break;
    default:
        abort();
    }
    if (rc == 0) {
        if (req.head_len == 0 || req.head_len > size || req.head_len > SC_HTTP_MAX_HEAD) {
            abort();
        }
        if (req.target < buf || req.target + req.target_len > buf + req.head_len ||
            req.target_len == 0 || req.target[0] != '/' || req.path_len > req.target_len) {
            abort();
        }
        if (req.content_length > SC_HTTP_MAX_BODY || req.num_headers > SC_HTTP_MAX_HEADERS ||
            (req.minor_version != 0 && req.minor_version != 1)) {
            abort();
        }
        struct sc_http_request again;
        if (sc_http_parse_request(&again, buf, req.head_len) != 0 ||
            again.head_len != req.head_len || again.content_length != req.content_length) {
            abort();
        }
        size_t cuts[3] = {req.head_len - 1, req.head_len / 2, req.head_len / 3};
        for (int i = 0; i < 3; i++) {
            if (sc_http_parse_request(&again, buf, cuts[i]) != SC_HTTP_INCOMPLETE) {
                abort();
            }
        }
    }

    // JSON escaping of arbitrary bytes (up to the first NUL).
    char *s = malloc(size + 1);
    if (s == NULL) {
        return 0;
    }
    memcpy(s, data, size);
    s[size] = '\0';
    struct sc_admin_buf out;
    sc_admin_buf_init(&out);
    sc_admin_buf_json_string(&out, s);
    if (out.len < 2 || out.data[0] != '"' || out.data[out.len - 1] != '"') {
        abort();
    }
    for (size_t i = 0; i < out.len; i++) {
        unsigned char c = (unsigned char)out.data[i];
        if (c < 0x20 || c == 0x7f) {
            abort();
        }
    }
    sc_admin_buf_cleanup(&out);
    free(s);
    return 0;
}
