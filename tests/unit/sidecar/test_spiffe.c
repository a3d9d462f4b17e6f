// test_spiffe.c — SPIFFE ID syntax (PROTOCOLS.md §3) and allow-list matching.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sc/spiffe.h"

static bool valid(const char *id)
{
    const char *err = NULL;
    bool ok = sc_spiffe_id_valid(id, strlen(id), &err);
    if (!ok) {
        assert_non_null(err);
    }
    return ok;
}

// invalid_because asserts |id| is rejected with a reason containing |needle|.
static void invalid_because(const char *id, const char *needle)
{
    const char *err = NULL;
    if (sc_spiffe_id_valid(id, strlen(id), &err)) {
        fail_msg("accepted invalid ID %s", id);
    }
    assert_non_null(err);
    if (strstr(err, needle) == NULL) {
        fail_msg("ID %s: reason '%s' lacks '%s'", id, err, needle);
    }
}

static void test_valid_ids(void **state)
{
    assert_true(valid("spiffe://cluster.local/ns/default/sa/web"));
    assert_true(valid("spiffe://example.org/a"));
    assert_true(valid("spiffe://a/b"));
    assert_true(valid("spiffe://td-1_x.y/Path/With.Dots/a-b_c/UPPER"));
    assert_true(valid("spiffe://0.0.0/..a/a../.../x"));
    // The scheme compares without regard to case.
    assert_true(valid("SPIFFE://example.org/a"));
    assert_true(valid("Spiffe://example.org/a"));
}

static void test_invalid_scheme(void **state)
{
    invalid_because("", "spiffe://");
    invalid_because("spiffe:/", "spiffe://");
    invalid_because("spiffe:", "spiffe://");
    invalid_because("http://example.org/a", "spiffe://");
    invalid_because("spiffe:example.org/a", "spiffe://");
    invalid_because("spiffe:/example.org/a", "spiffe://");
    invalid_because(" spiffe://example.org/a", "spiffe://");
    invalid_because("spiffes://example.org/a", "spiffe://");
}

static void test_invalid_trust_domain(void **state)
{
    invalid_because("spiffe://", "trust domain is empty");
    invalid_because("spiffe:///a", "trust domain is empty");
    invalid_because("spiffe://Example.org/a", "lowercase");
    invalid_because("spiffe://EXAMPLE/a", "lowercase");
    invalid_because("spiffe://example.org:8080/a", "port");
    invalid_because("spiffe://user@example.org/a", "userinfo");
    invalid_because("spiffe://ex%41mple.org/a", "percent");
    invalid_because("spiffe://exa mple/a", "trust domain");
    invalid_because("spiffe://example.org?x=1", "query");
    invalid_because("spiffe://example.org#f", "fragment");
    invalid_because("spiffe://ex+ample/a", "trust domain");
    // A trust domain ID alone is not a workload ID.
    invalid_because("spiffe://example.org", "needs a path");
}

static void test_trust_domain_length(void **state)
{
    char id[400];
    memcpy(id, "spiffe://", 9);
    memset(id + 9, 'a', 255);
    strcpy(id + 9 + 255, "/w");
    assert_true(valid(id));
    memset(id + 9, 'a', 256);
    strcpy(id + 9 + 256, "/w");
    invalid_because(id, "255");
}

static void test_invalid_path(void **state)
{
    invalid_because("spiffe://example.org/", "end with '/'");
    invalid_because("spiffe://example.org/a/", "end with '/'");
    invalid_because("spiffe://example.org//a", "empty segment");
    invalid_because("spiffe://example.org/a//b", "empty segment");
    invalid_because("spiffe://example.org/.", "'.'");
    invalid_because("spiffe://example.org/..", "'..'");
    invalid_because("spiffe://example.org/a/./b", "'.'");
    invalid_because("spiffe://example.org/a/../b", "'..'");
    invalid_because("spiffe://example.org/a/..", "'..'");
    invalid_because("spiffe://example.org/a%20b", "percent");
    invalid_because("spiffe://example.org/a?x=1", "query");
    invalid_because("spiffe://example.org/a#frag", "fragment");
    invalid_because("spiffe://example.org/a b", "character");
    invalid_because("spiffe://example.org/a:b", "character");
    invalid_because("spiffe://example.org/a@b", "character");
    invalid_because("spiffe://example.org/a*", "character");
    invalid_because("spiffe://example.org/*", "character");
    invalid_because("spiffe://example.org/caf\xc3\xa9", "character");
}

