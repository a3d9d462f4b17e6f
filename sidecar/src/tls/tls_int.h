// tls_int.h — internals shared by tls_ctx.c and tls_verify.c.
#ifndef SC_TLS_INT_H
#define SC_TLS_INT_H

#include <openssl/ssl.h>
#include <uv.h>

#include "sc/tls.h"

// struct sc_tls_policy: what a context's verifier checks (sc/tls.h).
struct sc_tls_policy {
    X509_STORE *bundle;        // trust bundle
    char *peer_id;             // expected server ID (client contexts), or NULL
    struct sc_allowlist allow; // allowed client IDs (server contexts)
    bool allow_any;            // no allow-list given: any verified SVID
    uint8_t *alpn;             // ALPN wire format (length-prefixed), server select
    size_t alpn_len;
};

// sc_tls__ctx_policy_index returns the SSL_CTX ex_data index holding the
// context's struct sc_tls_policy (freed with the context).
int sc_tls__ctx_policy_index(void);

// sc_tls__custom_verify is the SPIFFE verify callback (SSL_CTX_set_custom_verify).
enum ssl_verify_result_t sc_tls__custom_verify(SSL *ssl, uint8_t *out_alert);

// sc_tls__load_certs appends every PEM certificate of |pem| to |out|.
// Returns 0, or SC_ECONFIG if there is none or one is malformed.
int sc_tls__load_certs(const char *pem, size_t len, STACK_OF(X509) *out);

#endif
