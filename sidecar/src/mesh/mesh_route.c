// mesh_route.c — the mesh router plugged into the proxy (sc/proxy.h): the
// routing decision for an intercepted connection from its original
// destination and the config snapshot, and inbound authorization.
#include "sc/mesh.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "sc/parse.h"

static uint16_t port_of(const struct sockaddr *sa)
{
    return ntohs(sa->sa_family == AF_INET6 ? ((const struct sockaddr_in6 *)sa)->sin6_port
                                           : ((const struct sockaddr_in *)sa)->sin_port);
}

void sc_mesh_route(const struct sc_mesh_config *cfg, enum sc_dir dir, const struct sockaddr *orig,
                   struct sc_route *out)
{
    sc_format_addr(orig, out->orig, sizeof(out->orig));
    if (cfg == NULL) {
        out->kind = SC_ROUTE_REFUSE;
        out->reason = "no_config";
        return;
    }
    uint16_t port = port_of(orig);
    if (dir == SC_DIR_OUTBOUND) {
        const struct sc_mesh_endpoint *ep = sc_mesh_find_endpoint(cfg, orig);
        memcpy(&out->target, orig, sc_addr_len(orig));
        if (ep != NULL) {
            out->kind = SC_ROUTE_MTLS;
            out->peer_id = ep->spiffe_id;
            return;
        }
        if (cfg->outbound_policy == SC_MESH_REGISTRY_ONLY) {
            out->kind = SC_ROUTE_REFUSE;
            out->reason = "registry_only";
            return;
        }
        out->kind = SC_ROUTE_PLAIN;
        return;
    }
    // Inbound: the app on the original port, from a loopback source.
    out->port = port;
    memset(&out->target, 0, sizeof(out->target));
    if (orig->sa_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&out->target;
        in6->sin6_family = AF_INET6;
        in6->sin6_addr = in6addr_loopback;
        in6->sin6_port = htons(port);
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)&out->target;
        in->sin_family = AF_INET;
        in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        in->sin_port = htons(port);
    }
    // PERMISSIVE lets plain clients through only where no allow rule
    // exists: a plain client has no identity, and once a rule exists the
    // default is deny. So a PERMISSIVE port with rules requires mTLS.
    const struct sc_mesh_port *rules = sc_mesh_port_rules(cfg, port);
    bool has_rules = rules != NULL && rules->allow.num_patterns > 0;
    out->kind = sc_mesh_port_mode(cfg, port) == SC_MESH_STRICT || has_rules ? SC_ROUTE_MTLS
                                                                            : SC_ROUTE_DETECT;
}

static void router_route(void *snap, enum sc_dir dir, int fd, struct sc_route *out)
{
    struct sockaddr_storage orig, local;
    socklen_t llen = sizeof(local);
    int r = sc_mesh_original_dst(fd, &orig);
    if (r != 0) {
        out->kind = SC_ROUTE_REFUSE;
        out->reason = "no_original_dst";
        return;
    }
    // Not redirected (someone dialed the listener itself): conntrack's
    // original destination is the listener. Forwarding it would loop.
    if (getsockname(fd, (struct sockaddr *)&local, &llen) == 0 &&
        sc_addr_equal((struct sockaddr *)&orig, (struct sockaddr *)&local)) {
        sc_format_addr((struct sockaddr *)&orig, out->orig, sizeof(out->orig));
        out->kind = SC_ROUTE_REFUSE;
        out->reason = "not_redirected";
        return;
    }
    sc_mesh_route(snap, dir, (struct sockaddr *)&orig, out);
}

static bool router_authorize(void *snap, const struct sc_route *r, const char *peer_id)
{
    return sc_mesh_authorize(snap, r->port, peer_id);
}

static void router_ref(void *snap)
{
    sc_mesh_config_ref(snap);
}

static void router_unref(void *snap)
{
    sc_mesh_config_unref(snap);
}

const struct sc_proxy_router sc_mesh_router = {
    .route = router_route,
    .authorize = router_authorize,
    .snap_ref = router_ref,
    .snap_unref = router_unref,
};
