// admin_buf.c — the growable buffer the admin server and its hooks render into
// (see sc/admin.h), with JSON and Prometheus label escaping.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc/admin.h"

void sc_admin_buf_init(struct sc_admin_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void sc_admin_buf_cleanup(struct sc_admin_buf *b)
{
    free(b->data);
    sc_admin_buf_init(b);
}

// reserve makes room for |extra| more bytes plus a terminating NUL. Running
// out of memory while rendering a response is not recoverable in a useful
// way, so like sc_xmalloc it aborts.
static void reserve(struct sc_admin_buf *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    if (need <= b->cap) {
        return;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (p == NULL) {
        abort();
    }
    b->data = p;
    b->cap = cap;
}

void sc_admin_buf_append(struct sc_admin_buf *b, const void *s, size_t len)
{
    reserve(b, len);
    if (len > 0) {
        memcpy(b->data + b->len, s, len);
    }
    b->len += len;
    b->data[b->len] = '\0';
}

void sc_admin_buf_printf(struct sc_admin_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    if ((size_t)n < sizeof(small)) {
        sc_admin_buf_append(b, small, (size_t)n);
        return;
    }
    reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

// utf8_seq_len returns the length of the valid UTF-8 sequence at |s| (at
// most |max| bytes available), or 0 if it is not valid (overlong forms,
// surrogates and code points above U+10FFFF are rejected, RFC 3629 §4).
static size_t utf8_seq_len(const unsigned char *s, size_t max)
{
    unsigned c = s[0];
    size_t n;
    unsigned lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0) {
            lo = 0xa0;
        } else if (c == 0xed) {
            hi = 0x9f;
        }
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0) {
            lo = 0x90;
        } else if (c == 0xf4) {
            hi = 0x8f;
        }
    } else {
        return 0;
    }
    if (n > max) {
        return 0;
    }
    if (s[1] < lo || s[1] > hi) {
        return 0;
    }
    for (size_t i = 2; i < n; i++) {
        if (s[i] < 0x80 || s[i] > 0xbf) {
            return 0;
        }
    }
    return n;
}

void sc_admin_buf_json_string(struct sc_admin_buf *b, const char *s)
{
    if (s == NULL) {
        sc_admin_buf_append(b, "null", 4);
        return;
    }
    const unsigned char *p = (const unsigned char *)s;
    size_t len = strlen(s);
    sc_admin_buf_append(b, "\"", 1);
    size_t i = 0;
    while (i < len) {
        unsigned c = p[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            sc_admin_buf_append(b, esc, 2);
            i++;
        } else if (c == '\n') {
            sc_admin_buf_append(b, "\\n", 2);
            i++;
        } else if (c == '\r') {
            sc_admin_buf_append(b, "\\r", 2);
            i++;
        } else if (c == '\t') {
            sc_admin_buf_append(b, "\\t", 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            sc_admin_buf_printf(b, "\\u%04x", c);
            i++;
        } else if (c < 0x80) {
            sc_admin_buf_append(b, p + i, 1);
            i++;
        } else {
            size_t n = utf8_seq_len(p + i, len - i);
            if (n == 0) {
                sc_admin_buf_printf(b, "\\u%04x", c);
                i++;
            } else {
                sc_admin_buf_append(b, p + i, n);
                i += n;
            }
        }
    }
    sc_admin_buf_append(b, "\"", 1);
}

void sc_admin_buf_label_value(struct sc_admin_buf *b, const char *s)
{
    if (s == NULL) {
        return;
    }
    for (; *s != '\0'; s++) {
        if (*s == '\\') {
            sc_admin_buf_append(b, "\\\\", 2);
        } else if (*s == '"') {
            sc_admin_buf_append(b, "\\\"", 2);
        } else if (*s == '\n') {
            sc_admin_buf_append(b, "\\n", 2);
        } else {
            sc_admin_buf_append(b, s, 1);
        }
    }
}