static void test_embedded_nul_and_len(void **state)
{
    const char id[] = "spiffe://example.org/a\0b";
    assert_true(sc_spiffe_id_valid(id, 22, NULL));
    assert_false(sc_spiffe_id_valid(id, sizeof(id) - 1, NULL));
    // |len| bounds the scan: the prefix of a longer buffer is checked.
    assert_true(sc_spiffe_id_valid("spiffe://example.org/abc/", 24, NULL));
    assert_false(sc_spiffe_id_valid(NULL, 0, NULL));
    const char *err = NULL;
    assert_false(sc_spiffe_id_valid(NULL, 0, &err));
    assert_non_null(err);
}

static void test_length_limit(void **state)
{
    char *id = malloc(SC_SPIFFE_ID_MAX + 16);
    assert_non_null(id);
    strcpy(id, "spiffe://example.org/");
    size_t n = strlen(id);
    memset(id + n, 'x', SC_SPIFFE_ID_MAX - n);
    id[SC_SPIFFE_ID_MAX] = '\0';
    assert_int_equal(strlen(id), 2048);
    assert_true(valid(id));
    char td[64];
    assert_true(sc_spiffe_trust_domain(id, td, sizeof(td)));
    assert_string_equal(td, "example.org");
    assert_true(sc_spiffe_id_equal(id, id));
    assert_true(sc_spiffe_pattern_match("spiffe://example.org/*", id));
    id[SC_SPIFFE_ID_MAX] = 'x';
    id[SC_SPIFFE_ID_MAX + 1] = '\0';
    invalid_because(id, "2048");
    assert_false(sc_spiffe_trust_domain(id, td, sizeof(td)));
    assert_false(sc_spiffe_id_equal(id, id));
    assert_false(sc_spiffe_pattern_match("spiffe://example.org/*", id));
    // Also with segments: 2048 bytes made of "/ab" pieces.
    strcpy(id, "spiffe://e");
    n = strlen(id);
    while (n + 3 <= SC_SPIFFE_ID_MAX) {
        memcpy(id + n, "/ab", 3);
        n += 3;
    }
    id[n] = '\0';
    assert_true(valid(id));
    free(id);
}

static void test_td_id(void **state)
{
    const char *err = NULL;
    assert_true(sc_spiffe_td_id_valid("spiffe://example.org", 20, NULL));
    assert_false(sc_spiffe_td_id_valid("spiffe://example.org/a", 22, &err));
    assert_non_null(err);
    assert_false(sc_spiffe_td_id_valid("spiffe://example.org/", 21, NULL));
    assert_false(sc_spiffe_td_id_valid("spiffe://", 9, NULL));
    assert_false(sc_spiffe_td_id_valid("spiffe://Ex", 11, NULL));
}

static void test_trust_domain(void **state)
{
    char td[16];
    assert_true(sc_spiffe_trust_domain("spiffe://cluster.local/ns/a", td, sizeof(td)));
    assert_string_equal(td, "cluster.local");
    assert_true(sc_spiffe_trust_domain("SPIFFE://x/y", td, sizeof(td)));
    assert_string_equal(td, "x");
    // Capacity must hold the NUL.
    char small[13];
    assert_false(sc_spiffe_trust_domain("spiffe://cluster.local/ns/a", small, sizeof(small)));
    char exact[14];
    assert_true(sc_spiffe_trust_domain("spiffe://cluster.local/ns/a", exact, sizeof(exact)));
    assert_false(sc_spiffe_trust_domain("spiffe://cluster.local", td, sizeof(td)));
    assert_false(sc_spiffe_trust_domain("not an id", td, sizeof(td)));
    assert_false(sc_spiffe_trust_domain(NULL, td, sizeof(td)));
    assert_false(sc_spiffe_trust_domain("spiffe://x/y", td, 0));
}

static void test_equal(void **state)
{
    assert_true(sc_spiffe_id_equal("spiffe://td/a/b", "spiffe://td/a/b"));
    assert_true(sc_spiffe_id_equal("SPIFFE://td/a/b", "spiffe://td/a/b"));
    // Path is case-sensitive.
    assert_false(sc_spiffe_id_equal("spiffe://td/a/B", "spiffe://td/a/b"));
    assert_false(sc_spiffe_id_equal("spiffe://td/a/b", "spiffe://td/a/bc"));
    assert_false(sc_spiffe_id_equal("spiffe://td/a/b", "spiffe://td/a"));
    assert_false(sc_spiffe_id_equal("spiffe://td/a/b", "spiffe://tdx/a/b"));
    assert_false(sc_spiffe_id_equal("spiffe://td/a/b", "spiffe://t/da/b"));
    // Invalid IDs equal nothing, not even themselves.
    assert_false(sc_spiffe_id_equal("spiffe://td/a/", "spiffe://td/a/"));
    assert_false(sc_spiffe_id_equal("spiffe://TD/a", "spiffe://TD/a"));
    assert_false(sc_spiffe_id_equal(NULL, "spiffe://td/a"));
    assert_false(sc_spiffe_id_equal("spiffe://td/a", NULL));
}

