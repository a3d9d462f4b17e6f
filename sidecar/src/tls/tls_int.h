// tls_int.h — internals shared by tls_ctx.c and tls_verify.c.
#ifndef SC_TLS_INT_H
#define SC_TLS_INT_H

#include <openssl/ssl.h>
#include <uv.h>

#include "sc/tls.h"

// SC_TLS_VCACHE_SIZE is how many verified peer chains a policy remembers.
#define SC_TLS_VCACHE_SIZE 64
// SC_TLS_SESSION_CACHE_SIZE is how many client tickets a TLS snapshot keeps.
// TLS 1.3 tickets are single-use and each connection brings one back, so the
// ring must hold at least as many tickets as there are concurrent new
// connections to the busiest destination: with 32 slots and 50 concurrent
// connections ~12 % of them fell back to full handshakes (perf: ECDSA sign
// and verify 9.5 % of the pair's CPU in the "resumption allowed" bench).
// A session is ~1 KiB (certificates are shared through the buffer pool).
#define SC_TLS_SESSION_CACHE_SIZE 256

// A verified chain: path validation and the SVID checks passed for these
// exact certificate bytes; good until the earliest notAfter in the chain.
// Authorization is not cached (it is cheap and may differ per connection).
struct sc_tls_vcache_entry {
    uint8_t key[32]; // SHA-256 over the purpose and the DER certificates
    int64_t expires; // Unix seconds; 0 = empty slot
    char *id;        // the peer's SPIFFE ID
};

// struct sc_tls_policy: what a context's verifier checks (sc/tls.h).
struct sc_tls_policy {
    X509_STORE *bundle;        // trust bundle
    X509 *leaf;                // our own leaf (expiry, ID); the SSL_CTX holds only its bytes
    char *peer_id;             // expected server ID (client contexts), or NULL
    struct sc_allowlist allow; // allowed client IDs (server contexts)
    bool allow_any;            // no allow-list given: any verified SVID
    uint8_t *alpn;             // ALPN wire format (length-prefixed), server select
    size_t alpn_len;
    bool alpn_required;    // refuse a client that does not offer it
    uv_mutex_t cache_lock; // the policy is shared by every worker thread
    struct sc_tls_vcache_entry cache[SC_TLS_VCACHE_SIZE];
    unsigned cache_next; // round-robin replacement
    uint64_t cache_hits;
    // Client contexts: TLS sessions to resume, keyed by expected peer ID and
    // SNI. A ring of the newest tickets, several per destination: TLS 1.3
    // tickets are single-use and each connection brings one, so with
    // concurrent new connections one slot per destination would leave most
    // of them without a ticket.
    struct {
        char *key;
        SSL_SESSION *sess;
    } sessions[SC_TLS_SESSION_CACHE_SIZE];
    unsigned sess_next; // next slot to fill (oldest entry)
};

// sc_tls__on_new_session stores a session ticket the server sent (client
// contexts; SSL_CTX_sess_set_new_cb). Takes ownership: returns 1.
int sc_tls__on_new_session(SSL *ssl, SSL_SESSION *sess);

// sc_tls__before_handshake offers a stored session for resumption (client
// side) before the first handshake flight.
void sc_tls__before_handshake(SSL *ssl);

// sc_tls__verify_resumed re-checks a resumed server-side session: BoringSSL
// does not run the custom verify on the server when resuming, so the peer's
// chain (kept in the session) goes through the verifier (its cache makes this
// cheap) and the policy again. Returns true if the peer is still accepted;
// otherwise the verdict is recorded on |ssl| (sc_tls_verify_result).
bool sc_tls__verify_resumed(SSL *ssl);

// sc_tls__vcache_hits returns how many handshakes skipped chain validation
// thanks to the cache of |ctx|'s policy (tests, metrics).
uint64_t sc_tls__vcache_hits(const SSL_CTX *ctx);

// sc_tls__ctx_policy_index returns the SSL_CTX ex_data index holding the
// context's struct sc_tls_policy (freed with the context).
int sc_tls__ctx_policy_index(void);

// sc_tls__custom_verify is the SPIFFE verify callback (SSL_CTX_set_custom_verify).
enum ssl_verify_result_t sc_tls__custom_verify(SSL *ssl, uint8_t *out_alert);

// sc_tls__not_after returns |x|'s notAfter in Unix seconds, or 0 if |x| is
// NULL or its time cannot be read.
int64_t sc_tls__not_after(const X509 *x);

// sc_tls__load_certs appends every PEM certificate of |pem| to |out|.
// Returns 0, or SC_ECONFIG if there is none or one is malformed.
int sc_tls__load_certs(const char *pem, size_t len, STACK_OF(X509) * out);

#endif
