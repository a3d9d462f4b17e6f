// fuzz_duration.c — flag value parsers: duration, size, host:port. The first
// byte picks the parser ('0' duration, '1' size, '2' host:port, '3' host:port
// with port 0, '4' name:port; modulo 5); the rest is the NUL-terminated text. Accepted values
// are checked against round trips and simple reference computations.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sc/parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static bool all_digits(const char *s)
{
    if (*s == '\0') {
        return false;
    }
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9') {
            return false;
        }
    }
    return true;
}

static void fuzz_duration(const char *s)
{
    uint64_t ms = 42;
    const char *err = NULL;
    if (sc_parse_duration_ms(s, &ms, &err) != 0) {
        CHECK(err != NULL && ms == 42);
        return;
    }
    CHECK(s[0] >= '0' && s[0] <= '9' ? true : s[0] == '.');
    if (all_digits(s) && strlen(s) < 16) {
        CHECK(ms == strtoull(s, NULL, 10) * 1000);
    }
}

static void fuzz_size(const char *s)
{
    uint64_t v = 42;
    const char *err = NULL;
    if (sc_parse_size(s, &v, &err) != 0) {
        CHECK(err != NULL && v == 42);
        return;
    }
    CHECK(s[0] >= '0' && s[0] <= '9');
    if (all_digits(s)) {
        CHECK(v == strtoull(s, NULL, 10));
    }
}

static void fuzz_hostport(const char *s, bool allow0)
{
    struct sockaddr_storage ss, again;
    const char *err = NULL;
    if (sc_parse_hostport(s, allow0, &ss, &err) != 0) {
        CHECK(err != NULL);
        return;
    }
    CHECK(ss.ss_family == AF_INET || ss.ss_family == AF_INET6);
    char text[64];
    sc_format_addr((const struct sockaddr *)&ss, text, sizeof(text));
    // The formatted form parses back to the same address.
    CHECK(sc_parse_hostport(text, true, &again, NULL) == 0);
    CHECK(again.ss_family == ss.ss_family);
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)&ss, *b = (const void *)&again;
        CHECK(a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr);
        CHECK(allow0 || a->sin_port != 0);
    } else {
        const struct sockaddr_in6 *a = (const void *)&ss, *b = (const void *)&again;
        CHECK(a->sin6_port == b->sin6_port &&
              memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr)) == 0);
        CHECK(allow0 || a->sin6_port != 0);
    }
}

static void fuzz_hostport_name(const char *s)
{
    char host[300];
    uint16_t port = 0;
    const char *err = NULL;
    if (sc_parse_hostport_name(s, host, sizeof(host), &port, &err) != 0) {
        CHECK(err != NULL);
        return;
    }
    CHECK(port != 0 && host[0] != '\0');
    CHECK(strchr(host, '[') == NULL && strchr(host, ']') == NULL);
    // A tiny buffer must fail cleanly or hold the whole name.
    char small[4];
    if (sc_parse_hostport_name(s, small, sizeof(small), &port, NULL) == 0) {
        CHECK(strcmp(small, host) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    char *s = malloc(size);
    if (s == NULL) {
        return 0;
    }
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    switch ((uint8_t)(data[0] - (uint8_t)'0') % 5) {
    case 0:
        fuzz_duration(s);
        break;
    case 1:
        fuzz_size(s);
        break;
    case 2:
        fuzz_hostport(s, false);
        break;
    case 3:
        fuzz_hostport(s, true);
        break;
    default:
        fuzz_hostport_name(s);
        break;
    }
    free(s);
    return 0;
}
