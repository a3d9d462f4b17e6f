// mesh_config.c — the immutable, reference-counted mesh config built from a
// seam.v1.Snapshot: sorted endpoints (binary search by address and port),
// sorted inbound ports, the trust bundle as one PEM string, and its /config
// JSON rendering.
#include "sc/mesh.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "seam/v1/config.pb-c.h"

static char *dup_str(const char *s)
{
    return strdup(s != NULL ? s : "");
}

static void free_config(struct sc_mesh_config *c)
{
    for (size_t i = 0; i < c->num_ports; i++) {
        for (size_t j = 0; j < c->ports[i].allow.num_patterns; j++) {
            free(c->ports[i].allow.patterns[j]);
        }
        free(c->ports[i].allow.patterns);
    }
    for (size_t i = 0; i < c->num_endpoints; i++) {
        free(c->endpoints[i].spiffe_id);
        free(c->endpoints[i].service);
    }
    free(c->ports);
    free(c->endpoints);
    free(c->trust_pem);
    free(c->trust_domain);
    free(c->version);
    free(c);
}

// addr_key normalizes |sa| into a family, 16 address bytes and a port, so
// that a v4-mapped IPv6 address compares equal to the IPv4 one.
struct addr_key {
    int family;
    uint8_t bytes[16];
    uint16_t port;
};

static bool addr_key_of(const struct sockaddr *sa, struct addr_key *k)
{
    memset(k, 0, sizeof(*k));
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        k->family = AF_INET;
        memcpy(k->bytes, &in->sin_addr, 4);
        k->port = ntohs(in->sin_port);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        k->port = ntohs(in6->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            k->family = AF_INET;
            memcpy(k->bytes, &in6->sin6_addr.s6_addr[12], 4);
        } else {
            k->family = AF_INET6;
            memcpy(k->bytes, &in6->sin6_addr, 16);
        }
        return true;
    }
    return false;
}

static int addr_key_cmp(const struct addr_key *a, const struct addr_key *b)
{
    if (a->family != b->family) {
        return a->family < b->family ? -1 : 1;
    }
    int r = memcmp(a->bytes, b->bytes, sizeof(a->bytes));
    if (r != 0) {
        return r;
    }
    return a->port == b->port ? 0 : (a->port < b->port ? -1 : 1);
}

static int endpoint_cmp(const void *pa, const void *pb)
{
    struct addr_key a, b;
    addr_key_of((const struct sockaddr *)&((const struct sc_mesh_endpoint *)pa)->addr, &a);
    addr_key_of((const struct sockaddr *)&((const struct sc_mesh_endpoint *)pb)->addr, &b);
    return addr_key_cmp(&a, &b);
}

static int port_cmp(const void *pa, const void *pb)
{
    uint16_t a = ((const struct sc_mesh_port *)pa)->port;
    uint16_t b = ((const struct sc_mesh_port *)pb)->port;
    return a == b ? 0 : (a < b ? -1 : 1);
}

static enum sc_mesh_mode mode_of(Seam__V1__InboundMode m, enum sc_mesh_mode dflt)
{
    switch (m) {
    case SEAM__V1__INBOUND_MODE__STRICT:
        return SC_MESH_STRICT;
    case SEAM__V1__INBOUND_MODE__PERMISSIVE:
        return SC_MESH_PERMISSIVE;
    default:
        return dflt;
    }
}

