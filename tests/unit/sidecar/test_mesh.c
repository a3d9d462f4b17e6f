// test_mesh.c — mesh mode's pure parts: the config snapshot built from a
// seam.v1.Snapshot (endpoint and port lookups, refusals of bad snapshots),
// authorization per port, the routing decision for an original destination,
// and the ClientHello detector.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <netinet/in.h>

#include "sc/mesh.h"
#include "sc/parse.h"
#include "seam/v1/config.pb-c.h"

#define ROOT "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

// S copies a literal into writable static storage (protobuf-c fields are
// char *; -Wwrite-strings forbids pointing them at literals).
static char *S(const char *s)
{
    static char pool[64][160];
    static int next;
    char *p = pool[next++ % 64];
    snprintf(p, sizeof(pool[0]), "%s", s);
    return p;
}

// A snapshot on the stack: two services (IPv4 and IPv6 endpoints, one host
// name), three inbound ports.
struct fixture {
    Seam__V1__Snapshot snap;
    Seam__V1__TrustBundle tb;
    char *roots[2];
    Seam__V1__InboundPort ports[3];
    Seam__V1__InboundPort *port_ptrs[3];
    char *allow8080[3];
    char *allow9000[1];
    Seam__V1__Service svcs[2];
    Seam__V1__Service *svc_ptrs[2];
    Seam__V1__Endpoint eps[4];
    Seam__V1__Endpoint *web_eps[3];
    Seam__V1__Endpoint *db_eps[1];
};

static void fixture_init(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    seam__v1__snapshot__init(&f->snap);
    seam__v1__trust_bundle__init(&f->tb);
    f->roots[0] = S(ROOT);
    f->roots[1] = S("-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----"); // no newline
    f->tb.n_roots = 2;
    f->tb.roots = f->roots;
    f->tb.trust_domain = S("cluster.local");
    f->snap.trust_bundle = &f->tb;
    f->snap.outbound_policy = SEAM__V1__OUTBOUND_POLICY__ALLOW_ANY;
    f->snap.default_inbound_mode = SEAM__V1__INBOUND_MODE__STRICT;
    f->snap.cert_ttl_seconds = 600;

    for (int i = 0; i < 3; i++) {
        seam__v1__inbound_port__init(&f->ports[i]);
        f->port_ptrs[i] = &f->ports[i];
    }
    f->allow8080[0] = S("spiffe://cluster.local/ns/default/sa/a");
    f->allow8080[1] = S("spiffe://cluster.local/ns/monitoring/*");
    f->allow8080[2] = S("spiffe://cluster.local/ns/team/sa/*");
    f->ports[0].port = 9000; // listed after 8080 on purpose: the config sorts
    f->ports[0].mode = SEAM__V1__INBOUND_MODE__PERMISSIVE;
    f->allow9000[0] = S("spiffe://cluster.local/ns/default/sa/a");
    f->ports[0].n_allow = 1;
    f->ports[0].allow = f->allow9000;
    f->ports[1].port = 8080;
    f->ports[1].mode = SEAM__V1__INBOUND_MODE__STRICT;
    f->ports[1].n_allow = 3;
    f->ports[1].allow = f->allow8080;
    f->ports[2].port = 7000; // no mode: the default; no rules
    f->snap.n_inbound_ports = 3;
    f->snap.inbound_ports = f->port_ptrs;

    for (int i = 0; i < 4; i++) {
        seam__v1__endpoint__init(&f->eps[i]);
    }
    f->eps[0] = (Seam__V1__Endpoint)SEAM__V1__ENDPOINT__INIT;
    f->eps[0].address = S("10.244.0.20");
    f->eps[0].port = 8080;
    f->eps[0].spiffe_id = S("spiffe://cluster.local/ns/default/sa/b");
    f->eps[1].address = S("fd00:10:244::20");
    f->eps[1].port = 8080;
    f->eps[1].spiffe_id = S("spiffe://cluster.local/ns/default/sa/b");
    f->eps[2].address = S("web.example"); // a host name: cannot be matched
    f->eps[2].port = 8080;
    f->eps[2].spiffe_id = S("spiffe://cluster.local/ns/default/sa/b");
    f->eps[3].address = S("10.244.0.5");
    f->eps[3].port = 5432;
    f->eps[3].spiffe_id = S("spiffe://cluster.local/ns/data/sa/db");
    f->web_eps[0] = &f->eps[0];
    f->web_eps[1] = &f->eps[1];
    f->web_eps[2] = &f->eps[2];
    f->db_eps[0] = &f->eps[3];
    for (int i = 0; i < 2; i++) {
        seam__v1__service__init(&f->svcs[i]);
        f->svc_ptrs[i] = &f->svcs[i];
    }
    f->svcs[0].name = S("b.default");
    f->svcs[0].n_endpoints = 3;
    f->svcs[0].endpoints = f->web_eps;
    f->svcs[1].name = S("db.data");
    f->svcs[1].n_endpoints = 1;
    f->svcs[1].endpoints = f->db_eps;
    f->snap.n_services = 2;
    f->snap.services = f->svc_ptrs;
}

