// tls_ctx.c — config-time TLS: build an immutable SPIFFE SSL_CTX from PEM
// (h2o src/ssl.c, HAProxy ssl_ckch.c). Runtime TLS is in tls_conn.c, the
// verifier in tls_verify.c.
#include "tls/tls_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pool.h>
#include <openssl/x509v3.h>

#include "sc/err.h"
#include "sc/muxframe.h"

// on_alpn_select picks our protocol from the client's list. A client that
// offers only others goes on without ALPN, unless the context requires it
// (then it is refused: wrong service). One that offers none never gets here.
static int on_alpn_select(SSL *ssl, const uint8_t **out, uint8_t *out_len, const uint8_t *in,
                          unsigned in_len, void *arg)
{
    const struct sc_tls_policy *p =
        SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), sc_tls__ctx_policy_index());
    if (p == NULL || p->alpn == NULL) {
        return SSL_TLSEXT_ERR_NOACK;
    }
    if (SSL_select_next_proto((uint8_t **)out, out_len, p->alpn, (unsigned)p->alpn_len, in,
                              in_len) != OPENSSL_NPN_NEGOTIATED) {
        return p->alpn_required ? SSL_TLSEXT_ERR_ALERT_FATAL : SSL_TLSEXT_ERR_NOACK;
    }
    return SSL_TLSEXT_ERR_OK;
}

static CRYPTO_BUFFER_POOL *g_cert_pool;

static void init_cert_pool(void)
{
    g_cert_pool = CRYPTO_BUFFER_POOL_new();
}

// cert_buffer_pool is one process-wide pool of certificate bytes
// (CRYPTO_BUFFER_POOL is thread-safe): every session from the same peer
// shares one copy of its certificate instead of one per connection. Never
// freed: contexts and sessions of every generation point into it.
static CRYPTO_BUFFER_POOL *cert_buffer_pool(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, init_cert_pool);
    return g_cert_pool;
}

// set_chain_and_key installs |certs| (leaf first) and |key| as DER buffers
// (the only way with TLS_with_buffers_method); BoringSSL checks that the key
// matches the leaf.
static int set_chain_and_key(SSL_CTX *ctx, STACK_OF(X509) * certs, EVP_PKEY *key, char *err,
                             size_t err_cap)
{
    size_t n = sk_X509_num(certs);
    CRYPTO_BUFFER *bufs[16];
    if (n == 0 || n > sizeof(bufs) / sizeof(bufs[0])) {
        snprintf(err, err_cap, "certificate: chain of %zu certificates (1..16 allowed)", n);
        return -1;
    }
    size_t made = 0;
    int rc = 0;
    for (; made < n; made++) {
        uint8_t *der = NULL;
        int len = i2d_X509(sk_X509_value(certs, made), &der);
        bufs[made] = len > 0 ? CRYPTO_BUFFER_new(der, (size_t)len, cert_buffer_pool()) : NULL;
        OPENSSL_free(der);
        if (bufs[made] == NULL) {
            snprintf(err, err_cap, "certificate: unusable certificate %zu", made);
            rc = -1;
            break;
        }
    }
    if (rc == 0 && !SSL_CTX_set_chain_and_key(ctx, bufs, n, key, NULL)) {
        snprintf(err, err_cap, "key does not match the certificate");
        rc = -1;
    }
    for (size_t i = 0; i < made; i++) {
        CRYPTO_BUFFER_free(bufs[i]);
    }
    return rc;
}

