// cp_mesh.c — mesh file parser and validator. The format is documented in
// control-plane/README.md; control-plane/examples/mesh.yaml is an example.
// Every error names the file and the line of the offending node.
#include "cp_mesh.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc/parse.h"
#include "sc/spiffe.h"
#include "ytree.h"

#define CP_MESH_MAX_NODES 200000

struct mctx {
    const char *name;
    char *err;
    size_t err_cap;
};

__attribute__((format(printf, 3, 4))) static int fail(struct mctx *c, unsigned line,
                                                      const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(c->err, c->err_cap, "%s:%u: %s", c->name, line, msg);
    return -1;
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (d == NULL) {
        abort();
    }
    return d;
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n == 0 ? 1 : n, sz);
    if (p == NULL) {
        abort();
    }
    return p;
}

void cp_mesh_free(Seam__V1__Snapshot *s)
{
    if (s == NULL) {
        return;
    }
    for (size_t i = 0; i < s->n_inbound_ports; i++) {
        Seam__V1__InboundPort *p = s->inbound_ports[i];
        for (size_t j = 0; j < p->n_allow; j++) {
            free(p->allow[j]);
        }
        free(p->allow);
        free(p);
    }
    free(s->inbound_ports);
    for (size_t i = 0; i < s->n_services; i++) {
        Seam__V1__Service *svc = s->services[i];
        for (size_t j = 0; j < svc->n_endpoints; j++) {
            free(svc->endpoints[j]->address);
            free(svc->endpoints[j]->spiffe_id);
            free(svc->endpoints[j]);
        }
        free(svc->endpoints);
        free(svc->name);
        free(svc);
    }
    free(s->services);
    free(s);
}

// check_keys fails on a key of map |m| that is not in |allowed|.
static int check_keys(struct mctx *c, const struct cp_ynode *m, const char *what,
                      const char *const *allowed)
{
    for (size_t i = 0; i + 1 < m->num_items; i += 2) {
        const struct cp_ynode *k = m->items[i];
        if (k->kind != CP_Y_SCALAR) {
            return fail(c, k->line, "%s: keys must be plain strings", what);
        }
        bool ok = false;
        for (size_t j = 0; allowed[j] != NULL; j++) {
            if (strcmp(k->str, allowed[j]) == 0) {
                ok = true;
            }
        }
        if (!ok) {
            return fail(c, k->line, "%s: unknown key \"%.64s\"", what, k->str);
        }
        for (size_t j = i + 2; j + 1 < m->num_items; j += 2) {
            if (m->items[j]->kind == CP_Y_SCALAR && strcmp(m->items[j]->str, k->str) == 0) {
                return fail(c, m->items[j]->line, "%s: duplicate key \"%.64s\"", what, k->str);
            }
        }
    }
    return 0;
}

static int get_str(struct mctx *c, const struct cp_ynode *m, const char *key, bool required,
                   const char **out)
{
    const struct cp_ynode *v = cp_ytree_get(m, key);
    *out = NULL;
    if (v == NULL) {
        return required ? fail(c, m->line, "missing \"%s\"", key) : 0;
    }
    if (v->kind != CP_Y_SCALAR || v->len == 0 || strlen(v->str) != v->len) {
        return fail(c, v->line, "\"%s\" must be a non-empty string", key);
    }
    *out = v->str;
    return 0;
}

static int get_port(struct mctx *c, const struct cp_ynode *m, const char *key, bool required,
                    uint32_t *out)
{
    const struct cp_ynode *v = cp_ytree_get(m, key);
    *out = 0;
    if (v == NULL) {
        return required ? fail(c, m->line, "missing \"%s\"", key) : 0;
    }
    char *end;
    errno = 0;
    unsigned long p = v->kind == CP_Y_SCALAR && v->len > 0 && v->str[0] >= '0' && v->str[0] <= '9'
                          ? strtoul(v->str, &end, 10)
                          : 0;
    if (v->kind != CP_Y_SCALAR || v->len == 0 || errno != 0 || p < 1 || p > 65535 || *end != '\0') {
        return fail(c, v->line, "\"%s\" must be a port number 1..65535", key);
    }
    *out = (uint32_t)p;
    return 0;
}

static int parse_endpoint(struct mctx *c, const struct cp_ynode *n, Seam__V1__Endpoint **out)
{
    static const char *const keys[] = {"address", "port", "spiffe_id", NULL};
    const char *addr, *id, *why = NULL;
    uint32_t port;
    if (n->kind != CP_Y_MAP) {
        return fail(c, n->line, "endpoint must be a mapping");
    }
    if (check_keys(c, n, "endpoint", keys) != 0 || get_str(c, n, "address", true, &addr) != 0 ||
        get_port(c, n, "port", true, &port) != 0 || get_str(c, n, "spiffe_id", true, &id) != 0) {
        return -1;
    }
    for (const char *p = addr; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '-' || *p == ':' || *p == '_') ||
            p - addr > 253) {
            return fail(c, cp_ytree_get(n, "address")->line,
                        "\"address\" must be an IP literal or a host name");
        }
    }
    if (!sc_spiffe_id_valid(id, strlen(id), &why)) {
        return fail(c, cp_ytree_get(n, "spiffe_id")->line, "invalid SPIFFE ID \"%.200s\": %s", id,
                    why ? why : "invalid");
    }
    Seam__V1__Endpoint *e = xcalloc(1, sizeof(*e));
    seam__v1__endpoint__init(e);
    e->address = xstrdup(addr);
    e->port = port;
    e->spiffe_id = xstrdup(id);
    *out = e;
    return 0;
}