static struct sc_mesh_config *build(struct fixture *f)
{
    char err[256] = "";
    struct sc_mesh_config *c = sc_mesh_config_new(&f->snap, "v7", err, sizeof(err));
    if (c == NULL) {
        fail_msg("config refused: %s", err);
    }
    return c;
}

static struct sockaddr_storage sa(const char *ip, uint16_t port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (strchr(ip, ':') != NULL) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        assert_int_equal(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1);
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        assert_int_equal(inet_pton(AF_INET, ip, &in->sin_addr), 1);
    }
    return ss;
}

static void test_config_fields(void **state)
{
    struct fixture f;
    fixture_init(&f);
    struct sc_mesh_config *c = build(&f);
    assert_string_equal(c->version, "v7");
    assert_int_equal(c->outbound_policy, SC_MESH_ALLOW_ANY);
    assert_int_equal(c->default_mode, SC_MESH_STRICT);
    assert_int_equal(c->cert_ttl_s, 600);
    assert_int_equal(c->num_roots, 2);
    assert_string_equal(c->trust_domain, "cluster.local");
    // Roots are joined with a newline between them even without a trailing one.
    assert_non_null(strstr(c->trust_pem, "-----END CERTIFICATE-----\n-----BEGIN"));
    assert_int_equal(c->num_endpoints, 3);
    assert_int_equal(c->num_skipped, 1);
    assert_int_equal(c->num_ports, 3);
    assert_int_equal(c->ports[0].port, 7000);
    assert_int_equal(c->ports[2].port, 9000);
    sc_mesh_config_unref(c);
}

static void test_find_endpoint(void **state)
{
    struct fixture f;
    fixture_init(&f);
    struct sc_mesh_config *c = build(&f);
    struct sockaddr_storage a = sa("10.244.0.20", 8080);
    const struct sc_mesh_endpoint *e = sc_mesh_find_endpoint(c, (struct sockaddr *)&a);
    assert_non_null(e);
    assert_string_equal(e->spiffe_id, "spiffe://cluster.local/ns/default/sa/b");
    assert_string_equal(e->service, "b.default");
    a = sa("::ffff:10.244.0.20", 8080); // v4-mapped = the IPv4 endpoint
    assert_ptr_equal(sc_mesh_find_endpoint(c, (struct sockaddr *)&a), e);
    a = sa("fd00:10:244::20", 8080);
    assert_non_null(sc_mesh_find_endpoint(c, (struct sockaddr *)&a));
    a = sa("10.244.0.5", 5432);
    e = sc_mesh_find_endpoint(c, (struct sockaddr *)&a);
    assert_non_null(e);
    assert_string_equal(e->spiffe_id, "spiffe://cluster.local/ns/data/sa/db");
    a = sa("10.244.0.20", 8081); // right address, wrong port
    assert_null(sc_mesh_find_endpoint(c, (struct sockaddr *)&a));
    a = sa("10.244.0.21", 8080);
    assert_null(sc_mesh_find_endpoint(c, (struct sockaddr *)&a));
    assert_null(sc_mesh_find_endpoint(NULL, (struct sockaddr *)&a));
    sc_mesh_config_unref(c);
}