static void test_pattern_valid(void **state)
{
    const char *err = NULL;
    assert_true(sc_spiffe_pattern_valid("spiffe://td/exact/path", NULL));
    assert_true(sc_spiffe_pattern_valid("spiffe://td/some/prefix/*", NULL));
    assert_true(sc_spiffe_pattern_valid("spiffe://cluster.local/ns/prod/*", NULL));
    assert_true(sc_spiffe_pattern_valid("spiffe://td/*", NULL));
    assert_true(sc_spiffe_pattern_valid("SPIFFE://td/*", NULL));

    const char *bad[] = {
        "*",
        "",
        "spiffe://td",
        "spiffe://td/",
        "spiffe://*/a",
        "spiffe://*",
        "spiffe://td/a*",
        "spiffe://td/*a",
        "spiffe://td/*/sa/x",
        "spiffe://td/**",
        "spiffe://td/a/*/",
        "spiffe://td//*",
        "spiffe://td/../*",
        "spiffe://TD/*",
        "spiffe://td/a?x/*",
        "http://td/*",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err = NULL;
        if (sc_spiffe_pattern_valid(bad[i], &err)) {
            fail_msg("accepted invalid pattern '%s'", bad[i]);
        }
        assert_non_null(err);
        assert_false(sc_spiffe_pattern_match(bad[i], "spiffe://td/a/b"));
    }
    err = NULL;
    assert_false(sc_spiffe_pattern_valid("spiffe://td/*/x", &err));
    assert_non_null(strstr(err, "last segment"));
    assert_false(sc_spiffe_pattern_valid(NULL, &err));
}

static void test_pattern_exact(void **state)
{
    const char *p = "spiffe://cluster.local/ns/default/sa/web";
    assert_true(sc_spiffe_pattern_match(p, "spiffe://cluster.local/ns/default/sa/web"));
    assert_true(sc_spiffe_pattern_match(p, "SPIFFE://cluster.local/ns/default/sa/web"));
    assert_true(sc_spiffe_pattern_match("Spiffe://cluster.local/ns/default/sa/web",
                                        "spiffe://cluster.local/ns/default/sa/web"));
    assert_false(sc_spiffe_pattern_match(p, "spiffe://cluster.local/ns/default/sa/Web"));
    assert_false(sc_spiffe_pattern_match(p, "spiffe://cluster.local/ns/default/sa/web2"));
    assert_false(sc_spiffe_pattern_match(p, "spiffe://cluster.local/ns/default/sa/web/x"));
    assert_false(sc_spiffe_pattern_match(p, "spiffe://cluster.local/ns/default/sa"));
    assert_false(sc_spiffe_pattern_match(p, "spiffe://other.local/ns/default/sa/web"));
    assert_false(sc_spiffe_pattern_match(p, "spiffe://cluster.local/ns/default/sa/web/"));
    assert_false(sc_spiffe_pattern_match(p, NULL));
    assert_false(sc_spiffe_pattern_match(NULL, p));
}

static void test_pattern_prefix(void **state)
{
    const char *p = "spiffe://td/some/prefix/*";
    assert_true(sc_spiffe_pattern_match(p, "spiffe://td/some/prefix/a"));
    assert_true(sc_spiffe_pattern_match(p, "spiffe://td/some/prefix/a/b/c"));
    assert_true(sc_spiffe_pattern_match(p, "spiffe://TD/some/prefix/a") == false);
    assert_true(sc_spiffe_pattern_match("SPIFFE://td/some/prefix/*", "spiffe://td/some/prefix/a"));
    // At least one more segment; the prefix itself does not match.
    assert_false(sc_spiffe_pattern_match(p, "spiffe://td/some/prefix"));
    assert_false(sc_spiffe_pattern_match(p, "spiffe://td/some/prefix/"));
    // Segment boundaries matter.
    assert_false(sc_spiffe_pattern_match(p, "spiffe://td/some/prefixes/a"));
    assert_false(sc_spiffe_pattern_match(p, "spiffe://td/some/prefi/a"));
    assert_false(sc_spiffe_pattern_match(p, "spiffe://td/some/Prefix/a"));
    assert_false(sc_spiffe_pattern_match(p, "spiffe://td/other/prefix/a"));
    // Trust domain must be the same one, not a suffix or prefix of it.
    assert_false(sc_spiffe_pattern_match(p, "spiffe://tdx/some/prefix/a"));
    assert_false(sc_spiffe_pattern_match(p, "spiffe://xtd/some/prefix/a"));
    // Invalid IDs never match.
    assert_false(sc_spiffe_pattern_match(p, "spiffe://td/some/prefix/../a"));
    assert_false(sc_spiffe_pattern_match(p, "spiffe://td/some/prefix//a"));
    assert_false(sc_spiffe_pattern_match(p, "spiffe://td/some/prefix/a?x"));
}

