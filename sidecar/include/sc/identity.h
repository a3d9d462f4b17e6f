// sc/identity.h — the identity manager: our SPIFFE certificate from the
// control plane's CA, renewed before it expires, and the trust bundle, both
// turned into immutable TLS snapshots (SSL_CTX) for the data path
// (DESIGN.md §2–§3, issue 5).
//
// Main thread only: every function here and every callback runs on the loop
// given in the config. Workers never see this object; they only get SSL_CTX
// snapshots through sc_proxy_publish_tls (see sc_identity_bind_proxy).
//
// Life of a certificate:
//   - sc_identity_start asks the CA (cc_ca_certify: new P-256 key, CSR,
//     CreateCertificate). Until the first certificate is installed the
//     manager is not ready and sc_identity_tls_ctx_new returns NULL.
//   - Renewal at 50 % of the lifetime ± 10 % jitter. Failures retry with
//     capped exponential backoff (cc/backoff.h) while the current
//     certificate keeps serving; after it expires, retries go on, the
//     manager reports not ready and listeners get SC_IDENTITY_EXPIRED.
//   - Every renewal uses a NEW key (cc_ca_certify generates one per CSR): a
//     key that leaks is only good until its certificate expires, and key
//     generation (P-256, ~0.1 ms) is negligible against the CA round trip.
//   - Each certificate is validated before install: chains to the current
//     trust bundle, exactly our SPIFFE ID (one URI SAN), our key, not a CA,
//     valid now. A refused certificate is logged and counted
//     (seam_cert_renewals_total{result="wrong_identity"|...}) and the current
//     one stays in force.
//   - A certificate issued by a root that entered the bundle less than
//     |new_root_grace_ms| ago is held back until that much time has passed,
//     so that peers reading the same bundle have picked the new root up
//     before we present a leaf chaining to it (root rotation without
//     failures).
//
// The trust bundle is a set of roots replaced as a whole
// (sc_identity_set_trust_bundle): from a file in tunnel mode, from the config
// stream in mesh mode.
#ifndef SC_IDENTITY_H
#define SC_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "sc/admin.h"
#include "sc/tls.h"

struct cc_channel;
struct sc_proxy;
struct sc_identity;

struct sc_identity_config {
    uv_loop_t *loop;               // the main loop; required
    struct cc_channel *ca_channel; // CA calls go over it (borrowed; must outlive the
                                   // manager). NULL: certificates only via
                                   // sc_identity_install_pem (tests, static files).
    const char *spiffe_id;         // our SPIFFE ID; required; copied
    int64_t cert_ttl_s;            // requested lifetime; <= 0: the CA's choice
    uint64_t call_timeout_ms;      // CreateCertificate deadline; 0: 30 s
    uint64_t retry_initial_ms;     // first retry delay after a failure; 0: 1 s
    uint64_t retry_max_ms;         // backoff cap; 0: 30 s (never above 1/5 of the lifetime
                                   // of the certificate in force)
    uint64_t new_root_grace_ms;    // see above; 0: none
    const char *trust_pem;         // initial trust bundle (PEM roots); required; copied
    size_t trust_len;
};

// sc_identity_new checks |cfg| and parses the trust bundle. Nothing runs until
// sc_identity_start. Returns NULL with a reason in |err| on bad input.
struct sc_identity *sc_identity_new(const struct sc_identity_config *cfg, char *err,
                                    size_t err_cap);

// sc_identity_start requests the first certificate (needs a ca_channel).
// Returns 0, or a negative code if there is no channel.
int sc_identity_start(struct sc_identity *id);

// sc_identity_free cancels the pending request and timers and frees |id|
// (its timers are closed on the loop: run the loop afterwards until it has no
// more handles, as on any shutdown). No listener is called after it, and it
// may be called from a listener. SSL_CTXs handed out stay valid (they are
// reference-counted). NULL is ignored.
void sc_identity_free(struct sc_identity *id);

// Events delivered to listeners, after the manager's state has changed.
enum sc_identity_event {
    SC_IDENTITY_CERT = 1,    // a new certificate is installed
    SC_IDENTITY_TRUST = 2,   // the trust bundle was replaced
    SC_IDENTITY_EXPIRED = 3, // the certificate in force expired (no renewal yet)
};

// sc_identity_listener_fn is called on the loop for each event. Typical use:
// build a new snapshot with sc_identity_tls_ctx_new and publish it. It may
// call any sc_identity_* function.
typedef void (*sc_identity_listener_fn)(struct sc_identity *id, enum sc_identity_event ev,
                                        void *arg);

// sc_identity_add_listener registers |fn|/|arg|. Returns 0 or SC_ENOMEM.
int sc_identity_add_listener(struct sc_identity *id, sc_identity_listener_fn fn, void *arg);

