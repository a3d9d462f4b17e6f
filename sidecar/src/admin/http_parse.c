// http_parse.c — strict HTTP/1.1 request-head parser (see http_parse.h).
//
// Re-parses from the start on every call: the head is bounded by
// SC_HTTP_MAX_HEAD (8 KiB), so the quadratic worst case is small, and the
// parser keeps no state between calls, which keeps it simple to fuzz.
#include <string.h>

#include "admin/http_parse.h"

// is_tchar reports whether |c| may appear in a token (RFC 9110 §5.6.2).
static bool is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
        return true;
    }
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

// is_field_vchar reports whether |c| may appear in a field value (RFC 9110
// §5.5: VCHAR, obs-text, SP and HTAB). CR, LF, NUL and other controls may not.
static bool is_field_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static bool name_is(const char *name, size_t len, const char *want)
{
    size_t wl = strlen(want);
    if (len != wl) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char a = name[i];
        if (a >= 'A' && a <= 'Z') {
            a = (char)(a - 'A' + 'a');
        }
        if (a != want[i]) {
            return false;
        }
    }
    return true;
}

// has_token reports whether the comma-separated list |v| contains |tok|
// (case-insensitive), e.g. "keep-alive, close" has "close".
static bool has_token(const char *v, size_t len, const char *tok)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) {
            i++;
        }
        size_t s = i;
        while (i < len && v[i] != ',') {
            i++;
        }
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t')) {
            e--;
        }
        if (e > s && name_is(v + s, e - s, tok)) {
            return true;
        }
    }
    return false;
}

// next_line finds the line starting at |*pos|. Lines end in LF, optionally
// preceded by CR (RFC 9112 §2.2 lets a recipient accept a bare LF). Sets
// |*line_len| (without the terminator) and advances |*pos| past it. Returns
// false if no complete line is available yet.
static bool next_line(const char *buf, size_t len, size_t *pos, size_t *line_len)
{
    const char *lf = memchr(buf + *pos, '\n', len - *pos);
    if (lf == NULL) {
        return false;
    }
    size_t end = (size_t)(lf - buf);
    size_t l = end - *pos;
    if (l > 0 && buf[end - 1] == '\r') {
        l--;
    }
    *line_len = l;
    *pos = end + 1;
    return true;
}

static int parse_request_line(struct sc_http_request *req, const char *s, size_t len)
{
    size_t i = 0;
    while (i < len && is_tchar((unsigned char)s[i])) {
        i++;
    }
    if (i == 0 || i >= len || s[i] != ' ') {
        return SC_HTTP_E_BAD_REQUEST;
    }
    if (i > SC_HTTP_MAX_METHOD) {
        return SC_HTTP_E_NOT_IMPLEMENTED;
    }
    if (i == 3 && memcmp(s, "GET", 3) == 0) {
        req->method = SC_HTTP_GET;
    } else if (i == 4 && memcmp(s, "HEAD", 4) == 0) {
        req->method = SC_HTTP_HEAD;
    } else if (i == 4 && memcmp(s, "POST", 4) == 0) {
        req->method = SC_HTTP_POST;
    } else {
        req->method = SC_HTTP_OTHER;
    }
    i++;

    // request-target: origin-form only ("/path?query"), visible ASCII.
    size_t t = i;
    while (i < len && s[i] != ' ') {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f) {
            return SC_HTTP_E_BAD_REQUEST;
        }
        i++;
    }
    if (i == t || i >= len || s[t] != '/') {
        return SC_HTTP_E_BAD_REQUEST;
    }
    req->target = s + t;
    req->target_len = i - t;
    const char *q = memchr(req->target, '?', req->target_len);
    req->path_len = q ? (size_t)(q - req->target) : req->target_len;
    i++;

    // HTTP-version = "HTTP/" DIGIT "." DIGIT, and nothing after it.
    if (len - i != 8 || memcmp(s + i, "HTTP/", 5) != 0 || s[i + 5] < '0' || s[i + 5] > '9' ||
        s[i + 6] != '.' || s[i + 7] < '0' || s[i + 7] > '9') {
        return SC_HTTP_E_BAD_REQUEST;
    }
    if (s[i + 5] != '1' || (s[i + 7] != '0' && s[i + 7] != '1')) {
        return SC_HTTP_E_VERSION;
    }
    req->minor_version = s[i + 7] - '0';
    return 0;
}

// parse_content_length parses 1*DIGIT into |*out|, rejecting anything else
// (signs, spaces inside, lists) and values that do not fit.
static int parse_content_length(const char *v, size_t len, uint64_t *out)
{
    if (len == 0) {
        return SC_HTTP_E_BAD_REQUEST;
    }
    uint64_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9') {
            return SC_HTTP_E_BAD_REQUEST;
        }
        if (n > (UINT64_MAX - 9) / 10) {
            return SC_HTTP_E_TOO_LARGE; // syntactically fine, just huge
        }
        n = n * 10 + (uint64_t)(v[i] - '0');
    }
    *out = n;
    return 0;
}

