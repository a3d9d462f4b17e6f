// spiffe.c — SPIFFE ID syntax and allow-list matching (PROTOCOLS.md §3).
//
// Everything here is pure and bounded: inputs are scanned at most
// SC_SPIFFE_ID_MAX + 1 bytes, nothing is allocated, and invalid input of any
// kind (IDs and patterns alike) never matches anything.
#include "sc/spiffe.h"

#include <string.h>

#define SCHEME "spiffe://"
#define SCHEME_LEN 9
#define TD_MAX 255

static bool is_td_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

static bool is_path_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
}

static unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

static void set_err(const char **out_err, const char *msg)
{
    if (out_err != NULL) {
        *out_err = msg;
    }
}

// bounded_len returns strlen(s), or SC_SPIFFE_ID_MAX + 1 when it is longer.
static size_t bounded_len(const char *s)
{
    return strnlen(s, SC_SPIFFE_ID_MAX + 1);
}

// bad_char_err explains a character a SPIFFE ID may not hold: the URL
// features it never has by name, anything else as |otherwise|.
static const char *bad_char_err(unsigned char c, const char *otherwise)
{
    if (c == '%') {
        return "percent-encoding is not allowed";
    }
    if (c == '?' || c == '#') {
        return "query and fragment are not allowed";
    }
    return otherwise;
}

// check_scheme_td validates "spiffe://<td>" at the start of |id| and sets
// |*out_td_end| to the offset just after the trust domain.
static bool check_scheme_td(const char *id, size_t len, size_t *out_td_end, const char **out_err)
{
    if (len > SC_SPIFFE_ID_MAX) {
        set_err(out_err, "SPIFFE ID longer than 2048 bytes");
        return false;
    }
    if (len < SCHEME_LEN) {
        set_err(out_err, "SPIFFE ID must start with spiffe://");
        return false;
    }
    for (size_t i = 0; i < SCHEME_LEN; i++) {
        if (lower((unsigned char)id[i]) != (unsigned char)SCHEME[i]) {
            set_err(out_err, "SPIFFE ID must start with spiffe://");
            return false;
        }
    }
    size_t i = SCHEME_LEN;
    while (i < len && id[i] != '/') {
        unsigned char c = (unsigned char)id[i];
        if (!is_td_char(c)) {
            if (c == ':') {
                set_err(out_err, "trust domain must not contain a port");
            } else if (c == '@') {
                set_err(out_err, "trust domain must not contain userinfo");
            } else if (c >= 'A' && c <= 'Z') {
                set_err(out_err, "trust domain must be lowercase");
            } else {
                set_err(out_err,
                        bad_char_err(c, "trust domain has a character outside [a-z0-9.-_]"));
            }
            return false;
        }
        i++;
    }
    size_t td_len = i - SCHEME_LEN;
    if (td_len == 0) {
        set_err(out_err, "trust domain is empty");
        return false;
    }
    if (td_len > TD_MAX) {
        set_err(out_err, "trust domain longer than 255 bytes");
        return false;
    }
    *out_td_end = i;
    return true;
}

// check_path validates a path "/seg/seg" of |len| bytes (len > 0). When
// |allow_star_tail| is set, a final segment "*" is accepted and
// |*out_star| reports whether it was present.
static bool check_path(const char *p, size_t len, bool allow_star_tail, bool *out_star,
                       const char **out_err)
{
    if (out_star != NULL) {
        *out_star = false;
    }
    size_t i = 0;
    while (i < len) {
        // p[i] == '/' here.
        size_t start = ++i;
        while (i < len && p[i] != '/') {
            unsigned char c = (unsigned char)p[i];
            if (!is_path_char(c)) {
                if (c == '*' && allow_star_tail) {
                    if (i != start || i + 1 != len) {
                        set_err(out_err, "'*' is only allowed as the whole last segment");
                        return false;
                    }
                    *out_star = true;
                    return true;
                }
                set_err(out_err, bad_char_err(c, "path has a character outside [a-zA-Z0-9.-_]"));
                return false;
            }
            i++;
        }
        size_t seg = i - start;
        if (seg == 0) {
            set_err(out_err, i == len ? "path must not end with '/'" : "path has an empty segment");
            return false;
        }
        if ((seg == 1 && p[start] == '.') || (seg == 2 && p[start] == '.' && p[start + 1] == '.')) {
            set_err(out_err, "path has a '.' or '..' segment");
            return false;
        }
    }
    return true;
}

// check_id_td is check_scheme_td for an ID that may be missing (NULL).
static bool check_id_td(const char *id, size_t len, size_t *out_td_end, const char **out_err)
{
    if (id == NULL) {
        set_err(out_err, "SPIFFE ID is missing");
        return false;
    }
    return check_scheme_td(id, len, out_td_end, out_err);
}

