// parse.c — flag value parsers (durations, sizes, addresses). See sc/parse.h.
//
// All parsers are strict: no surrounding whitespace, no signs, no trailing
// garbage, and every overflow is an error rather than a wrap.
#include "sc/parse.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#define INPUT_MAX 256

static int fail(const char **out_err, const char *msg)
{
    if (out_err != NULL) {
        *out_err = msg;
    }
    return -1;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static char lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

// mul_add sets *acc = *acc * m + a; false on overflow.
static bool mul_add(uint64_t *acc, uint64_t m, uint64_t a)
{
    if (m != 0 && *acc > UINT64_MAX / m) {
        return false;
    }
    uint64_t v = *acc * m;
    if (v > UINT64_MAX - a) {
        return false;
    }
    *acc = v + a;
    return true;
}

int sc_parse_duration_ms(const char *s, uint64_t *out_ms, const char **out_err)
{
    if (s == NULL || *s == '\0') {
        return fail(out_err, "empty duration");
    }
    if (strnlen(s, INPUT_MAX) == INPUT_MAX) {
        return fail(out_err, "duration too long");
    }
    if (*s == '-') {
        return fail(out_err, "negative durations are not allowed");
    }
    // A bare integer is a number of seconds.
    const char *p = s;
    while (is_digit(*p)) {
        p++;
    }
    if (*p == '\0') {
        uint64_t secs = 0;
        for (p = s; *p != '\0'; p++) {
            if (!mul_add(&secs, 10, (uint64_t)(*p - '0'))) {
                return fail(out_err, "duration overflows");
            }
        }
        if (!mul_add(&secs, 1000, 0)) {
            return fail(out_err, "duration overflows");
        }
        *out_ms = secs;
        return 0;
    }

    uint64_t total = 0;
    p = s;
    while (*p != '\0') {
        if (!is_digit(*p) && *p != '.') {
            return fail(out_err, p == s ? "duration must be a number followed by ms, s, m or h"
                                        : "unknown duration unit (use ms, s, m or h)");
        }
        uint64_t whole = 0, frac = 0, frac_div = 1;
        bool any_digit = false;
        for (; is_digit(*p); p++) {
            any_digit = true;
            if (!mul_add(&whole, 10, (uint64_t)(*p - '0'))) {
                return fail(out_err, "duration overflows");
            }
        }
        if (*p == '.') {
            p++;
            for (; is_digit(*p); p++) {
                any_digit = true;
                // Digits past 1e-9 cannot change a millisecond result of a
                // unit of at most an hour; they are accepted and ignored.
                if (frac_div < 1000000000ULL) {
                    frac = frac * 10 + (uint64_t)(*p - '0');
                    frac_div *= 10;
                }
            }
        }
        if (!any_digit) {
            return fail(out_err, "duration has a '.' without digits");
        }
        uint64_t unit;
        if (p[0] == 'm' && p[1] == 's') {
            unit = 1;
            p += 2;
        } else if (p[0] == 's') {
            unit = 1000;
            p++;
        } else if (p[0] == 'm') {
            unit = 60 * 1000;
            p++;
        } else if (p[0] == 'h') {
            unit = 3600 * 1000;
            p++;
        } else if (p[0] == '\0') {
            return fail(out_err, "duration is missing a unit (ms, s, m, h)");
        } else {
            return fail(out_err, "unknown duration unit (use ms, s, m or h)");
        }
        uint64_t part = whole;
        if (!mul_add(&part, unit, frac * unit / frac_div) || !mul_add(&total, 1, part)) {
            return fail(out_err, "duration overflows");
        }
    }
    *out_ms = total;
    return 0;
}

int sc_parse_size(const char *s, uint64_t *out_bytes, const char **out_err)
{
    if (s == NULL || *s == '\0') {
        return fail(out_err, "empty size");
    }
    if (strnlen(s, INPUT_MAX) == INPUT_MAX) {
        return fail(out_err, "size too long");
    }
    if (*s == '-') {
        return fail(out_err, "negative sizes are not allowed");
    }
    if (!is_digit(*s)) {
        return fail(out_err, "size must be a number with an optional unit (k, m, g, t)");
    }
    uint64_t n = 0;
    const char *p = s;
    for (; is_digit(*p); p++) {
        if (!mul_add(&n, 10, (uint64_t)(*p - '0'))) {
            return fail(out_err, "size overflows");
        }
    }
    unsigned shift;
    switch (lower(*p)) {
    case '\0':
        shift = 0;
        break;
    case 'b':
        shift = 0;
        break;
    case 'k':
        shift = 10;
        break;
    case 'm':
        shift = 20;
        break;
    case 'g':
        shift = 30;
        break;
    case 't':
        shift = 40;
        break;
    default:
        return fail(out_err, "unknown size unit (use b, k, m, g, t, KiB, MiB, GiB, TiB)");
    }
    if (*p != '\0') {
        const char *suffix = p + 1;
        // Accept "k", "kb", "KiB" (case-insensitive); "b" stands alone.
        bool ok;
        if (shift == 0) {
            ok = *suffix == '\0';
        } else {
            ok = *suffix == '\0' || (lower(suffix[0]) == 'b' && suffix[1] == '\0') ||
                 (lower(suffix[0]) == 'i' && lower(suffix[1]) == 'b' && suffix[2] == '\0');
        }
        if (!ok) {
            return fail(out_err, "unknown size unit (use b, k, m, g, t, KiB, MiB, GiB, TiB)");
        }
    }
    if (shift != 0 && n > (UINT64_MAX >> shift)) {
        return fail(out_err, "size overflows");
    }
    *out_bytes = n << shift;
    return 0;
}

// parse_port parses a decimal port of 1..5 digits.
static int parse_port(const char *s, bool allow_port0, uint16_t *out_port, const char **out_err)
{
    if (*s == '\0') {
        return fail(out_err, "port is missing");
    }
    uint32_t v = 0;
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        if (!is_digit(s[n])) {
            return fail(out_err, "port must be a number");
        }
        if (n >= 5) {
            return fail(out_err, "port must be 0..65535");
        }
        v = v * 10 + (uint32_t)(s[n] - '0');
    }
    if (v > 65535) {
        return fail(out_err, "port must be 0..65535");
    }
    if (v == 0 && !allow_port0) {
        return fail(out_err, "port 0 is not allowed here");
    }
    *out_port = (uint16_t)v;
    return 0;
}