// parse_ip fills |out| with a literal IPv4/IPv6 address and |port|; false
// for a host name.
static bool parse_ip(const char *s, uint32_t port, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof(*out));
    struct sockaddr_in *in = (struct sockaddr_in *)out;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
    char buf[64];
    size_t n = strlen(s);
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']' && n - 2 < sizeof(buf)) {
        memcpy(buf, s + 1, n - 2);
        buf[n - 2] = '\0';
        s = buf;
    }
    if (inet_pton(AF_INET, s, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        return true;
    }
    if (inet_pton(AF_INET6, s, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        return true;
    }
    return false;
}

struct sc_mesh_config *sc_mesh_config_new(const Seam__V1__Snapshot *snap, const char *version,
                                          char *err, size_t err_cap)
{
    struct sc_mesh_config *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        snprintf(err, err_cap, "out of memory");
        return NULL;
    }
    c->refs = 1;
    c->version = dup_str(version);
    c->outbound_policy = snap->outbound_policy == SEAM__V1__OUTBOUND_POLICY__REGISTRY_ONLY
                             ? SC_MESH_REGISTRY_ONLY
                             : SC_MESH_ALLOW_ANY;
    // Unset means PERMISSIVE, Istio's default: a mesh can be adopted pod by pod.
    c->default_mode = mode_of(snap->default_inbound_mode, SC_MESH_PERMISSIVE);
    c->cert_ttl_s = snap->cert_ttl_seconds > 0 ? snap->cert_ttl_seconds : 0;

    // Trust bundle: the roots concatenated, each ending in a newline.
    size_t total = 1;
    const Seam__V1__TrustBundle *tb = snap->trust_bundle;
    for (size_t i = 0; tb != NULL && i < tb->n_roots; i++) {
        total += strlen(tb->roots[i]) + 1;
    }
    c->trust_pem = malloc(total);
    c->trust_domain = dup_str(tb != NULL ? tb->trust_domain : "");
    if (c->trust_pem == NULL || c->trust_domain == NULL || c->version == NULL) {
        goto oom;
    }
    c->trust_pem[0] = '\0';
    size_t off = 0;
    for (size_t i = 0; tb != NULL && i < tb->n_roots; i++) {
        size_t n = strlen(tb->roots[i]);
        memcpy(c->trust_pem + off, tb->roots[i], n);
        off += n;
        if (n == 0 || tb->roots[i][n - 1] != '\n') {
            c->trust_pem[off++] = '\n';
        }
        c->trust_pem[off] = '\0';
        c->num_roots++;
    }

    // Inbound ports.
    if (snap->n_inbound_ports > 0) {
        c->ports = calloc(snap->n_inbound_ports, sizeof(*c->ports));
        if (c->ports == NULL) {
            goto oom;
        }
    }
    for (size_t i = 0; i < snap->n_inbound_ports; i++) {
        const Seam__V1__InboundPort *ip = snap->inbound_ports[i];
        if (ip->port == 0 || ip->port > 65535) {
            snprintf(err, err_cap, "inbound port %u out of range", ip->port);
            goto fail;
        }
        struct sc_mesh_port *p = &c->ports[c->num_ports++];
        p->port = (uint16_t)ip->port;
        p->mode = mode_of(ip->mode, c->default_mode);
        if (ip->n_allow > 0) {
            p->allow.patterns = calloc(ip->n_allow, sizeof(char *));
            if (p->allow.patterns == NULL) {
                goto oom;
            }
        }
        for (size_t j = 0; j < ip->n_allow; j++) {
            const char *why = NULL;
            if (!sc_spiffe_pattern_valid(ip->allow[j], &why)) {
                snprintf(err, err_cap, "inbound port %u: allow \"%.200s\": %s", ip->port,
                         ip->allow[j], why ? why : "invalid");
                goto fail;
            }
            if ((p->allow.patterns[p->allow.num_patterns] = strdup(ip->allow[j])) == NULL) {
                goto oom;
            }
            p->allow.num_patterns++;
        }
    }
    if (c->num_ports > 1) { // qsort's base must not be NULL, even for 0 items
        qsort(c->ports, c->num_ports, sizeof(*c->ports), port_cmp);
    }
    for (size_t i = 1; i < c->num_ports; i++) {
        if (c->ports[i].port == c->ports[i - 1].port) {
            snprintf(err, err_cap, "inbound port %u listed twice", c->ports[i].port);
            goto fail;
        }
    }

    // Endpoints of every service.
    size_t neps = 0;
    for (size_t i = 0; i < snap->n_services; i++) {
        neps += snap->services[i]->n_endpoints;
    }
    c->num_services = snap->n_services;
    if (neps > 0) {
        c->endpoints = calloc(neps, sizeof(*c->endpoints));
        if (c->endpoints == NULL) {
            goto oom;
        }
    }
    for (size_t i = 0; i < snap->n_services; i++) {
        const Seam__V1__Service *svc = snap->services[i];
        for (size_t j = 0; j < svc->n_endpoints; j++) {
            const Seam__V1__Endpoint *ep = svc->endpoints[j];
            const char *why = NULL;
            if (ep->port == 0 || ep->port > 65535) {
                snprintf(err, err_cap, "service %.200s: endpoint port %u out of range", svc->name,
                         ep->port);
                goto fail;
            }
            if (ep->spiffe_id == NULL ||
                !sc_spiffe_id_valid(ep->spiffe_id, strlen(ep->spiffe_id), &why)) {
                snprintf(err, err_cap, "service %.200s: endpoint %.100s: spiffe_id: %s", svc->name,
                         ep->address ? ep->address : "", why ? why : "missing");
                goto fail;
            }
            struct sockaddr_storage sa;
            if (ep->address == NULL || !parse_ip(ep->address, ep->port, &sa)) {
                c->num_skipped++; // a host name: nothing to match an original destination to
                continue;
            }
            struct sc_mesh_endpoint *e = &c->endpoints[c->num_endpoints];
            e->addr = sa;
            e->spiffe_id = strdup(ep->spiffe_id);
            e->service = dup_str(svc->name);
            c->num_endpoints++;
            if (e->spiffe_id == NULL || e->service == NULL) {
                goto oom;
            }
        }
    }
    if (c->num_endpoints > 1) {
        qsort(c->endpoints, c->num_endpoints, sizeof(*c->endpoints), endpoint_cmp);
    }
    for (size_t i = 1; i < c->num_endpoints; i++) {
        if (endpoint_cmp(&c->endpoints[i], &c->endpoints[i - 1]) == 0 &&
            !sc_spiffe_id_equal(c->endpoints[i].spiffe_id, c->endpoints[i - 1].spiffe_id)) {
            char a[64];
            inet_ntop(
                c->endpoints[i].addr.ss_family,
                c->endpoints[i].addr.ss_family == AF_INET
                    ? (const void *)&((struct sockaddr_in *)&c->endpoints[i].addr)->sin_addr
                    : (const void *)&((struct sockaddr_in6 *)&c->endpoints[i].addr)->sin6_addr,
                a, sizeof(a));
            snprintf(err, err_cap, "endpoint %s port %u has two different SPIFFE IDs", a,
                     (unsigned)ntohs(((struct sockaddr_in *)&c->endpoints[i].addr)->sin_port));
            goto fail;
        }
    }
    return c;

oom:
    snprintf(err, err_cap, "out of memory");
fail:
    free_config(c);
    return NULL;
}

