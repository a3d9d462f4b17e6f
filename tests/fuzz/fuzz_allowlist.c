// fuzz_allowlist.c — allow-list matching. Input: lines; the last line is the
// peer ID, the others are patterns. Checks that a match implies a valid ID
// and a valid matching pattern, and agrees with a simple reference matcher.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sc/spiffe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define MAX_PATTERNS 16

static bool lower_eq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z') {
            x = (char)(x - 'A' + 'a');
        }
        if (y >= 'A' && y <= 'Z') {
            y = (char)(y - 'A' + 'a');
        }
        if (x != y) {
            return false;
        }
    }
    return true;
}

// ref_match: both inputs already known valid.
static bool ref_match(const char *pat, const char *id)
{
    size_t pl = strlen(pat), il = strlen(id);
    const char *ppath = strchr(pat + 9, '/'), *ipath = strchr(id + 9, '/');
    size_t ptd = (size_t)(ppath - pat), itd = (size_t)(ipath - id);
    if (ptd != itd || !lower_eq(pat, id, ptd)) {
        return false;
    }
    if (pat[pl - 1] != '*') {
        return strcmp(ppath, ipath) == 0;
    }
    size_t pre = pl - 1 - ptd;
    return il - itd > pre && strncmp(ppath, ipath, pre) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    if (buf == NULL) {
        return 0;
    }
    memcpy(buf, data, size);
    buf[size] = '\0';

    char *lines[MAX_PATTERNS + 1];
    size_t n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, "\n", &save); tok != NULL && n < MAX_PATTERNS + 1;
         tok = strtok_r(NULL, "\n", &save)) {
        lines[n++] = tok;
    }
    if (n == 0) {
        free(buf);
        return 0;
    }
    const char *id = lines[n - 1];
    struct sc_allowlist al = {.num_patterns = n - 1, .patterns = lines};
    bool any = sc_allowlist_match(&al, id);
    bool id_ok = sc_spiffe_id_valid(id, strlen(id), NULL);
    bool want = false;
    for (size_t i = 0; i + 1 < n; i++) {
        bool m = sc_spiffe_pattern_match(lines[i], id);
        bool pv = sc_spiffe_pattern_valid(lines[i], NULL);
        if (m) {
            CHECK(id_ok && pv);
        }
        if (id_ok && pv) {
            CHECK(m == ref_match(lines[i], id));
        }
        want = want || m;
    }
    CHECK(any == want);
    free(buf);
    return 0;
}