bool sc_spiffe_id_valid(const char *id, size_t len, const char **out_err)
{
    size_t td_end;
    if (!check_id_td(id, len, &td_end, out_err)) {
        return false;
    }
    if (td_end == len) {
        set_err(out_err, "SPIFFE ID of a workload needs a path");
        return false;
    }
    return check_path(id + td_end, len - td_end, false, NULL, out_err);
}

bool sc_spiffe_td_id_valid(const char *id, size_t len, const char **out_err)
{
    size_t td_end;
    if (!check_id_td(id, len, &td_end, out_err)) {
        return false;
    }
    if (td_end != len) {
        set_err(out_err, "trust domain ID must not have a path");
        return false;
    }
    return true;
}

bool sc_spiffe_trust_domain(const char *id, char *out, size_t cap)
{
    if (id == NULL || out == NULL) {
        return false;
    }
    size_t len = bounded_len(id);
    if (!sc_spiffe_id_valid(id, len, NULL)) {
        return false;
    }
    const char *td = id + SCHEME_LEN;
    size_t td_len = (size_t)((const char *)memchr(td, '/', len - SCHEME_LEN) - td);
    if (td_len + 1 > cap) {
        return false;
    }
    for (size_t i = 0; i < td_len; i++) {
        out[i] = (char)lower((unsigned char)td[i]);
    }
    out[td_len] = '\0';
    return true;
}

// td_span returns the length of "spiffe://<td>" of a syntactically valid ID
// or pattern (the offset of the first '/' after the scheme).
static size_t td_span(const char *s, size_t len)
{
    const char *slash = memchr(s + SCHEME_LEN, '/', len - SCHEME_LEN);
    return slash == NULL ? len : (size_t)(slash - s);
}

static bool prefix_equal_nocase(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i])) {
            return false;
        }
    }
    return true;
}

bool sc_spiffe_id_equal(const char *a, const char *b)
{
    if (a == NULL || b == NULL) {
        return false;
    }
    size_t alen = bounded_len(a), blen = bounded_len(b);
    if (!sc_spiffe_id_valid(a, alen, NULL) || !sc_spiffe_id_valid(b, blen, NULL)) {
        return false;
    }
    size_t ad = td_span(a, alen), bd = td_span(b, blen);
    if (ad != bd || alen != blen) {
        return false;
    }
    return prefix_equal_nocase(a, b, ad) && memcmp(a + ad, b + bd, alen - ad) == 0;
}

// pattern_parse validates |pattern| and reports the offset of its path
// (|*out_td_end|) and whether it ends in "/*".
static bool pattern_parse(const char *pattern, size_t *out_len, size_t *out_td_end, bool *out_star,
                          const char **out_err)
{
    if (pattern == NULL) {
        set_err(out_err, "pattern is missing");
        return false;
    }
    size_t len = bounded_len(pattern);
    if (!check_scheme_td(pattern, len, out_td_end, out_err)) {
        return false;
    }
    if (*out_td_end == len) {
        set_err(out_err, "pattern needs a path or '/*' (e.g. spiffe://td/*)");
        return false;
    }
    if (!check_path(pattern + *out_td_end, len - *out_td_end, true, out_star, out_err)) {
        return false;
    }
    *out_len = len;
    return true;
}

bool sc_spiffe_pattern_valid(const char *pattern, const char **out_err)
{
    size_t len, td_end;
    bool star;
    return pattern_parse(pattern, &len, &td_end, &star, out_err);
}

bool sc_spiffe_pattern_match(const char *pattern, const char *id)
{
    size_t plen, ptd;
    bool star;
    if (id == NULL || !pattern_parse(pattern, &plen, &ptd, &star, NULL)) {
        return false;
    }
    if (!star) {
        return sc_spiffe_id_equal(pattern, id);
    }
    size_t ilen = bounded_len(id);
    if (!sc_spiffe_id_valid(id, ilen, NULL)) {
        return false;
    }
    size_t itd = td_span(id, ilen);
    if (itd != ptd || !prefix_equal_nocase(pattern, id, ptd)) {
        return false;
    }
    // The pattern's path without the '*' ends in '/'; the ID's path must
    // start with it. A valid ID has no empty segment and no trailing '/', so
    // at least one more segment follows.
    size_t prefix = plen - 1 - ptd;
    return ilen - itd > prefix && memcmp(pattern + ptd, id + itd, prefix) == 0;
}

bool sc_allowlist_match(const struct sc_allowlist *al, const char *id)
{
    if (al == NULL || id == NULL) {
        return false;
    }
    for (size_t i = 0; i < al->num_patterns; i++) {
        if (al->patterns[i] != NULL && sc_spiffe_pattern_match(al->patterns[i], id)) {
            return true;
        }
    }
    return false;
}
