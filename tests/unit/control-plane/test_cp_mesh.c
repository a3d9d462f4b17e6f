// Unit tests for the mesh file parser (cp_mesh.c): good input and errors
// naming the right line.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cp_mesh.h"

static int parse(const char *yaml, Seam__V1__Snapshot **out, char *err, size_t cap)
{
    return cp_mesh_parse((const uint8_t *)yaml, strlen(yaml), "m.yaml", out, err, cap);
}

static void test_good(void **state)
{
    const char *y = "cert_ttl: 90s\n"
                    "outbound_policy: ALLOW_ANY\n"
                    "default_inbound_mode: PERMISSIVE\n"
                    "services:\n"
                    "  - name: a\n"
                    "    port: 80\n"
                    "    endpoints:\n"
                    "      - {address: '::1', port: 81, spiffe_id: 'spiffe://td/ns/x/sa/a'}\n"
                    "inbound:\n"
                    "  - port: 81\n"
                    "    allow: [spiffe://td/ns/x/*, spiffe://td/ns/y/sa/b]\n";
    Seam__V1__Snapshot *s = NULL;
    char err[256] = "";
    assert_int_equal(parse(y, &s, err, sizeof(err)), 0);
    assert_int_equal(s->cert_ttl_seconds, 90);
    assert_int_equal(s->outbound_policy, SEAM__V1__OUTBOUND_POLICY__ALLOW_ANY);
    assert_int_equal(s->default_inbound_mode, SEAM__V1__INBOUND_MODE__PERMISSIVE);
    assert_int_equal(s->n_services, 1);
    assert_string_equal(s->services[0]->endpoints[0]->address, "::1");
    assert_int_equal(s->services[0]->endpoints[0]->port, 81);
    assert_int_equal(s->n_inbound_ports, 1);
    assert_int_equal(s->inbound_ports[0]->n_allow, 2);
    assert_int_equal(s->inbound_ports[0]->mode, SEAM__V1__INBOUND_MODE__INBOUND_MODE_UNSPECIFIED);
    // The snapshot packs.
    assert_true(seam__v1__snapshot__get_packed_size(s) > 0);
    cp_mesh_free(s);
}

static void test_empty_mapping_ok(void **state)
{
    Seam__V1__Snapshot *s = NULL;
    char err[256];
    assert_int_equal(parse("{}\n", &s, err, sizeof(err)), 0);
    assert_int_equal(s->n_services, 0);
    cp_mesh_free(s);
}

struct bad_case {
    const char *yaml;
    const char *want; // substring of the error, starting with "m.yaml:LINE:"
};

static const struct bad_case bad_cases[] = {
    {"services: 1\n", "m.yaml:1: \"services\" must be a list"},
    {"colour: red\n", "m.yaml:1: mesh: unknown key \"colour\""},
    {"services:\n  - name: a\n    endpoints:\n      - address: 1.2.3.4\n        port: 0\n"
     "        spiffe_id: spiffe://td/a\n",
     "m.yaml:5:"},
    {"services:\n  - name: a\n    endpoints:\n      - address: 1.2.3.4\n        port: 1\n"
     "        spiffe_id: http://td/a\n",
     "m.yaml:6: invalid SPIFFE ID"},
    {"services:\n  - name: a\n    endpoints:\n      - address: 1.2.3.4\n        port: 1\n",
     "m.yaml:4: missing \"spiffe_id\""},
    {"inbound:\n  - port: 80\n  - port: 80\n", "m.yaml:3: duplicate inbound port 80"},
    {"inbound:\n  - port: 80\n    mode: LOOSE\n", "m.yaml:3: mode must be"},
    {"inbound:\n  - port: 80\n    allow:\n      - spiffe://td/ns/*/x\n", "m.yaml:4: invalid allow"},
    {"cert_ttl: forever\n", "m.yaml:1: cert_ttl"},
    {"outbound_policy: maybe\n", "m.yaml:1: outbound_policy"},
    {"a: [\n", "m.yaml:2:"},
    {"- 1\n- 2\n", "m.yaml:1: the mesh file must be a mapping"},
    {"x: &a 1\ny: *a\n", "m.yaml:1: anchors are not supported"},
    {"services:\n  - name: a\n  - name: a\n", "m.yaml:3: duplicate service"},
    {"services:\n  - name: a\n    endpoints:\n      - address: 'a b'\n        port: 1\n"
     "        spiffe_id: spiffe://td/a\n",
     "m.yaml:4: \"address\""},
    {"trust_domain: 'BAD TD'\n", "m.yaml:1: invalid trust domain"},
    {"inbound:\n  - port: 80\n    port: 81\n", "m.yaml:3: inbound: duplicate key"},
    {"", "m.yaml:1: empty document"},
};

static void test_bad(void **state)
{
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        Seam__V1__Snapshot *s = NULL;
        char err[512] = "";
        int rc = parse(bad_cases[i].yaml, &s, err, sizeof(err));
        if (rc == 0 || strstr(err, bad_cases[i].want) == NULL) {
            fail_msg("case %zu: rc=%d err=\"%s\" want \"%s\"", i, rc, err, bad_cases[i].want);
        }
        assert_null(s);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_empty_mapping_ok),
        cmocka_unit_test(test_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
