// sc/mesh.h — mesh mode: the config snapshot as the data path uses it
// (routing of outbound connections, inbound modes and authorization), the
// original destination of an intercepted connection, and the TLS ClientHello
// detector of PERMISSIVE ports (DESIGN.md §4, issue 6).
//
// A struct sc_mesh_config is built once from a validated seam.v1.Snapshot on
// the main thread, then never changes: it is shared by reference between the
// main thread (admin /config), the workers (one reference each, published
// like the TLS snapshot) and every connection that was routed with it (one
// reference for the connection's life). So a config update applies to new
// connections at once while open ones keep the rules they started with.
#ifndef SC_MESH_H
#define SC_MESH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "sc/admin.h"
#include "sc/proxy.h"
#include "sc/spiffe.h"

struct Seam__V1__Snapshot; // seam/v1/config.pb-c.h

enum sc_mesh_mode {
    SC_MESH_STRICT = 1,     // mTLS required
    SC_MESH_PERMISSIVE = 2, // mTLS if the first bytes are a ClientHello, else plain
};

enum sc_mesh_policy {
    SC_MESH_ALLOW_ANY = 1,     // unknown destinations pass through in plain TCP
    SC_MESH_REGISTRY_ONLY = 2, // unknown destinations are refused
};

// One inbound port's rules.
struct sc_mesh_port {
    uint16_t port;
    enum sc_mesh_mode mode;
    struct sc_allowlist allow; // empty: any authenticated peer (no rule yet)
};

// One mesh endpoint (only literal IP addresses can be matched).
struct sc_mesh_endpoint {
    struct sockaddr_storage addr; // address and port
    char *spiffe_id;              // what the endpoint must present
    char *service;                // service name, for logs
};

struct sc_mesh_config {
    int refs; // atomic; use sc_mesh_config_ref / _unref
    char *version;
    enum sc_mesh_policy outbound_policy;
    enum sc_mesh_mode default_mode; // for ports without their own entry
    int64_t cert_ttl_s;             // 0: the CA's choice
    char *trust_pem;                // all roots, concatenated PEM
    size_t num_roots;
    char *trust_domain; // "" if not given
    size_t num_ports;
    struct sc_mesh_port *ports; // sorted by port
    size_t num_endpoints;
    struct sc_mesh_endpoint *endpoints; // sorted by address, then port
    size_t num_services;
    size_t num_skipped; // endpoints with a host name (not matchable)
};

// sc_mesh_config_new builds a config from |snap| (which the caller has
// validated with cc_snapshot_validate) with version |version|. Returns it
// with one reference, or NULL with a reason in |err|.
struct sc_mesh_config *sc_mesh_config_new(const struct Seam__V1__Snapshot *snap,
                                          const char *version, char *err, size_t err_cap);

// sc_mesh_config_ref takes one more reference (any thread) and returns |c|.
struct sc_mesh_config *sc_mesh_config_ref(struct sc_mesh_config *c);

// sc_mesh_config_unref drops one reference (any thread); the last one frees
// |c|. NULL is ignored.
void sc_mesh_config_unref(struct sc_mesh_config *c);

// sc_mesh_find_endpoint returns the endpoint at |addr| (address and port;
// a v4-mapped IPv6 address matches the IPv4 one), or NULL.
const struct sc_mesh_endpoint *sc_mesh_find_endpoint(const struct sc_mesh_config *c,
                                                     const struct sockaddr *addr);

// sc_mesh_port_rules returns the rules of inbound |port| or NULL if the
// port has no entry (then the default mode and no allow rule apply).
const struct sc_mesh_port *sc_mesh_port_rules(const struct sc_mesh_config *c, uint16_t port);

// sc_mesh_port_mode returns the mode in force on inbound |port|.
enum sc_mesh_mode sc_mesh_port_mode(const struct sc_mesh_config *c, uint16_t port);

// sc_mesh_authorize reports whether a peer with SPIFFE ID |peer_id| (NULL or
// "-" for a plain-text client) may reach inbound |port|: a port with allow
// rules admits only matching IDs (exact, prefix/*, namespace wildcard);
// a port without rules admits any peer (an mTLS peer has already been
// authenticated against the trust bundle).
bool sc_mesh_authorize(const struct sc_mesh_config *c, uint16_t port, const char *peer_id);

// sc_mesh_config_json appends the /config JSON object of |c| (NULL:
// {"version":null}): version, outbound policy, default mode, inbound ports,
// endpoints, trust roots count and trust domain. No key material exists here.
void sc_mesh_config_json(const struct sc_mesh_config *c, struct sc_admin_buf *out);

// sc_mesh_mode_name / sc_mesh_policy_name: "STRICT"/"PERMISSIVE",
// "ALLOW_ANY"/"REGISTRY_ONLY".
const char *sc_mesh_mode_name(enum sc_mesh_mode m);
const char *sc_mesh_policy_name(enum sc_mesh_policy p);

// sc_mesh_original_dst recovers the destination an intercepted connection
// on |fd| was addressed to before the nat REDIRECT (SO_ORIGINAL_DST, or
// IP6T_SO_ORIGINAL_DST for an IPv6 peer; a v4-mapped peer on a dual-stack
// socket uses the IPv4 option and gets an AF_INET answer). Returns 0, or a
// negative errno (-ENOENT: the connection was not redirected).
int sc_mesh_original_dst(int fd, struct sockaddr_storage *out);

// Result of sc_mesh_detect_client_hello.
enum sc_mesh_detect {
    SC_DETECT_NEED_MORE = 0, // the bytes so far could start a ClientHello
    SC_DETECT_TLS,           // a TLS handshake record holding a ClientHello
    SC_DETECT_PLAIN,         // anything else
};

// SC_MESH_DETECT_BYTES is how many bytes the detector needs at most.
#define SC_MESH_DETECT_BYTES 6

// sc_mesh_detect_client_hello classifies the first |len| bytes a client sent:
// a TLS record header (content type 22 = handshake, legacy version 3.1..3.4,
// a length of 1..2^14+2048) followed by handshake type 1 (ClientHello). Pure;
// fuzzed.
enum sc_mesh_detect sc_mesh_detect_client_hello(const uint8_t *data, size_t len);

// sc_mesh_router routes intercepted connections with a struct
// sc_mesh_config as the proxy's route snapshot (sc/proxy.h):
//   outbound: the original destination; a mesh endpoint -> SC_ROUTE_MTLS to
//     it, verifying its SPIFFE ID; anything else -> SC_ROUTE_PLAIN
//     (ALLOW_ANY) or SC_ROUTE_REFUSE (REGISTRY_ONLY). A connection that was
//     not redirected (original destination = the listener itself) is
//     refused, so nothing loops back into the sidecar.
//   inbound: the app on the original port over loopback (127.0.0.1, or ::1
//     for an IPv6 peer); STRICT -> SC_ROUTE_MTLS, PERMISSIVE ->
//     SC_ROUTE_DETECT, except on a port with allow rules (a plain client
//     could never be allowed there: SC_ROUTE_MTLS); authorize =
//     sc_mesh_authorize on the original port.
// Without a config every connection is refused.
extern const struct sc_proxy_router sc_mesh_router;

// sc_mesh_route is the routing decision alone for an original destination
// |orig| (pure; used by the router and by tests). |cfg| may be NULL.
// The inbound target's family follows |orig| (AF_INET -> 127.0.0.1).
void sc_mesh_route(const struct sc_mesh_config *cfg, enum sc_dir dir, const struct sockaddr *orig,
                   struct sc_route *out);

#endif