// split_hostport copies the host part of |s| (without brackets) into |host|
// and returns a pointer to the port text, or NULL on error.
static const char *split_hostport(const char *s, char *host, size_t host_cap, bool *out_bracketed,
                                  const char **out_err)
{
    const char *colon;
    const char *h;
    size_t hlen;
    *out_bracketed = false;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL) {
            fail(out_err, "missing ']' after IPv6 address");
            return NULL;
        }
        if (close[1] != ':') {
            fail(out_err, "expected ':PORT' after ']'");
            return NULL;
        }
        h = s + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
        *out_bracketed = true;
        if (hlen == 0) {
            fail(out_err, "empty IPv6 address");
            return NULL;
        }
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL) {
            fail(out_err, "expected HOST:PORT");
            return NULL;
        }
        if (memchr(s, ':', (size_t)(colon - s)) != NULL) {
            fail(out_err, "IPv6 addresses need brackets: [ADDR]:PORT");
            return NULL;
        }
        h = s;
        hlen = (size_t)(colon - s);
    }
    if (hlen + 1 > host_cap) {
        fail(out_err, "host name too long");
        return NULL;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    return colon + 1;
}

int sc_parse_hostport(const char *s, bool allow_port0, struct sockaddr_storage *out,
                      const char **out_err)
{
    char host[INET6_ADDRSTRLEN + 1];
    bool bracketed;
    uint16_t port;
    if (s == NULL || *s == '\0') {
        return fail(out_err, "empty address");
    }
    if (strnlen(s, INPUT_MAX) == INPUT_MAX) {
        return fail(out_err, "address too long");
    }
    const char *port_s = split_hostport(s, host, sizeof(host), &bracketed, out_err);
    if (port_s == NULL) {
        return -1;
    }
    if (parse_port(port_s, allow_port0, &port, out_err) != 0) {
        return -1;
    }
    memset(out, 0, sizeof(*out));
    if (bracketed) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) {
            return fail(out_err, "invalid IPv6 address");
        }
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        return 0;
    }
    struct sockaddr_in *sin = (struct sockaddr_in *)out;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    if (host[0] == '\0') {
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
        return 0;
    }
    if (strcmp(host, "localhost") == 0) {
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return 0;
    }
    if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
        memset(out, 0, sizeof(*out));
        return fail(out_err, "host must be a numeric IPv4 address, [IPv6] or localhost");
    }
    return 0;
}

