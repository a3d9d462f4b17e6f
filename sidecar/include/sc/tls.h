// sc/tls.h — config-time TLS: SPIFFE SSL_CTXs, the SVID verifier, and the
// per-connection results the verifier leaves on an SSL.
//
// A TLS configuration is an SSL_CTX: immutable once built, shared by
// reference (SSL_CTX_up_ref / SSL_CTX_free). Each SSL_new takes its own
// reference, so a connection keeps the configuration it started with while a
// rotation publishes a new one. The SPIFFE policy (trust bundle, expected
// peer ID, allow-list) hangs off the SSL_CTX and dies with it.
#ifndef SC_TLS_H
#define SC_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "sc/spiffe.h"
#include "sc/stats.h"

// SC_TLS_ALPN_DATA is the ALPN protocol of the sidecar-to-sidecar data path.
#define SC_TLS_ALPN_DATA "seam"

struct sc_tls_opts {
    bool is_server;      // server context (inbound) or client (outbound)
    const char *peer_id; // client: the server's ID must equal it (NULL: any valid SVID)
    const struct sc_allowlist *allow; // server: client IDs allowed (NULL: any valid SVID); copied
    const char *alpn;                 // one protocol ("seam", "h2"); NULL: SC_TLS_ALPN_DATA.
                                      // A server selects it when the client offers it; clients
                                      // that offer none or others are accepted without ALPN
                                      // (a TCP tunnel carries any protocol) unless alpn_required.
    bool alpn_required;               // server: refuse clients that do not offer |alpn| (gRPC)
    bool accept_mux;                  // server with the data ALPN: also select seam-mux for a
                                      // client that offers it (tunnel inbound; docs/MUX.md)
    bool allow_tls12;                 // also accept TLS 1.2 (default: TLS 1.3 only)
    bool no_client_cert; // server: do not request a client certificate (gRPC CA server)
    bool no_resumption;  // no session resumption: the server issues no tickets,
                         // the client keeps no sessions (every handshake is full)
};

// sc_tls_ctx_new_pem builds an SSL_CTX from PEM text: |cert_pem| (leaf first,
// then intermediates), |key_pem| (the leaf's private key) and |trust_pem|
// (one or more CA certificates: the bundle). TLS 1.3 only unless allowed,
// groups X25519:P-256, ALPN per |opts|, peer certificate required (server:
// unless no_client_cert), SPIFFE verification (PROTOCOLS.md §3) on every
// handshake and resumption. Checks that the key matches the leaf. Returns a
// new SSL_CTX (caller owns one reference) or NULL with a reason in |err|.
// Key material never appears in |err|.
SSL_CTX *sc_tls_ctx_new_pem(const struct sc_tls_opts *opts, const char *cert_pem, size_t cert_len,
                            const char *key_pem, size_t key_len, const char *trust_pem,
                            size_t trust_len, char *err, size_t err_cap);

// sc_tls_ctx_new_files is sc_tls_ctx_new_pem reading the three files.
SSL_CTX *sc_tls_ctx_new_files(const struct sc_tls_opts *opts, const char *cert_file,
                              const char *key_file, const char *trust_file, char *err,
                              size_t err_cap);

// sc_tls_ctx_not_after returns the leaf certificate's notAfter of |ctx| as
// Unix seconds, or 0 if unknown.
int64_t sc_tls_ctx_not_after(const SSL_CTX *ctx);

// sc_tls_ctx_leaf_id copies the SPIFFE ID of |ctx|'s own leaf into |out|.
bool sc_tls_ctx_leaf_id(const SSL_CTX *ctx, char *out, size_t cap);

// struct sc_tls_policy is what the verifier checks a peer against: the trust
// bundle and the authorization rule. Immutable after sc_tls_policy_new.
struct sc_tls_policy;

// sc_tls_policy_new parses |trust_pem| into a bundle and copies |peer_id| and
// |allow| (either may be NULL). Returns NULL with a reason in |err|.
struct sc_tls_policy *sc_tls_policy_new(const char *trust_pem, size_t trust_len,
                                        const char *peer_id, const struct sc_allowlist *allow,
                                        char *err, size_t err_cap);

// sc_tls_policy_free releases |p|. NULL is ignored.
void sc_tls_policy_free(struct sc_tls_policy *p);

// sc_tls_verify_svid runs the SPIFFE X509-SVID verifier checklist on |leaf|
// plus the |untrusted| intermediates (may be NULL): path validation against
// the bundle with times and EKU (|peer_is_server| picks ssl_server or
// ssl_client), leaf not a CA and no keyCertSign/cRLSign, exactly one URI SAN
// that is a valid SPIFFE ID, then authorization (peer_id equality or the
// allow-list). |now| is Unix seconds (0: the current time). On success it
// returns true and copies the ID to |out_id| (if not NULL). On failure it
// returns false with |*out_reason| and a static |*out_detail|; |out_id| then
// holds the peer's ID if one could be read, else "-".
bool sc_tls_verify_svid(const struct sc_tls_policy *p, X509 *leaf, STACK_OF(X509) * untrusted,
                        bool peer_is_server, int64_t now, char *out_id, size_t id_cap,
                        enum sc_tls_fail *out_reason, const char **out_detail);

// sc_tls_peer_id returns the peer's SPIFFE ID seen by the verifier on |ssl|
// (valid while |ssl| lives), or "-" if none.
const char *sc_tls_peer_id(const SSL *ssl);

// sc_tls_asn1_unix converts |t| (a certificate's notBefore or notAfter) to
// Unix seconds in |*out|; false if |t| is NULL or unreadable.
bool sc_tls_asn1_unix(const ASN1_TIME *t, int64_t *out);

// sc_tls_peer_valid_until returns when the verdict on |ssl|'s peer stops
// holding, in Unix seconds: the earliest notAfter of the peer's verified
// chain (of its leaf alone if this connection resumed without verifying), or
// 0 if unknown. A connection that outlives it carries no new work (seam-mux
// streams).
int64_t sc_tls_peer_valid_until(const SSL *ssl);

// sc_tls_verify_result reports whether the verifier refused the peer of
// |ssl|, and if so why (|*out_reason|, static |*out_detail|).
bool sc_tls_verify_result(const SSL *ssl, enum sc_tls_fail *out_reason, const char **out_detail);

// sc_tls_set_expected_peer_id overrides, for one connection, the ID the
// server must present (client side). Call before the handshake progresses
// (right after sc_stream_start_tls). Returns 0 or SC_ENOMEM.
int sc_tls_set_expected_peer_id(SSL *ssl, const char *id);

// sc_tls_log_errors drains BoringSSL's error queue into one log line tagged
// |what| and returns the first error's reason string (static) or "-".
const char *sc_tls_log_errors(const char *what);

// sc_tls_drain_errors empties BoringSSL's error queue into |out| without
// logging and returns the packed code of the first error (0 if none).
uint32_t sc_tls_drain_errors(char *out, size_t cap);

#endif
