// fuzz_spiffe_id.c — sc_spiffe_id_valid and friends on arbitrary bytes.
// Besides "no crash", checks invariants that an accepted ID must satisfy,
// so a validator that accepts too much fails here.
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

static void check_accepted(const char *id, size_t len)
{
    CHECK(len <= SC_SPIFFE_ID_MAX);
    CHECK(strncmp(id + 6, "://", 3) == 0);
    const char *path = strchr(id + 9, '/');
    CHECK(path != NULL && path > id + 9 && path - (id + 9) <= 255);
    CHECK(id[len - 1] != '/');
    CHECK(strstr(path, "//") == NULL);
    CHECK(strstr(path, "/./") == NULL && strstr(path, "/../") == NULL);
    CHECK(strcmp(id + len - 2, "/.") != 0 && strcmp(id + len - 3, "/..") != 0);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)id[i];
        CHECK(c > 0x20 && c < 0x7f && c != '%' && c != '?' && c != '#' && c != '@');
        if (i >= 9 && id + i < path) {
            CHECK(!(c >= 'A' && c <= 'Z') && c != ':');
        }
    }

    char td[256];
    CHECK(sc_spiffe_trust_domain(id, td, sizeof(td)));
    CHECK(strlen(td) == (size_t)(path - (id + 9)));
    CHECK(sc_spiffe_id_equal(id, id));
    CHECK(sc_spiffe_pattern_valid(id, NULL));
    CHECK(sc_spiffe_pattern_match(id, id));

    // The trust-domain wildcard and the parent-prefix wildcard match.
    char *pat = malloc(len + 16);
    CHECK(pat != NULL);
    strcpy(pat, "SPIFFE://");
    strcat(pat, td);
    strcat(pat, "/*");
    CHECK(sc_spiffe_pattern_match(pat, id));
    const char *last = strrchr(id, '/');
    memcpy(pat, id, (size_t)(last - id) + 1);
    pat[last - id + 1] = '*';
    pat[last - id + 2] = '\0';
    CHECK(sc_spiffe_pattern_match(pat, id));
    // Only a strict prefix: the ID's own path + "/*" does not match it.
    memcpy(pat, id, len);
    memcpy(pat + len, "/*", 3);
    CHECK(!sc_spiffe_pattern_match(pat, id));
    free(pat);

    // Changing the case of the path changes equality iff it changes bytes.
    char *copy = malloc(len + 1);
    CHECK(copy != NULL);
    memcpy(copy, id, len + 1);
    bool changed = false;
    for (char *p = copy + (path - id); *p != '\0'; p++) {
        if (*p >= 'a' && *p <= 'z') {
            *p = (char)(*p - 'a' + 'A');
            changed = true;
        }
    }
    CHECK(sc_spiffe_id_equal(id, copy) == !changed);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *err = NULL;
    bool ok = sc_spiffe_id_valid((const char *)data, size, &err);
    CHECK(ok || err != NULL);
    bool td_ok = sc_spiffe_td_id_valid((const char *)data, size, NULL);
    CHECK(!(ok && td_ok));

    char *id = malloc(size + 1);
    if (id == NULL) {
        return 0;
    }
    memcpy(id, data, size);
    id[size] = '\0';
    if (ok) {
        check_accepted(id, size);
    } else if (memchr(data, '\0', size) == NULL) {
        char td[256];
        CHECK(!sc_spiffe_trust_domain(id, td, sizeof(td)));
        CHECK(!sc_spiffe_id_equal(id, id));
    }
    // Patterns on the same bytes must not crash and an invalid one never matches.
    bool pv = sc_spiffe_pattern_valid(id, NULL);
    if (!pv) {
        CHECK(!sc_spiffe_pattern_match(id, "spiffe://example.org/a"));
    }
    free(id);
    return 0;
}