static int parse_header(struct sc_http_request *req, const char *s, size_t len, bool *te)
{
    // obs-fold (a line starting with whitespace) is rejected (RFC 9112 §5.2).
    size_t i = 0;
    while (i < len && is_tchar((unsigned char)s[i])) {
        i++;
    }
    // No whitespace between name and colon (RFC 9112 §5.1): 400.
    if (i == 0 || i >= len || s[i] != ':') {
        return SC_HTTP_E_BAD_REQUEST;
    }
    size_t name_len = i;
    i++;
    while (i < len && (s[i] == ' ' || s[i] == '\t')) {
        i++;
    }
    size_t vs = i;
    for (; i < len; i++) {
        if (!is_field_char((unsigned char)s[i])) {
            return SC_HTTP_E_BAD_REQUEST;
        }
    }
    size_t ve = len;
    while (ve > vs && (s[ve - 1] == ' ' || s[ve - 1] == '\t')) {
        ve--;
    }
    const char *v = s + vs;
    size_t vlen = ve - vs;

    if (name_is(s, name_len, "content-length")) {
        uint64_t n;
        int rc = parse_content_length(v, vlen, &n);
        if (rc != 0) {
            return rc;
        }
        // Repeated Content-Length must agree (RFC 9112 §6.3 item 5).
        if (req->has_content_length && n != req->content_length) {
            return SC_HTTP_E_BAD_REQUEST;
        }
        req->has_content_length = true;
        req->content_length = n;
    } else if (name_is(s, name_len, "transfer-encoding")) {
        *te = true;
    } else if (name_is(s, name_len, "host")) {
        // Exactly one Host (RFC 9112 §3.2).
        if (req->has_host) {
            return SC_HTTP_E_BAD_REQUEST;
        }
        req->has_host = true;
    } else if (name_is(s, name_len, "connection")) {
        if (has_token(v, vlen, "close")) {
            req->connection_close = true;
        }
    }
    return 0;
}

// partial_request_line_bad reports whether the start of a request line that
// has not ended yet is already invalid (e.g. a TLS ClientHello sent to the
// admin port), so such clients get 400 at once rather than after the
// request timeout.
static bool partial_request_line_bad(const char *s, size_t len)
{
    size_t i = 0;
    if (len == 1 && s[0] == '\r') {
        return false; // start of an empty line
    }
    while (i < len && s[i] != ' ') {
        if (!is_tchar((unsigned char)s[i]) || i >= SC_HTTP_MAX_METHOD) {
            return true;
        }
        i++;
    }
    if (i == len) {
        return false;
    }
    if (i == 0) {
        return true;
    }
    for (i++; i < len && s[i] != ' '; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c >= 0x7f) {
            return true;
        }
    }
    return false;
}

int sc_http_parse_request(struct sc_http_request *req, const char *buf, size_t len)
{
    memset(req, 0, sizeof(*req));
    size_t limit = len < SC_HTTP_MAX_HEAD ? len : SC_HTTP_MAX_HEAD;
    size_t pos = 0;
    size_t line_len;
    bool te = false;

    // Ignore a few empty lines before the request line (RFC 9112 §2.2).
    int skipped = 0;
    for (;;) {
        size_t start = pos;
        if (!next_line(buf, limit, &pos, &line_len)) {
            if (partial_request_line_bad(buf + start, limit - start)) {
                return SC_HTTP_E_BAD_REQUEST;
            }
            return len >= SC_HTTP_MAX_HEAD ? SC_HTTP_E_HEADERS_TOO_LARGE : SC_HTTP_INCOMPLETE;
        }
        if (line_len > 0) {
            int rc = parse_request_line(req, buf + start, line_len);
            if (rc != 0) {
                return rc;
            }
            break;
        }
        if (++skipped > 4) {
            return SC_HTTP_E_BAD_REQUEST;
        }
    }

    for (;;) {
        size_t start = pos;
        if (!next_line(buf, limit, &pos, &line_len)) {
            return len >= SC_HTTP_MAX_HEAD ? SC_HTTP_E_HEADERS_TOO_LARGE : SC_HTTP_INCOMPLETE;
        }
        if (line_len == 0) {
            break;
        }
        if (++req->num_headers > SC_HTTP_MAX_HEADERS) {
            return SC_HTTP_E_HEADERS_TOO_LARGE;
        }
        int rc = parse_header(req, buf + start, line_len, &te);
        if (rc != 0) {
            return rc;
        }
    }
    // A bare CR anywhere in the head is malformed (RFC 9112 §2.2).
    for (size_t i = 0; i < pos; i++) {
        if (buf[i] == '\r' && (i + 1 >= pos || buf[i + 1] != '\n')) {
            return SC_HTTP_E_BAD_REQUEST;
        }
    }
    req->head_len = pos;

    if (te) {
        // Both framings at once is a smuggling vector (RFC 9112 §6.1): 400.
        // Otherwise chunked request bodies are simply not supported here.
        return req->has_content_length ? SC_HTTP_E_BAD_REQUEST : SC_HTTP_E_NOT_IMPLEMENTED;
    }
    if (req->minor_version == 1 && !req->has_host) {
        return SC_HTTP_E_BAD_REQUEST;
    }
    if (req->content_length > SC_HTTP_MAX_BODY) {
        return SC_HTTP_E_TOO_LARGE;
    }
    if (req->minor_version == 0) {
        req->connection_close = true;
    }
    return 0;
}

const char *sc_http_status_text(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}