static void test_port_modes_and_authorization(void **state)
{
    struct fixture f;
    fixture_init(&f);
    struct sc_mesh_config *c = build(&f);
    assert_int_equal(sc_mesh_port_mode(c, 8080), SC_MESH_STRICT);
    assert_int_equal(sc_mesh_port_mode(c, 9000), SC_MESH_PERMISSIVE);
    assert_int_equal(sc_mesh_port_mode(c, 7000), SC_MESH_STRICT); // unset: default
    assert_int_equal(sc_mesh_port_mode(c, 1234), SC_MESH_STRICT); // unlisted: default

    // Exact, namespace wildcard, prefix.
    assert_true(sc_mesh_authorize(c, 8080, "spiffe://cluster.local/ns/default/sa/a"));
    assert_true(sc_mesh_authorize(c, 8080, "spiffe://cluster.local/ns/monitoring/sa/prom"));
    assert_true(sc_mesh_authorize(c, 8080, "spiffe://cluster.local/ns/team/sa/x"));
    // Default deny once a rule exists.
    assert_false(sc_mesh_authorize(c, 8080, "spiffe://cluster.local/ns/default/sa/c"));
    assert_false(sc_mesh_authorize(c, 8080, "spiffe://other.org/ns/default/sa/a"));
    assert_false(sc_mesh_authorize(c, 8080, "spiffe://cluster.local/ns/default/sa/a/x"));
    assert_false(sc_mesh_authorize(c, 8080, "-")); // a plain client has no identity
    assert_false(sc_mesh_authorize(c, 8080, NULL));
    assert_false(sc_mesh_authorize(c, 9000, "-"));
    // No rule: any authenticated peer, and plain clients on PERMISSIVE ports.
    assert_true(sc_mesh_authorize(c, 7000, "spiffe://cluster.local/ns/x/sa/y"));
    assert_true(sc_mesh_authorize(c, 1234, "-"));
    sc_mesh_config_unref(c);
}

static void test_route_outbound(void **state)
{
    struct fixture f;
    fixture_init(&f);
    struct sc_mesh_config *c = build(&f);
    struct sc_route r;
    struct sockaddr_storage a = sa("10.244.0.20", 8080);

    memset(&r, 0, sizeof(r));
    sc_mesh_route(c, SC_DIR_OUTBOUND, (struct sockaddr *)&a, &r);
    assert_int_equal(r.kind, SC_ROUTE_MTLS);
    assert_string_equal(r.peer_id, "spiffe://cluster.local/ns/default/sa/b");
    assert_string_equal(r.orig, "10.244.0.20:8080");
    assert_memory_equal(&r.target, &a, sizeof(struct sockaddr_in));

    a = sa("192.0.2.9", 443); // outside the mesh, ALLOW_ANY: plain passthrough
    memset(&r, 0, sizeof(r));
    sc_mesh_route(c, SC_DIR_OUTBOUND, (struct sockaddr *)&a, &r);
    assert_int_equal(r.kind, SC_ROUTE_PLAIN);
    assert_null(r.peer_id);
    assert_memory_equal(&r.target, &a, sizeof(struct sockaddr_in));
    sc_mesh_config_unref(c);

    f.snap.outbound_policy = SEAM__V1__OUTBOUND_POLICY__REGISTRY_ONLY;
    c = build(&f);
    memset(&r, 0, sizeof(r));
    sc_mesh_route(c, SC_DIR_OUTBOUND, (struct sockaddr *)&a, &r);
    assert_int_equal(r.kind, SC_ROUTE_REFUSE);
    assert_string_equal(r.reason, "registry_only");
    sc_mesh_config_unref(c);

    memset(&r, 0, sizeof(r));
    sc_mesh_route(NULL, SC_DIR_OUTBOUND, (struct sockaddr *)&a, &r);
    assert_int_equal(r.kind, SC_ROUTE_REFUSE);
    assert_string_equal(r.reason, "no_config");
}