SSL_CTX *sc_tls_ctx_new_pem(const struct sc_tls_opts *opts, const char *cert_pem, size_t cert_len,
                            const char *key_pem, size_t key_len, const char *trust_pem,
                            size_t trust_len, char *err, size_t err_cap)
{
    SSL_CTX *ctx = NULL;
    EVP_PKEY *key = NULL;
    STACK_OF(X509) *certs = sk_X509_new_null();
    BIO *kbio = NULL;
    struct sc_tls_policy *policy = NULL;
    const char *alpn = opts->alpn != NULL ? opts->alpn : SC_TLS_ALPN_DATA;
    size_t alpn_n = strlen(alpn);

    ERR_clear_error();
    if (certs == NULL) {
        snprintf(err, err_cap, "out of memory");
        goto out_free;
    }
    if (alpn_n == 0 || alpn_n > 255) {
        snprintf(err, err_cap, "ALPN protocol must be 1..255 bytes");
        goto out_free;
    }
    if (sc_tls__load_certs(cert_pem, cert_len, certs) != 0) {
        snprintf(err, err_cap, "certificate: no valid PEM certificate");
        goto out_free;
    }
    kbio = BIO_new_mem_buf(key_pem, (int)key_len);
    key = kbio ? PEM_read_bio_PrivateKey(kbio, NULL, NULL, NULL) : NULL;
    if (key == NULL) {
        // Never echo the key file's content: only say it is unusable.
        snprintf(err, err_cap, "key: no valid PEM private key");
        goto out_free;
    }
    policy = sc_tls_policy_new(trust_pem, trust_len, opts->is_server ? NULL : opts->peer_id,
                               opts->is_server ? opts->allow : NULL, err, err_cap);
    if (policy == NULL) {
        goto out_free;
    }
    // A tunnel inbound also accepts seam-mux (many connections over one,
    // proxy/mux.c), newest version first, but only from a client that asks
    // for it; clients offer the protocols they speak.
    static const uint8_t mux_wire[] = SC_MUX_ALPN_WIRE;
    bool with_mux = opts->is_server && opts->accept_mux && strcmp(alpn, SC_TLS_ALPN_DATA) == 0;
    size_t mux_n = with_mux ? sizeof(mux_wire) - 1 : 0;
    policy->alpn = malloc(mux_n + alpn_n + 1);
    if (policy->alpn == NULL) {
        snprintf(err, err_cap, "out of memory");
        goto out_free;
    }
    if (with_mux) {
        memcpy(policy->alpn, mux_wire, mux_n);
    }
    policy->alpn[mux_n] = (uint8_t)alpn_n;
    memcpy(policy->alpn + mux_n + 1, alpn, alpn_n);
    policy->alpn_len = mux_n + alpn_n + 1;
    policy->alpn_required = opts->alpn_required;

    // TLS_with_buffers_method: BoringSSL keeps certificates as DER bytes
    // (CRYPTO_BUFFER) and never parses a peer chain into X509 objects on its
    // own; our verifier works from the bytes (tls_verify.c). Parsed X509s
    // were ~3.5 KiB of heap per held connection (massif, bench/NOTES.md §4).
    ctx = SSL_CTX_new(TLS_with_buffers_method());
    if (ctx == NULL) {
        snprintf(err, err_cap, "SSL_CTX_new failed");
        goto out_free;
    }
    SSL_CTX_set0_buffer_pool(ctx, cert_buffer_pool());
    if (!SSL_CTX_set_min_proto_version(ctx, opts->allow_tls12 ? TLS1_2_VERSION : TLS1_3_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set1_curves_list(ctx, "X25519:P-256") ||
        !SSL_CTX_set_strict_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20")) {
        snprintf(err, err_cap, "cannot set protocol parameters");
        goto out_free;
    }
    if (set_chain_and_key(ctx, certs, key, err, err_cap) != 0) {
        goto out_free;
    }
    policy->leaf = sk_X509_value(certs, 0);
    X509_up_ref(policy->leaf);
    int mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    if (opts->is_server && opts->no_client_cert) {
        mode = SSL_VERIFY_NONE;
    }
    SSL_CTX_set_custom_verify(ctx, mode, sc_tls__custom_verify);
    if (opts->is_server) {
        SSL_CTX_set_alpn_select_cb(ctx, on_alpn_select, NULL);
        // Resumption with tickets. Safe because: ticket keys are random per
        // SSL_CTX, so a new snapshot (rotation, new bundle or allow-list)
        // invalidates every ticket; a resumed session's client chain is
        // re-checked against the policy and its expiry after the handshake
        // (tls_conn.c, sc_tls__verify_resumed); and sessions live at most 1 h.
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL);
        SSL_CTX_set_num_tickets(ctx, opts->no_resumption ? 0 : 1);
        if (opts->no_resumption) {
            SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        }
        SSL_CTX_set_timeout(ctx, 3600);
        SSL_CTX_set_session_psk_dhe_timeout(ctx, 3600);
        SSL_CTX_set_session_id_context(ctx, (const uint8_t *)"seam", 4);
    } else {
        // SSL_CTX_set_alpn_protos returns 0 on success (PROTOCOLS.md §4.3).
        if (SSL_CTX_set_alpn_protos(ctx, policy->alpn, (unsigned)policy->alpn_len) != 0) {
            snprintf(err, err_cap, "cannot set ALPN");
            goto out_free;
        }
        // Resumption: sessions kept per expected peer ID (tls_verify.c); the
        // verifier runs again on resumption, so a cached session never
        // outlives the peer's certificate or the policy.
        SSL_CTX_set_reverify_on_resume(ctx, 1);
        if (opts->no_resumption) {
            SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        } else {
            SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
            SSL_CTX_sess_set_new_cb(ctx, sc_tls__on_new_session);
        }
    }
    if (!SSL_CTX_set_ex_data(ctx, sc_tls__ctx_policy_index(), policy)) {
        snprintf(err, err_cap, "cannot attach the policy");
        goto out_free;
    }
    policy = NULL; // owned by ctx now
    EVP_PKEY_free(key);
    BIO_free(kbio);
    sk_X509_pop_free(certs, X509_free);
    ERR_clear_error();
    return ctx;

out_free:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    sc_tls_policy_free(policy);
    EVP_PKEY_free(key);
    BIO_free(kbio);
    sk_X509_pop_free(certs, X509_free);
    return NULL;
}

