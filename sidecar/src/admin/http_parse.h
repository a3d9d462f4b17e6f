// http_parse.h — a small, strict HTTP/1.1 request-head parser for the admin
// server (RFC 9112). Pure and allocation-free: it only points into the
// caller's buffer, so it is easy to fuzz (tests/fuzz/fuzz_admin_http.c).
#ifndef SC_ADMIN_HTTP_PARSE_H
#define SC_ADMIN_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SC_HTTP_MAX_HEAD 8192  // request line + headers + blank line
#define SC_HTTP_MAX_HEADERS 64 // header fields
#define SC_HTTP_MAX_BODY 4096  // Content-Length accepted (and discarded)
#define SC_HTTP_MAX_METHOD 16

// Return values of sc_http_parse_request besides 0. Errors are the negated
// HTTP status code the server should answer with.
#define SC_HTTP_INCOMPLETE (-1)
#define SC_HTTP_E_BAD_REQUEST (-400)
#define SC_HTTP_E_TOO_LARGE (-413)
#define SC_HTTP_E_HEADERS_TOO_LARGE (-431)
#define SC_HTTP_E_NOT_IMPLEMENTED (-501)
#define SC_HTTP_E_VERSION (-505)

enum sc_http_method { SC_HTTP_GET = 0, SC_HTTP_HEAD, SC_HTTP_POST, SC_HTTP_OTHER };

struct sc_http_request {
    enum sc_http_method method;
    const char *target; // request-target as sent (origin-form, starts with '/')
    size_t target_len;
    size_t path_len;         // target_len up to (excluding) the first '?'
    int minor_version;       // HTTP/1.<minor>: 0 or 1
    size_t head_len;         // bytes of the head, including the final blank line
    uint64_t content_length; // 0 when absent
    bool has_content_length;
    bool has_host;
    bool connection_close; // "Connection: close" (or HTTP/1.0 without keep-alive)
    size_t num_headers;
};

// sc_http_parse_request parses the request head at the start of |buf|
// (|len| bytes, need not be NUL-terminated) into |*req|. Returns 0 when the
// head is complete and valid (the body, req->content_length bytes, follows at
// buf + req->head_len), SC_HTTP_INCOMPLETE when more bytes are needed, or a
// negative SC_HTTP_E_* code: malformed → 400, head above SC_HTTP_MAX_HEAD or
// more than SC_HTTP_MAX_HEADERS fields → 431, Content-Length above
// SC_HTTP_MAX_BODY → 413, Transfer-Encoding → 501, HTTP/x.y other than 1.0 /
// 1.1 → 505. Errors in complete lines are reported as soon as they arrive.
int sc_http_parse_request(struct sc_http_request *req, const char *buf, size_t len);

// sc_http_status_text returns the reason phrase for |status| ("OK", ...).
const char *sc_http_status_text(int status);

#endif