struct sc_mesh_config *sc_mesh_config_ref(struct sc_mesh_config *c)
{
    __atomic_fetch_add(&c->refs, 1, __ATOMIC_RELAXED);
    return c;
}

void sc_mesh_config_unref(struct sc_mesh_config *c)
{
    if (c == NULL) {
        return;
    }
    if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        free_config(c);
    }
}

const struct sc_mesh_endpoint *sc_mesh_find_endpoint(const struct sc_mesh_config *c,
                                                     const struct sockaddr *addr)
{
    struct addr_key k;
    if (c == NULL || !addr_key_of(addr, &k)) {
        return NULL;
    }
    size_t lo = 0, hi = c->num_endpoints;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        struct addr_key m;
        addr_key_of((const struct sockaddr *)&c->endpoints[mid].addr, &m);
        int r = addr_key_cmp(&k, &m);
        if (r == 0) {
            return &c->endpoints[mid];
        }
        if (r < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return NULL;
}

const struct sc_mesh_port *sc_mesh_port_rules(const struct sc_mesh_config *c, uint16_t port)
{
    if (c == NULL) {
        return NULL;
    }
    size_t lo = 0, hi = c->num_ports;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->ports[mid].port == port) {
            return &c->ports[mid];
        }
        if (port < c->ports[mid].port) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return NULL;
}