static void test_pattern_namespace(void **state)
{
    const char *p = "spiffe://cluster.local/ns/prod/*";
    assert_true(sc_spiffe_pattern_match(p, "spiffe://cluster.local/ns/prod/sa/web"));
    assert_true(sc_spiffe_pattern_match(p, "spiffe://cluster.local/ns/prod/sa/db"));
    assert_false(sc_spiffe_pattern_match(p, "spiffe://cluster.local/ns/production/sa/web"));
    assert_false(sc_spiffe_pattern_match(p, "spiffe://cluster.local/ns/dev/sa/web"));
    assert_false(sc_spiffe_pattern_match(p, "spiffe://cluster.local/ns/prod"));
    assert_false(sc_spiffe_pattern_match(p, "spiffe://other/ns/prod/sa/web"));
}

static void test_pattern_trust_domain(void **state)
{
    const char *p = "spiffe://td/*";
    assert_true(sc_spiffe_pattern_match(p, "spiffe://td/a"));
    assert_true(sc_spiffe_pattern_match(p, "spiffe://td/a/b/c"));
    assert_true(sc_spiffe_pattern_match(p, "SPIFFE://td/a"));
    assert_false(sc_spiffe_pattern_match(p, "spiffe://td"));
    assert_false(sc_spiffe_pattern_match(p, "spiffe://td/"));
    assert_false(sc_spiffe_pattern_match(p, "spiffe://td2/a"));
    assert_false(sc_spiffe_pattern_match(p, "spiffe://t/a"));
    assert_false(sc_spiffe_pattern_match(p, "spiffe://td.evil/a"));
    assert_false(sc_spiffe_pattern_match(p, "spiffe://evil/td/a"));
}

static void test_allowlist(void **state)
{
    char p0[] = "spiffe://cluster.local/ns/prod/*";
    char p2[] = "spiffe://cluster.local/ns/dev/sa/tester";
    char p3[] = "spiffe://partner.org/*";
    char *pats[] = {p0, NULL, p2, p3};
    struct sc_allowlist al = {.num_patterns = 4, .patterns = pats};
    assert_true(sc_allowlist_match(&al, "spiffe://cluster.local/ns/prod/sa/web"));
    assert_true(sc_allowlist_match(&al, "spiffe://cluster.local/ns/dev/sa/tester"));
    assert_true(sc_allowlist_match(&al, "spiffe://partner.org/x/y"));
    assert_false(sc_allowlist_match(&al, "spiffe://cluster.local/ns/dev/sa/other"));
    assert_false(sc_allowlist_match(&al, "spiffe://evil.org/ns/prod/sa/web"));
    assert_false(sc_allowlist_match(&al, "not-an-id"));
    assert_false(sc_allowlist_match(&al, NULL));
    assert_false(sc_allowlist_match(NULL, "spiffe://partner.org/x"));
    // Empty list allows none.
    struct sc_allowlist empty = {0};
    assert_false(sc_allowlist_match(&empty, "spiffe://cluster.local/ns/prod/sa/web"));
    // An invalid pattern in the list doesn't widen it.
    char b0[] = "*";
    char b1[] = "spiffe://cluster.local/*/sa/web";
    char *bad[] = {b0, b1};
    struct sc_allowlist al2 = {.num_patterns = 2, .patterns = bad};
    assert_false(sc_allowlist_match(&al2, "spiffe://cluster.local/ns/prod/sa/web"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_ids),
        cmocka_unit_test(test_invalid_scheme),
        cmocka_unit_test(test_invalid_trust_domain),
        cmocka_unit_test(test_trust_domain_length),
        cmocka_unit_test(test_invalid_path),
        cmocka_unit_test(test_embedded_nul_and_len),
        cmocka_unit_test(test_length_limit),
        cmocka_unit_test(test_td_id),
        cmocka_unit_test(test_trust_domain),
        cmocka_unit_test(test_equal),
        cmocka_unit_test(test_pattern_valid),
        cmocka_unit_test(test_pattern_exact),
        cmocka_unit_test(test_pattern_prefix),
        cmocka_unit_test(test_pattern_namespace),
        cmocka_unit_test(test_pattern_trust_domain),
        cmocka_unit_test(test_allowlist),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