static int parse_service(struct mctx *c, const struct cp_ynode *n, Seam__V1__Service **out)
{
    static const char *const keys[] = {"name", "port", "endpoints", NULL};
    const char *name;
    uint32_t port;
    if (n->kind != CP_Y_MAP) {
        return fail(c, n->line, "service must be a mapping");
    }
    if (check_keys(c, n, "service", keys) != 0 || get_str(c, n, "name", true, &name) != 0 ||
        get_port(c, n, "port", false, &port) != 0) {
        return -1;
    }
    const struct cp_ynode *eps = cp_ytree_get(n, "endpoints");
    if (eps != NULL && eps->kind != CP_Y_SEQ) {
        return fail(c, eps->line, "\"endpoints\" must be a list");
    }
    Seam__V1__Service *s = xcalloc(1, sizeof(*s));
    seam__v1__service__init(s);
    s->name = xstrdup(name);
    s->port = port;
    size_t num = eps != NULL ? eps->num_items : 0;
    s->endpoints = xcalloc(num, sizeof(*s->endpoints));
    for (size_t i = 0; i < num; i++) {
        if (parse_endpoint(c, eps->items[i], &s->endpoints[s->n_endpoints]) != 0) {
            Seam__V1__Snapshot tmp = SEAM__V1__SNAPSHOT__INIT;
            Seam__V1__Snapshot *heap = xcalloc(1, sizeof(*heap));
            *heap = tmp;
            heap->services = xcalloc(1, sizeof(*heap->services));
            heap->services[0] = s;
            heap->n_services = 1;
            cp_mesh_free(heap);
            return -1;
        }
        s->n_endpoints++;
    }
    *out = s;
    return 0;
}

static int parse_mode(struct mctx *c, const struct cp_ynode *v, Seam__V1__InboundMode *out)
{
    if (v->kind == CP_Y_SCALAR && strcmp(v->str, "STRICT") == 0) {
        *out = SEAM__V1__INBOUND_MODE__STRICT;
    } else if (v->kind == CP_Y_SCALAR && strcmp(v->str, "PERMISSIVE") == 0) {
        *out = SEAM__V1__INBOUND_MODE__PERMISSIVE;
    } else {
        return fail(c, v->line, "mode must be STRICT or PERMISSIVE");
    }
    return 0;
}

static int parse_inbound(struct mctx *c, const struct cp_ynode *n, Seam__V1__InboundPort **out)
{
    static const char *const keys[] = {"port", "mode", "allow", NULL};
    uint32_t port;
    Seam__V1__InboundMode mode = SEAM__V1__INBOUND_MODE__INBOUND_MODE_UNSPECIFIED;
    if (n->kind != CP_Y_MAP) {
        return fail(c, n->line, "inbound entry must be a mapping");
    }
    if (check_keys(c, n, "inbound", keys) != 0 || get_port(c, n, "port", true, &port) != 0) {
        return -1;
    }
    const struct cp_ynode *m = cp_ytree_get(n, "mode");
    if (m != NULL && parse_mode(c, m, &mode) != 0) {
        return -1;
    }
    const struct cp_ynode *allow = cp_ytree_get(n, "allow");
    if (allow != NULL && allow->kind != CP_Y_SEQ) {
        return fail(c, allow->line, "\"allow\" must be a list of SPIFFE IDs or prefixes");
    }
    size_t num = allow != NULL ? allow->num_items : 0;
    for (size_t i = 0; i < num; i++) {
        const struct cp_ynode *a = allow->items[i];
        const char *why = NULL;
        if (a->kind != CP_Y_SCALAR || strlen(a->str) != a->len ||
            !sc_spiffe_pattern_valid(a->str, &why)) {
            return fail(c, a->line, "invalid allow pattern \"%.200s\": %s",
                        a->kind == CP_Y_SCALAR ? a->str : "(not a string)",
                        why ? why : "not a string");
        }
    }
    Seam__V1__InboundPort *p = xcalloc(1, sizeof(*p));
    seam__v1__inbound_port__init(p);
    p->port = port;
    p->mode = mode;
    p->allow = xcalloc(num, sizeof(char *));
    for (size_t i = 0; i < num; i++) {
        p->allow[p->n_allow++] = xstrdup(allow->items[i]->str);
    }
    *out = p;
    return 0;
}