// read_file reads a whole (small) file into a NUL-terminated heap buffer.
static char *read_file(const char *path, size_t *out_len, const char *what, char *err,
                       size_t err_cap)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, err_cap, "%s file %s: %s", what, path, strerror(errno));
        return NULL;
    }
    size_t cap = 8192, len = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0) {
            break;
        }
        if (len + 1 == cap) {
            if (cap >= (16u << 20)) {
                snprintf(err, err_cap, "%s file %s: larger than 16 MiB", what, path);
                free(buf);
                buf = NULL;
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    if (buf != NULL && ferror(f)) {
        snprintf(err, err_cap, "%s file %s: read error", what, path);
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf != NULL) {
        buf[len] = '\0';
        *out_len = len;
    } else if (err[0] == '\0') {
        snprintf(err, err_cap, "%s file %s: out of memory", what, path);
    }
    return buf;
}

SSL_CTX *sc_tls_ctx_new_files(const struct sc_tls_opts *opts, const char *cert_file,
                              const char *key_file, const char *trust_file, char *err,
                              size_t err_cap)
{
    size_t cl = 0, kl = 0, tl = 0;
    SSL_CTX *ctx = NULL;
    char msg[256] = "";
    err[0] = '\0';
    char *c = read_file(cert_file, &cl, "cert", err, err_cap);
    char *k = c ? read_file(key_file, &kl, "key", err, err_cap) : NULL;
    char *t = k ? read_file(trust_file, &tl, "trust", err, err_cap) : NULL;
    if (t != NULL) {
        ctx = sc_tls_ctx_new_pem(opts, c, cl, k, kl, t, tl, msg, sizeof(msg));
        if (ctx == NULL) {
            snprintf(err, err_cap, "%s (cert %s, key %s, trust %s)", msg, cert_file, key_file,
                     trust_file);
        }
    }
    free(c);
    if (k != NULL) {
        OPENSSL_cleanse(k, kl); // key bytes do not linger in freed memory
    }
    free(k);
    free(t);
    return ctx;
}

// ctx_leaf returns our leaf certificate of |ctx| (kept in its policy).
static X509 *ctx_leaf(const SSL_CTX *ctx)
{
    const struct sc_tls_policy *p = SSL_CTX_get_ex_data(ctx, sc_tls__ctx_policy_index());
    return p != NULL ? p->leaf : NULL;
}

int64_t sc_tls_ctx_not_after(const SSL_CTX *ctx)
{
    return sc_tls__not_after(ctx_leaf(ctx));
}

bool sc_tls_ctx_leaf_id(const SSL_CTX *ctx, char *out, size_t cap)
{
    X509 *leaf = ctx_leaf(ctx);
    if (leaf == NULL || cap == 0) {
        return false;
    }
    GENERAL_NAMES *gens = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    bool found = false;
    for (size_t i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens) && !found; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == GEN_URI) {
            const ASN1_IA5STRING *s = g->d.uniformResourceIdentifier;
            int n = ASN1_STRING_length(s);
            if (n > 0 && (size_t)n < cap) {
                memcpy(out, ASN1_STRING_get0_data(s), (size_t)n);
                out[n] = '\0';
                found = true;
            }
        }
    }
    GENERAL_NAMES_free(gens);
    return found;
}