// sc_identity_remove_listener unregisters the pair |fn|/|arg| (no-op if
// unknown).
void sc_identity_remove_listener(struct sc_identity *id, sc_identity_listener_fn fn, void *arg);

// sc_identity_tls_ctx_new builds a new TLS snapshot (server or client per
// |opts|, see sc_tls_ctx_new_pem) from the certificate, key and trust bundle
// in force. The caller owns one reference (SSL_CTX_free). Returns NULL with a
// reason in |err| if there is no certificate yet or the build failed. Key
// material never appears in |err|.
SSL_CTX *sc_identity_tls_ctx_new(struct sc_identity *id, const struct sc_tls_opts *opts, char *err,
                                 size_t err_cap);

// sc_identity_bind_proxy publishes a new snapshot built with |opts| to
// |proxy| on every SC_IDENTITY_CERT and SC_IDENTITY_TRUST event (a failed
// build is logged and the snapshot in force stays). |opts| and what it points
// to must stay valid until sc_identity_unbind_proxy. Returns 0 or SC_ENOMEM.
int sc_identity_bind_proxy(struct sc_identity *id, struct sc_proxy *proxy,
                           const struct sc_tls_opts *opts);

// sc_identity_unbind_proxy stops publishing to |proxy|.
void sc_identity_unbind_proxy(struct sc_identity *id, struct sc_proxy *proxy);

// sc_identity_set_trust_bundle replaces the trust bundle as a whole with the
// roots in |pem| (at least one certificate). Unchanged content is a no-op
// (returns 0, no event). Otherwise listeners get SC_IDENTITY_TRUST; if the
// certificate in force no longer chains to the new bundle a renewal starts
// now. Returns 0, or a negative code with a reason in |err| (the bundle in
// force stays).
int sc_identity_set_trust_bundle(struct sc_identity *id, const char *pem, size_t len, char *err,
                                 size_t err_cap);

// sc_identity_install_pem validates and installs a certificate that did not
// come from the CA (tests; static files): |chain_pem| is leaf first (a
// trailing root is allowed), |key_pem| its key. The same checks as for a CA
// result apply (no root grace delay). Returns 0, or a negative code with a
// reason in |err| (the certificate in force stays).
int sc_identity_install_pem(struct sc_identity *id, const char *chain_pem, size_t chain_len,
                            const char *key_pem, size_t key_len, char *err, size_t err_cap);

// sc_identity_renew_now starts a renewal now unless one is in flight (used
// e.g. by SIGHUP). Needs a ca_channel.
void sc_identity_renew_now(struct sc_identity *id);

// sc_identity_ready reports whether a certificate is installed and valid
// now (notBefore <= now <= notAfter, in seconds, as peers check it).
bool sc_identity_ready(const struct sc_identity *id);

// sc_identity_spiffe_id returns our SPIFFE ID (borrowed).
const char *sc_identity_spiffe_id(const struct sc_identity *id);

// struct sc_identity_info is a summary of the state in force.
struct sc_identity_info {
    bool has_cert;
    char serial[80];    // leaf serial, hex ("" without a cert)
    int64_t not_before; // leaf validity, Unix seconds (0 without a cert)
    int64_t not_after;
    int64_t next_renewal;     // Unix seconds of the next attempt (0: none planned)
    int64_t last_renewal;     // Unix seconds of the last installed certificate (0: never)
    uint64_t renewals_ok;     // installed certificates from the CA
    uint64_t renewals_failed; // failed attempts (RPC errors and refused certificates)
    size_t trust_roots;       // roots in the bundle
    uint64_t generation;      // +1 per installed certificate or bundle change
};

// sc_identity_get_info fills |out|.
void sc_identity_get_info(const struct sc_identity *id, struct sc_identity_info *out);

// sc_identity_certs_json appends the /certs JSON object:
// {"source":"control-plane"|"static","spiffe_id":…,"ready":…,"serial":…,
//  "leaf":{…},"chain":[…],"roots":[…],"next_renewal_unix":N,
//  "last_renewal_unix":N,"renewals":{"success":N,"failed":N}} with cert
// objects as sc_admin_buf_cert_json renders them. Never key material.
// Signature fits sc_admin_hooks.certs_json (ctx = the manager).
void sc_identity_certs_json(void *id, struct sc_admin_buf *out);

// sc_identity_metrics appends the families seam_cert_expiry_timestamp_seconds
// {role,spiffe_id}, seam_cert_renewals_total{result},
// seam_cert_last_renewal_timestamp_seconds and seam_trust_bundle_roots.
// Signature fits sc_admin_hooks.extra_metrics (ctx = the manager); a caller
// with its own extra metrics calls it from its hook.
void sc_identity_metrics(void *id, struct sc_admin_buf *out);

#endif