int cp_mesh_parse(const uint8_t *data, size_t len, const char *name, Seam__V1__Snapshot **out,
                  char *err, size_t err_cap)
{
    static const char *const keys[] = {
        "trust_domain", "cert_ttl", "outbound_policy", "default_inbound_mode", "services",
        "inbound",      NULL};
    struct mctx c = {.name = name, .err = err, .err_cap = err_cap};
    char perr[300];
    Seam__V1__Snapshot *s = NULL;
    struct cp_ynode *root = cp_ytree_parse(data, len, CP_MESH_MAX_NODES, perr, sizeof(perr));
    if (root == NULL) {
        snprintf(err, err_cap, "%s:%s", name, perr + (strncmp(perr, "line ", 5) == 0 ? 5 : 0));
        return -1;
    }
    if (root->kind != CP_Y_MAP) {
        fail(&c, root->line, "the mesh file must be a mapping");
        goto out_fail;
    }
    if (check_keys(&c, root, "mesh", keys) != 0) {
        goto out_fail;
    }
    s = xcalloc(1, sizeof(*s));
    seam__v1__snapshot__init(s);
    const char *td;
    if (get_str(&c, root, "trust_domain", false, &td) != 0) {
        goto out_fail;
    }
    if (td != NULL) {
        char uri[300];
        const char *why = NULL;
        snprintf(uri, sizeof(uri), "spiffe://%s/x", td);
        if (strlen(td) > 255 || !sc_spiffe_id_valid(uri, strlen(uri), &why)) {
            fail(&c, cp_ytree_get(root, "trust_domain")->line, "invalid trust domain \"%.200s\"",
                 td);
            goto out_fail;
        }
    }
    const struct cp_ynode *v = cp_ytree_get(root, "cert_ttl");
    if (v != NULL) {
        uint64_t ms;
        const char *why = NULL;
        if (v->kind != CP_Y_SCALAR || sc_parse_duration_ms(v->str, &ms, &why) != 0 || ms < 1000) {
            fail(&c, v->line, "cert_ttl must be a duration of at least 1s, like 10s, 5m or 1h");
            goto out_fail;
        }
        s->cert_ttl_seconds = (int64_t)(ms / 1000);
    }
    v = cp_ytree_get(root, "outbound_policy");
    if (v != NULL) {
        if (v->kind == CP_Y_SCALAR && strcmp(v->str, "ALLOW_ANY") == 0) {
            s->outbound_policy = SEAM__V1__OUTBOUND_POLICY__ALLOW_ANY;
        } else if (v->kind == CP_Y_SCALAR && strcmp(v->str, "REGISTRY_ONLY") == 0) {
            s->outbound_policy = SEAM__V1__OUTBOUND_POLICY__REGISTRY_ONLY;
        } else {
            fail(&c, v->line, "outbound_policy must be ALLOW_ANY or REGISTRY_ONLY");
            goto out_fail;
        }
    }
    v = cp_ytree_get(root, "default_inbound_mode");
    if (v != NULL && parse_mode(&c, v, &s->default_inbound_mode) != 0) {
        goto out_fail;
    }
    v = cp_ytree_get(root, "services");
    if (v != NULL) {
        if (v->kind != CP_Y_SEQ) {
            fail(&c, v->line, "\"services\" must be a list");
            goto out_fail;
        }
        s->services = xcalloc(v->num_items, sizeof(*s->services));
        for (size_t i = 0; i < v->num_items; i++) {
            if (parse_service(&c, v->items[i], &s->services[s->n_services]) != 0) {
                goto out_fail;
            }
            for (size_t j = 0; j < s->n_services; j++) {
                if (strcmp(s->services[j]->name, s->services[s->n_services]->name) == 0 &&
                    s->services[j]->port == s->services[s->n_services]->port) {
                    s->n_services++;
                    fail(&c, v->items[i]->line, "duplicate service \"%.200s\"",
                         s->services[j]->name);
                    goto out_fail;
                }
            }
            s->n_services++;
        }
    }
    v = cp_ytree_get(root, "inbound");
    if (v != NULL) {
        if (v->kind != CP_Y_SEQ) {
            fail(&c, v->line, "\"inbound\" must be a list");
            goto out_fail;
        }
        s->inbound_ports = xcalloc(v->num_items, sizeof(*s->inbound_ports));
        for (size_t i = 0; i < v->num_items; i++) {
            if (parse_inbound(&c, v->items[i], &s->inbound_ports[s->n_inbound_ports]) != 0) {
                goto out_fail;
            }
            for (size_t j = 0; j < s->n_inbound_ports; j++) {
                if (s->inbound_ports[j]->port == s->inbound_ports[s->n_inbound_ports]->port) {
                    s->n_inbound_ports++;
                    fail(&c, v->items[i]->line, "duplicate inbound port %u",
                         (unsigned)s->inbound_ports[j]->port);
                    goto out_fail;
                }
            }
            s->n_inbound_ports++;
        }
    }
    cp_ytree_free(root);
    *out = s;
    return 0;

out_fail:
    cp_ytree_free(root);
    cp_mesh_free(s);
    return -1;
}