static void test_route_inbound(void **state)
{
    struct fixture f;
    fixture_init(&f);
    struct sc_mesh_config *c = build(&f);
    struct sc_route r;
    struct sockaddr_storage a = sa("10.244.0.20", 8080);
    memset(&r, 0, sizeof(r));
    sc_mesh_route(c, SC_DIR_INBOUND, (struct sockaddr *)&a, &r);
    assert_int_equal(r.kind, SC_ROUTE_MTLS);
    assert_int_equal(r.port, 8080);
    char buf[64];
    assert_string_equal(sc_format_addr((struct sockaddr *)&r.target, buf, sizeof(buf)),
                        "127.0.0.1:8080");

    // PERMISSIVE with allow rules: no plain client could be allowed, so mTLS.
    a = sa("fd00:10:244::20", 9000);
    memset(&r, 0, sizeof(r));
    sc_mesh_route(c, SC_DIR_INBOUND, (struct sockaddr *)&a, &r);
    assert_int_equal(r.kind, SC_ROUTE_MTLS);
    assert_int_equal(r.port, 9000);
    assert_string_equal(sc_format_addr((struct sockaddr *)&r.target, buf, sizeof(buf)),
                        "[::1]:9000");
    sc_mesh_config_unref(c);

    // PERMISSIVE without rules (here the default for unlisted ports): detect.
    f.snap.default_inbound_mode = SEAM__V1__INBOUND_MODE__PERMISSIVE;
    c = build(&f);
    a = sa("fd00:10:244::20", 1234);
    memset(&r, 0, sizeof(r));
    sc_mesh_route(c, SC_DIR_INBOUND, (struct sockaddr *)&a, &r);
    assert_int_equal(r.kind, SC_ROUTE_DETECT);
    assert_int_equal(r.port, 1234);
    a = sa("10.244.0.20", 7000); // listed without a mode: the default, and no rules
    memset(&r, 0, sizeof(r));
    sc_mesh_route(c, SC_DIR_INBOUND, (struct sockaddr *)&a, &r);
    assert_int_equal(r.kind, SC_ROUTE_DETECT);
    sc_mesh_config_unref(c);
}

static void test_bad_snapshots_refused(void **state)
{
    struct fixture f;
    char err[256];

    fixture_init(&f);
    f.ports[2].port = 8080; // twice
    err[0] = '\0';
    assert_null(sc_mesh_config_new(&f.snap, "v", err, sizeof(err)));
    assert_non_null(strstr(err, "8080"));

    fixture_init(&f);
    f.allow8080[1] = S("spiffe://cluster.local/ns/*/sa/x");
    err[0] = '\0';
    assert_null(sc_mesh_config_new(&f.snap, "v", err, sizeof(err)));
    assert_non_null(strstr(err, "allow"));

    fixture_init(&f);
    f.eps[3].address = S("10.244.0.20"); // same endpoint as b, another identity
    f.eps[3].port = 8080;
    err[0] = '\0';
    assert_null(sc_mesh_config_new(&f.snap, "v", err, sizeof(err)));
    assert_non_null(strstr(err, "two different SPIFFE IDs"));

    fixture_init(&f);
    f.eps[0].spiffe_id = S("not-an-id");
    err[0] = '\0';
    assert_null(sc_mesh_config_new(&f.snap, "v", err, sizeof(err)));
    assert_non_null(strstr(err, "spiffe_id"));
}

static void test_refcount_and_json(void **state)
{
    struct fixture f;
    fixture_init(&f);
    struct sc_mesh_config *c = build(&f);
    assert_ptr_equal(sc_mesh_config_ref(c), c);
    sc_mesh_config_unref(c); // still one left
    struct sc_admin_buf b;
    sc_admin_buf_init(&b);
    sc_mesh_config_json(c, &b);
    assert_non_null(strstr(b.data, "\"version\":\"v7\""));
    assert_non_null(strstr(b.data, "\"outbound_policy\":\"ALLOW_ANY\""));
    assert_non_null(strstr(b.data, "{\"port\":9000,\"mode\":\"PERMISSIVE\""));
    assert_non_null(strstr(b.data, "\"address\":\"fd00:10:244::20\",\"port\":8080"));
    assert_null(strstr(b.data, "BEGIN")); // roots are counted, not dumped
    sc_admin_buf_cleanup(&b);
    sc_mesh_config_json(NULL, &b);
    assert_string_equal(b.data, "{\"version\":null}");
    sc_admin_buf_cleanup(&b);
    sc_mesh_config_unref(c);
    sc_mesh_config_unref(NULL);
}