// dns_name_valid checks a DNS name or IPv4 literal: labels of
// [A-Za-z0-9-_] of 1..63 bytes, separated by single dots, 1..253 bytes total,
// an optional final dot.
static bool dns_name_valid(const char *h)
{
    size_t len = strlen(h);
    if (len == 0 || len > 254 || (len == 254 && h[253] != '.')) {
        return false;
    }
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        char c = h[i];
        if (c == '.') {
            if (label == 0) {
                return false;
            }
            label = 0;
            continue;
        }
        bool ok =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '-' || c == '_';
        if (!ok || ++label > 63) {
            return false;
        }
    }
    return true;
}

int sc_parse_hostport_name(const char *s, char *host, size_t host_cap, uint16_t *out_port,
                           const char **out_err)
{
    char buf[INPUT_MAX];
    bool bracketed;
    if (s == NULL || *s == '\0') {
        return fail(out_err, "empty address");
    }
    if (strnlen(s, INPUT_MAX) == INPUT_MAX) {
        return fail(out_err, "address too long");
    }
    const char *port_s = split_hostport(s, buf, sizeof(buf), &bracketed, out_err);
    if (port_s == NULL) {
        return -1;
    }
    if (bracketed) {
        struct in6_addr a6;
        if (inet_pton(AF_INET6, buf, &a6) != 1) {
            return fail(out_err, "invalid IPv6 address");
        }
    } else if (buf[0] == '\0') {
        return fail(out_err, "host name is missing");
    } else if (!dns_name_valid(buf)) {
        return fail(out_err, "invalid host name");
    }
    if (parse_port(port_s, false, out_port, out_err) != 0) {
        return -1;
    }
    size_t hlen = strlen(buf);
    if (host == NULL || hlen + 1 > host_cap) {
        return fail(out_err, "host name too long");
    }
    memcpy(host, buf, hlen + 1);
    return 0;
}

socklen_t sc_addr_len(const struct sockaddr *sa)
{
    return sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

static uint16_t addr_port(const struct sockaddr *sa)
{
    return sa->sa_family == AF_INET6 ? ((const struct sockaddr_in6 *)sa)->sin6_port
                                     : ((const struct sockaddr_in *)sa)->sin_port;
}

bool sc_addr_equal(const struct sockaddr *a, const struct sockaddr *b)
{
    uint8_t ab[16], bb[16];
    size_t al = 0, bl = 0;
    const struct sockaddr *x[2] = {a, b};
    uint8_t *o[2] = {ab, bb};
    size_t *l[2] = {&al, &bl};
    for (int i = 0; i < 2; i++) {
        if (x[i]->sa_family == AF_INET) {
            memcpy(o[i], &((const struct sockaddr_in *)x[i])->sin_addr, 4);
            *l[i] = 4;
        } else if (x[i]->sa_family == AF_INET6) {
            const struct in6_addr *ad = &((const struct sockaddr_in6 *)x[i])->sin6_addr;
            if (IN6_IS_ADDR_V4MAPPED(ad)) {
                memcpy(o[i], &ad->s6_addr[12], 4);
                *l[i] = 4;
            } else {
                memcpy(o[i], ad, 16);
                *l[i] = 16;
            }
        } else {
            return false;
        }
    }
    return al == bl && memcmp(ab, bb, al) == 0 && addr_port(a) == addr_port(b);
}

bool sc_addr_is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr)) {
            return true;
        }
        return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127;
    }
    return false;
}

char *sc_format_addr(const struct sockaddr *sa, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN];
    if (out == NULL || cap == 0) {
        return out;
    }
    if (sa == NULL) {
        snprintf(out, cap, "-");
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
        snprintf(out, cap, "%s:%u", ip, (unsigned)ntohs(sin->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
        snprintf(out, cap, "[%s]:%u", ip, (unsigned)ntohs(sin6->sin6_port));
    } else if (sa->sa_family == AF_UNIX) {
        snprintf(out, cap, "unix");
    } else {
        snprintf(out, cap, "?");
    }
    return out;
}