enum sc_mesh_mode sc_mesh_port_mode(const struct sc_mesh_config *c, uint16_t port)
{
    const struct sc_mesh_port *p = sc_mesh_port_rules(c, port);
    if (p != NULL) {
        return p->mode;
    }
    return c != NULL ? c->default_mode : SC_MESH_STRICT;
}

bool sc_mesh_authorize(const struct sc_mesh_config *c, uint16_t port, const char *peer_id)
{
    const struct sc_mesh_port *p = sc_mesh_port_rules(c, port);
    if (p == NULL || p->allow.num_patterns == 0) {
        return true;
    }
    if (peer_id == NULL || strcmp(peer_id, "-") == 0) {
        return false;
    }
    return sc_allowlist_match(&p->allow, peer_id);
}

const char *sc_mesh_mode_name(enum sc_mesh_mode m)
{
    return m == SC_MESH_STRICT ? "STRICT" : "PERMISSIVE";
}

const char *sc_mesh_policy_name(enum sc_mesh_policy p)
{
    return p == SC_MESH_REGISTRY_ONLY ? "REGISTRY_ONLY" : "ALLOW_ANY";
}

void sc_mesh_config_json(const struct sc_mesh_config *c, struct sc_admin_buf *out)
{
    if (c == NULL) {
        sc_admin_buf_printf(out, "{\"version\":null}");
        return;
    }
    sc_admin_buf_printf(out, "{\"version\":");
    sc_admin_buf_json_string(out, c->version);
    sc_admin_buf_printf(out, ",\"outbound_policy\":\"%s\",\"default_inbound_mode\":\"%s\"",
                        sc_mesh_policy_name(c->outbound_policy),
                        sc_mesh_mode_name(c->default_mode));
    sc_admin_buf_printf(out,
                        ",\"cert_ttl_seconds\":%lld,\"trust_domain\":", (long long)c->cert_ttl_s);
    sc_admin_buf_json_string(out, c->trust_domain);
    sc_admin_buf_printf(out, ",\"trust_roots\":%zu,\"inbound_ports\":[", c->num_roots);
    for (size_t i = 0; i < c->num_ports; i++) {
        const struct sc_mesh_port *p = &c->ports[i];
        sc_admin_buf_printf(out, "%s{\"port\":%u,\"mode\":\"%s\",\"allow\":[", i ? "," : "",
                            p->port, sc_mesh_mode_name(p->mode));
        for (size_t j = 0; j < p->allow.num_patterns; j++) {
            if (j > 0) {
                sc_admin_buf_append(out, ",", 1);
            }
            sc_admin_buf_json_string(out, p->allow.patterns[j]);
        }
        sc_admin_buf_append(out, "]}", 2);
    }
    sc_admin_buf_printf(out, "],\"endpoints\":[");
    for (size_t i = 0; i < c->num_endpoints; i++) {
        const struct sc_mesh_endpoint *e = &c->endpoints[i];
        char a[64] = "";
        uint16_t port;
        if (e->addr.ss_family == AF_INET) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)&e->addr;
            inet_ntop(AF_INET, &in->sin_addr, a, sizeof(a));
            port = ntohs(in->sin_port);
        } else {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&e->addr;
            inet_ntop(AF_INET6, &in6->sin6_addr, a, sizeof(a));
            port = ntohs(in6->sin6_port);
        }
        sc_admin_buf_printf(out, "%s{\"service\":", i ? "," : "");
        sc_admin_buf_json_string(out, e->service);
        sc_admin_buf_printf(out, ",\"address\":\"%s\",\"port\":%u,\"spiffe_id\":", a, port);
        sc_admin_buf_json_string(out, e->spiffe_id);
        sc_admin_buf_append(out, "}", 1);
    }
    sc_admin_buf_printf(out, "],\"services\":%zu,\"endpoints_skipped\":%zu}", c->num_services,
                        c->num_skipped);
}