static void test_empty_snapshot(void **state)
{
    // Only a trust bundle: no port, no service (UBSan: no qsort of NULL).
    struct fixture f;
    fixture_init(&f);
    f.snap.n_inbound_ports = 0;
    f.snap.inbound_ports = NULL;
    f.snap.n_services = 0;
    f.snap.services = NULL;
    f.snap.default_inbound_mode = SEAM__V1__INBOUND_MODE__INBOUND_MODE_UNSPECIFIED;
    f.snap.outbound_policy = SEAM__V1__OUTBOUND_POLICY__OUTBOUND_POLICY_UNSPECIFIED;
    struct sc_mesh_config *c = build(&f);
    assert_int_equal(c->num_ports, 0);
    assert_int_equal(c->num_endpoints, 0);
    assert_int_equal(c->default_mode, SC_MESH_PERMISSIVE);   // unset: PERMISSIVE
    assert_int_equal(c->outbound_policy, SC_MESH_ALLOW_ANY); // unset: ALLOW_ANY
    struct sockaddr_storage a = sa("10.244.0.20", 8080);
    assert_null(sc_mesh_find_endpoint(c, (struct sockaddr *)&a));
    assert_null(sc_mesh_port_rules(c, 8080));
    assert_true(sc_mesh_authorize(c, 8080, "-"));
    struct sc_route r;
    memset(&r, 0, sizeof(r));
    sc_mesh_route(c, SC_DIR_INBOUND, (struct sockaddr *)&a, &r);
    assert_int_equal(r.kind, SC_ROUTE_DETECT);
    struct sc_admin_buf b;
    sc_admin_buf_init(&b);
    sc_mesh_config_json(c, &b);
    assert_non_null(strstr(b.data, "\"inbound_ports\":[],\"endpoints\":[]"));
    sc_admin_buf_cleanup(&b);
    sc_mesh_config_unref(c);
}

static void test_detect_client_hello(void **state)
{
    static const uint8_t hello[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc};
    assert_int_equal(sc_mesh_detect_client_hello(hello, sizeof(hello)), SC_DETECT_TLS);
    for (size_t k = 0; k < 6; k++) {
        assert_int_equal(sc_mesh_detect_client_hello(hello, k), SC_DETECT_NEED_MORE);
    }
    static const uint8_t tls12_rec[] = {0x16, 0x03, 0x03, 0x00, 0x30, 0x01};
    assert_int_equal(sc_mesh_detect_client_hello(tls12_rec, 6), SC_DETECT_TLS);
    const char *http = "GET / HTTP/1.1\r\n";
    assert_int_equal(sc_mesh_detect_client_hello((const uint8_t *)http, 1), SC_DETECT_PLAIN);
    static const uint8_t server_hello[] = {0x16, 0x03, 0x03, 0x00, 0x30, 0x02};
    assert_int_equal(sc_mesh_detect_client_hello(server_hello, 6), SC_DETECT_PLAIN);
    static const uint8_t zero_len[] = {0x16, 0x03, 0x01, 0x00, 0x00, 0x01};
    assert_int_equal(sc_mesh_detect_client_hello(zero_len, 6), SC_DETECT_PLAIN);
    static const uint8_t huge[] = {0x16, 0x03, 0x01, 0xff, 0xff, 0x01};
    assert_int_equal(sc_mesh_detect_client_hello(huge, 6), SC_DETECT_PLAIN);
    static const uint8_t v2[] = {0x16, 0x02};
    assert_int_equal(sc_mesh_detect_client_hello(v2, 2), SC_DETECT_PLAIN);
    static const uint8_t minor5[] = {0x16, 0x03, 0x05};
    assert_int_equal(sc_mesh_detect_client_hello(minor5, 3), SC_DETECT_PLAIN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_fields),
        cmocka_unit_test(test_find_endpoint),
        cmocka_unit_test(test_port_modes_and_authorization),
        cmocka_unit_test(test_route_outbound),
        cmocka_unit_test(test_route_inbound),
        cmocka_unit_test(test_bad_snapshots_refused),
        cmocka_unit_test(test_refcount_and_json),
        cmocka_unit_test(test_empty_snapshot),
        cmocka_unit_test(test_detect_client_hello),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
