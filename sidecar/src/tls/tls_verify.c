// tls_verify.c — the SPIFFE X509-SVID verifier (PROTOCOLS.md §3) and the
// per-connection verdict it leaves on an SSL for logs and metrics.
//
// Checklist, in order, each failure mapped to one enum sc_tls_fail:
//   1. RFC 5280 path validation against the bundle with times and EKU
//      (X509_verify_cert, purpose ssl_client/ssl_server) -> unknown_ca,
//      expired, not_yet_valid (bad_svid for a wrong purpose)
//   2. leaf not a CA, keyUsage present with digitalSignature and without
//      keyCertSign/cRLSign                                 -> bad_svid
//   3. exactly one URI SAN that is a valid SPIFFE ID       -> bad_svid
//   4. authorization: expected server ID (outbound) or the allow-list
//      (inbound)                                 -> spiffe_id_mismatch / not_allowed
// Path validation runs first so that a certificate from a stranger is called
// "unknown_ca" even when its SAN is also wrong.
#include "tls/tls_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include "sc/err.h"
#include "sc/log.h"
#include "sc/tls.h"

// Per-SSL verdict (ex_data), freed with the SSL.
struct conn_info {
    bool failed;
    enum sc_tls_fail reason;
    const char *detail;
    char *expected_id;   // per-connection override of the policy's peer_id
    int64_t valid_until; // Unix s: the verified chain's earliest notAfter (0: unknown)
    char peer_id[];      // NUL-terminated, "-" if unknown
};

static int ssl_info_idx = -1;
static int ctx_policy_idx = -1;
static uv_once_t idx_once = UV_ONCE_INIT;

static void free_conn_info(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int index, long argl,
                           void *argp)
{
    struct conn_info *ci = ptr;
    if (ci != NULL) {
        free(ci->expected_id);
        free(ci);
    }
}

static void free_ctx_policy(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int index, long argl,
                            void *argp)
{
    sc_tls_policy_free(ptr);
}

static void init_indices(void)
{
    ssl_info_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, free_conn_info);
    ctx_policy_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, free_ctx_policy);
}

int sc_tls__ctx_policy_index(void)
{
    uv_once(&idx_once, init_indices);
    return ctx_policy_idx;
}

static int info_index(void)
{
    uv_once(&idx_once, init_indices);
    return ssl_info_idx;
}

// ---- errors --------------------------------------------------------------

uint32_t sc_tls_drain_errors(char *out, size_t cap)
{
    uint32_t first = 0;
    size_t off = 0;
    if (cap > 0) {
        out[0] = '\0';
    }
    uint32_t e;
    while ((e = ERR_get_error()) != 0) {
        if (first == 0) {
            first = e;
        }
        const char *rs = ERR_reason_error_string(e);
        if (off < cap) {
            int n = snprintf(out + off, cap - off, "%s%s", off ? "," : "", rs ? rs : "?");
            if (n > 0) {
                off += (size_t)n;
            }
        }
    }
    if (cap > 0 && out[0] == '\0') {
        snprintf(out, cap, "-");
    }
    return first;
}

const char *sc_tls_log_errors(const char *what)
{
    char buf[256];
    uint32_t e = sc_tls_drain_errors(buf, sizeof(buf));
    if (e == 0) {
        return "-";
    }
    sc_warn("tls.error", "op=%s errors=%s", what, buf);
    const char *rs = ERR_reason_error_string(e);
    return rs ? rs : "-";
}

// ---- policy --------------------------------------------------------------

void sc_tls_policy_free(struct sc_tls_policy *p)
{
    if (p == NULL) {
        return;
    }
    X509_STORE_free(p->bundle);
    X509_free(p->leaf);
    for (size_t i = 0; i < SC_TLS_VCACHE_SIZE; i++) {
        free(p->cache[i].id);
    }
    for (size_t i = 0; i < sizeof(p->sessions) / sizeof(p->sessions[0]); i++) {
        free(p->sessions[i].key);
        SSL_SESSION_free(p->sessions[i].sess);
    }
    uv_mutex_destroy(&p->cache_lock);
    free(p->peer_id);
    free(p->alpn);
    for (size_t i = 0; i < p->allow.num_patterns; i++) {
        free(p->allow.patterns[i]);
    }
    free(p->allow.patterns);
    free(p);
}

int sc_tls__load_certs(const char *pem, size_t len, STACK_OF(X509) * out)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (bio == NULL) {
        return SC_ENOMEM;
    }
    for (;;) {
        X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (x == NULL) {
            break;
        }
        if (!sk_X509_push(out, x)) {
            X509_free(x);
            break;
        }
    }
    // The loop ends on "no start line" at the end of input: not an error.
    uint32_t e = ERR_peek_last_error();
    if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
        ERR_clear_error();
    }
    BIO_free(bio);
    if (ERR_peek_error() != 0) {
        ERR_clear_error();
        return SC_ECONFIG;
    }
    return sk_X509_num(out) > 0 ? 0 : SC_ECONFIG;
}

struct sc_tls_policy *sc_tls_policy_new(const char *trust_pem, size_t trust_len,
                                        const char *peer_id, const struct sc_allowlist *allow,
                                        char *err, size_t err_cap)
{
    struct sc_tls_policy *p = calloc(1, sizeof(*p));
    STACK_OF(X509) *roots = sk_X509_new_null();
    if (p == NULL || roots == NULL) {
        snprintf(err, err_cap, "out of memory");
        free(p);
        sk_X509_free(roots);
        return NULL;
    }
    uv_mutex_init(&p->cache_lock);
    p->bundle = X509_STORE_new();
    if (p->bundle == NULL) {
        snprintf(err, err_cap, "out of memory");
        goto out_free;
    }
    if (sc_tls__load_certs(trust_pem, trust_len, roots) != 0) {
        snprintf(err, err_cap, "trust bundle: no valid PEM certificate");
        goto out_free;
    }
    for (size_t i = 0; i < sk_X509_num(roots); i++) {
        if (!X509_STORE_add_cert(p->bundle, sk_X509_value(roots, i))) {
            ERR_clear_error(); // duplicates are harmless
        }
    }
    if (peer_id != NULL) {
        if (!sc_spiffe_id_valid(peer_id, strlen(peer_id), NULL)) {
            snprintf(err, err_cap, "peer ID is not a valid SPIFFE ID: %s", peer_id);
            goto out_free;
        }
        p->peer_id = strdup(peer_id);
    }
    if (allow != NULL) {
        p->allow.patterns = calloc(allow->num_patterns + 1, sizeof(char *));
        if (p->allow.patterns == NULL) {
            goto out_free;
        }
        for (size_t i = 0; i < allow->num_patterns; i++) {
            p->allow.patterns[i] = strdup(allow->patterns[i]);
            p->allow.num_patterns++;
        }
    } else {
        p->allow_any = true;
    }
    sk_X509_pop_free(roots, X509_free);
    return p;

out_free:
    sk_X509_pop_free(roots, X509_free);
    sc_tls_policy_free(p);
    return NULL;
}

// ---- the checklist -------------------------------------------------------

// svid_id extracts the single URI SAN of |leaf| into |out| (or "-").
// Returns false with a static |*detail| if the leaf is not a valid SVID.
static bool svid_id(X509 *leaf, char *out, size_t cap, const char **detail)
{
    snprintf(out, cap, "-");
    GENERAL_NAMES *gens = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    int uris = 0;
    bool ok = false;
    for (size_t i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_URI) {
            continue;
        }
        uris++;
        const ASN1_IA5STRING *s = g->d.uniformResourceIdentifier;
        size_t n = (size_t)ASN1_STRING_length(s);
        const unsigned char *p = ASN1_STRING_get0_data(s);
        if (uris == 1) {
            // Keep the first URI for logs (printable bytes only).
            size_t k = 0;
            for (; k < n && k + 1 < cap; k++) {
                out[k] = (p[k] >= 0x21 && p[k] < 0x7f) ? (char)p[k] : '?';
            }
            out[k] = '\0';
            ok = n > 0 && n + 1 <= cap && memchr(p, 0, n) == NULL &&
                 sc_spiffe_id_valid((const char *)p, n, NULL);
        }
    }
    GENERAL_NAMES_free(gens);
    if (uris == 0) {
        *detail = "no URI SAN";
        snprintf(out, cap, "-");
        return false;
    }
    if (uris > 1) {
        *detail = "more than one URI SAN";
        return false;
    }
    if (!ok) {
        *detail = "URI SAN is not a valid SPIFFE ID";
        return false;
    }
    return true;
}

static enum sc_tls_fail map_x509_error(int err, const char **detail)
{
    *detail = X509_verify_cert_error_string(err);
    switch (err) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
        return SC_TLS_FAIL_EXPIRED;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return SC_TLS_FAIL_NOT_YET_VALID;
    case X509_V_ERR_INVALID_PURPOSE:
    case X509_V_ERR_INVALID_CA:
    case X509_V_ERR_PATH_LENGTH_EXCEEDED:
        return SC_TLS_FAIL_BAD_SVID;
    default:
        return SC_TLS_FAIL_UNKNOWN_CA;
    }
}

// authorize is checklist step 4 for an ID that passed steps 1-3.
static bool authorize(const struct sc_tls_policy *p, const char *id, bool peer_is_server,
                      const char *expected, enum sc_tls_fail *out_reason, const char **out_detail)
{
    if (peer_is_server) {
        if (expected != NULL && !sc_spiffe_id_equal(expected, id)) {
            *out_reason = SC_TLS_FAIL_ID_MISMATCH;
            *out_detail = "server SPIFFE ID is not the expected one";
            return false;
        }
    } else if (!p->allow_any && !sc_allowlist_match(&p->allow, id)) {
        *out_reason = SC_TLS_FAIL_NOT_ALLOWED;
        *out_detail = "client SPIFFE ID not in the allow-list";
        return false;
    }
    return true;
}

bool sc_tls_asn1_unix(const ASN1_TIME *t, int64_t *out)
{
    // Exact to the second (this BoringSSL has no ASN1_TIME_to_posix): |t|
    // minus the epoch as an ASN1_TIME.
    ASN1_TIME *epoch = ASN1_TIME_set(NULL, 0);
    int days = 0, secs = 0;
    int ok = t != NULL && epoch != NULL && ASN1_TIME_diff(&days, &secs, epoch, t);
    ASN1_TIME_free(epoch);
    if (!ok) {
        ERR_clear_error();
        return false;
    }
    *out = (int64_t)days * 86400 + secs;
    return true;
}

int64_t sc_tls__not_after(const X509 *x)
{
    int64_t t = 0;
    return x != NULL && sc_tls_asn1_unix(X509_get0_notAfter(x), &t) ? t : 0;
}

// earliest_not_after returns the earliest notAfter (Unix seconds) of the
// verified |chain|, or 0 if it cannot be computed.
static int64_t earliest_not_after(STACK_OF(X509) * chain)
{
    int64_t min = 0;
    for (size_t i = 0; chain != NULL && i < sk_X509_num(chain); i++) {
        int64_t t = sc_tls__not_after(sk_X509_value(chain, i));
        if (t == 0) {
            return 0;
        }
        if (min == 0 || t < min) {
            min = t;
        }
    }
    return min;
}

// verify_chain runs checklist steps 1-3 (path validation, leaf shape, the
// one URI SAN). On success |*out_expires| is when the verdict stops holding.
static bool verify_chain(const struct sc_tls_policy *p, X509 *leaf, STACK_OF(X509) * untrusted,
                         bool peer_is_server, int64_t now, char *idbuf, size_t id_cap,
                         int64_t *out_expires, enum sc_tls_fail *out_reason,
                         const char **out_detail)
{
    const char *detail = "-";
    enum sc_tls_fail reason = SC_TLS_FAIL_OTHER;

    // Read the ID first so every failure can name the peer in the log.
    bool id_ok = svid_id(leaf, idbuf, id_cap, &detail);

    X509_STORE_CTX *sctx = X509_STORE_CTX_new();
    if (sctx == NULL || !X509_STORE_CTX_init(sctx, p->bundle, leaf, untrusted) ||
        !X509_STORE_CTX_set_default(sctx, peer_is_server ? "ssl_server" : "ssl_client")) {
        X509_STORE_CTX_free(sctx);
        ERR_clear_error();
        reason = SC_TLS_FAIL_OTHER;
        detail = "cannot set up path validation";
        goto out_fail;
    }
    if (now != 0) {
        X509_STORE_CTX_set_time(sctx, 0, (time_t)now);
    }
    if (X509_verify_cert(sctx) != 1) {
        reason = map_x509_error(X509_STORE_CTX_get_error(sctx), &detail);
        X509_STORE_CTX_free(sctx);
        ERR_clear_error();
        goto out_fail;
    }
    *out_expires = earliest_not_after(X509_STORE_CTX_get0_chain(sctx));
    X509_STORE_CTX_free(sctx);

    uint32_t flags = X509_get_extension_flags(leaf);
    if (flags & (EXFLAG_INVALID | EXFLAG_CA)) {
        reason = SC_TLS_FAIL_BAD_SVID;
        detail = (flags & EXFLAG_CA) ? "leaf is a CA" : "invalid extensions";
        goto out_fail;
    }
    uint32_t ku = X509_get_key_usage(leaf);
    if (ku == UINT32_MAX || !(ku & KU_DIGITAL_SIGNATURE) ||
        (ku & (KU_KEY_CERT_SIGN | KU_CRL_SIGN))) {
        reason = SC_TLS_FAIL_BAD_SVID;
        detail = ku == UINT32_MAX                          ? "no keyUsage"
                 : (ku & (KU_KEY_CERT_SIGN | KU_CRL_SIGN)) ? "leaf has keyCertSign or cRLSign"
                                                           : "no digitalSignature";
        goto out_fail;
    }
    if (!id_ok) {
        reason = SC_TLS_FAIL_BAD_SVID;
        goto out_fail;
    }
    return true;

out_fail:
    *out_reason = reason;
    *out_detail = detail;
    return false;
}

bool sc_tls_verify_svid(const struct sc_tls_policy *p, X509 *leaf, STACK_OF(X509) * untrusted,
                        bool peer_is_server, int64_t now, char *out_id, size_t id_cap,
                        enum sc_tls_fail *out_reason, const char **out_detail)
{
    char idbuf[SC_SPIFFE_ID_MAX + 1];
    int64_t expires = 0;
    bool ok = verify_chain(p, leaf, untrusted, peer_is_server, now, idbuf, sizeof(idbuf), &expires,
                           out_reason, out_detail) &&
              authorize(p, idbuf, peer_is_server, p->peer_id, out_reason, out_detail);
    if (out_id != NULL) {
        snprintf(out_id, id_cap, "%s", idbuf);
    }
    return ok;
}

// ---- the verified-chain cache ---------------------------------------------

static void chain_key(const STACK_OF(CRYPTO_BUFFER) * chain, bool peer_is_server, uint8_t out[32])
{
    SHA256_CTX h;
    SHA256_Init(&h);
    uint8_t purpose = peer_is_server ? 1 : 2;
    SHA256_Update(&h, &purpose, 1);
    for (size_t i = 0; i < sk_CRYPTO_BUFFER_num(chain); i++) {
        const CRYPTO_BUFFER *b = sk_CRYPTO_BUFFER_value(chain, i);
        uint64_t len = CRYPTO_BUFFER_len(b);
        SHA256_Update(&h, &len, sizeof(len));
        SHA256_Update(&h, CRYPTO_BUFFER_data(b), CRYPTO_BUFFER_len(b));
    }
    SHA256_Final(out, &h);
}

// cache_lookup copies the ID of a still-valid cached verdict into |id|.
static bool cache_lookup(struct sc_tls_policy *p, const uint8_t key[32], int64_t now, char *id,
                         size_t cap, int64_t *out_expires)
{
    bool hit = false;
    uv_mutex_lock(&p->cache_lock);
    for (size_t i = 0; i < SC_TLS_VCACHE_SIZE; i++) {
        struct sc_tls_vcache_entry *e = &p->cache[i];
        if (e->expires > now && memcmp(e->key, key, 32) == 0) {
            snprintf(id, cap, "%s", e->id);
            *out_expires = e->expires;
            hit = true;
            break;
        }
    }
    if (hit) {
        p->cache_hits++;
    }
    uv_mutex_unlock(&p->cache_lock);
    return hit;
}

static void cache_insert(struct sc_tls_policy *p, const uint8_t key[32], int64_t expires,
                         const char *id)
{
    char *copy = strdup(id);
    if (copy == NULL || expires == 0) {
        free(copy);
        return;
    }
    uv_mutex_lock(&p->cache_lock);
    struct sc_tls_vcache_entry *e = &p->cache[p->cache_next];
    p->cache_next = (p->cache_next + 1) % SC_TLS_VCACHE_SIZE;
    free(e->id);
    memcpy(e->key, key, 32);
    e->expires = expires;
    e->id = copy;
    uv_mutex_unlock(&p->cache_lock);
}

uint64_t sc_tls__vcache_hits(const SSL_CTX *ctx)
{
    struct sc_tls_policy *p = SSL_CTX_get_ex_data(ctx, sc_tls__ctx_policy_index());
    if (p == NULL) {
        return 0;
    }
    uv_mutex_lock(&p->cache_lock);
    uint64_t n = p->cache_hits;
    uv_mutex_unlock(&p->cache_lock);
    return n;
}

// ---- the SSL hook --------------------------------------------------------

static struct conn_info *get_info(const SSL *ssl)
{
    return SSL_get_ex_data(ssl, info_index());
}

// set_info records the verdict on |ssl|, keeping a per-connection override.
static void set_info(SSL *ssl, bool failed, enum sc_tls_fail reason, const char *detail,
                     const char *peer_id, int64_t valid_until)
{
    struct conn_info *old = get_info(ssl);
    size_t n = strlen(peer_id);
    struct conn_info *ci = malloc(sizeof(*ci) + n + 1);
    if (ci == NULL) {
        return;
    }
    ci->failed = failed;
    ci->reason = reason;
    ci->detail = detail;
    ci->expected_id = NULL;
    ci->valid_until = valid_until;
    memcpy(ci->peer_id, peer_id, n + 1);
    if (old != NULL) {
        ci->expected_id = old->expected_id;
        old->expected_id = NULL;
    }
    // SSL_set_ex_data does not free the old value: do it here.
    SSL_set_ex_data(ssl, info_index(), ci);
    if (old != NULL) {
        free(old);
    }
}

int sc_tls_set_expected_peer_id(SSL *ssl, const char *id)
{
    struct conn_info *ci = get_info(ssl);
    if (ci == NULL) {
        set_info(ssl, false, SC_TLS_FAIL_OTHER, "-", "-", 0);
        ci = get_info(ssl);
        if (ci == NULL) {
            return SC_ENOMEM;
        }
    }
    free(ci->expected_id);
    ci->expected_id = strdup(id);
    return ci->expected_id ? 0 : SC_ENOMEM;
}

const char *sc_tls_peer_id(const SSL *ssl)
{
    struct conn_info *ci = ssl ? get_info(ssl) : NULL;
    return ci != NULL ? ci->peer_id : "-";
}

int64_t sc_tls_peer_valid_until(const SSL *ssl)
{
    struct conn_info *ci = ssl ? get_info(ssl) : NULL;
    if (ci != NULL && ci->valid_until != 0) {
        return ci->valid_until;
    }
    // Not verified on this connection (a client resuming a session): the
    // peer's leaf, which the session kept, bounds it.
    const STACK_OF(CRYPTO_BUFFER) *chain = ssl ? SSL_get0_peer_certificates(ssl) : NULL;
    if (chain == NULL || sk_CRYPTO_BUFFER_num(chain) == 0) {
        return 0;
    }
    X509 *leaf = X509_parse_from_buffer(sk_CRYPTO_BUFFER_value(chain, 0));
    int64_t t = sc_tls__not_after(leaf);
    ERR_clear_error();
    X509_free(leaf);
    return t;
}

bool sc_tls_verify_result(const SSL *ssl, enum sc_tls_fail *out_reason, const char **out_detail)
{
    struct conn_info *ci = get_info(ssl);
    if (ci == NULL || !ci->failed) {
        return false;
    }
    *out_reason = ci->reason;
    *out_detail = ci->detail;
    return true;
}

static uint8_t alert_for(enum sc_tls_fail r)
{
    switch (r) {
    case SC_TLS_FAIL_NO_PEER_CERT:
        return SSL_AD_CERTIFICATE_REQUIRED;
    case SC_TLS_FAIL_UNKNOWN_CA:
        return SSL_AD_UNKNOWN_CA;
    case SC_TLS_FAIL_EXPIRED:
    case SC_TLS_FAIL_NOT_YET_VALID:
        return SSL_AD_CERTIFICATE_EXPIRED;
    case SC_TLS_FAIL_NOT_ALLOWED:
    case SC_TLS_FAIL_ID_MISMATCH:
        return SSL_AD_ACCESS_DENIED;
    default:
        return SSL_AD_BAD_CERTIFICATE;
    }
}

// sc_tls__custom_verify is the SSL_CTX_set_custom_verify callback of every
// context built by tls_ctx.c. It also runs on resumption
// (SSL_CTX_set_reverify_on_resume) so a session never outlives its policy.
// check_peer runs the verifier on the peer chain of |ssl| and records the
// verdict on it. Returns true if the peer is accepted.
static bool check_peer(SSL *ssl, uint8_t *out_alert)
{
    SSL_CTX *ctx = SSL_get_SSL_CTX(ssl);
    struct sc_tls_policy *p = SSL_CTX_get_ex_data(ctx, sc_tls__ctx_policy_index());
    const STACK_OF(CRYPTO_BUFFER) *chain = SSL_get0_peer_certificates(ssl);
    enum sc_tls_fail reason = SC_TLS_FAIL_OTHER;
    const char *detail = "-";
    char id[SC_SPIFFE_ID_MAX + 1] = "-";
    X509 *leaf = NULL;
    STACK_OF(X509) *inter = NULL;
    bool ok = false;
    bool peer_is_server = !SSL_is_server(ssl);
    uint8_t key[32];
    int64_t now = (int64_t)time(NULL);
    int64_t expires = 0;

    if (p == NULL) {
        detail = "no SPIFFE policy on the context";
        goto out;
    }
    if (chain == NULL || sk_CRYPTO_BUFFER_num(chain) == 0) {
        reason = SC_TLS_FAIL_NO_PEER_CERT;
        detail = "peer sent no certificate";
        goto out;
    }
    struct conn_info *ci = get_info(ssl);
    const char *expected = (ci != NULL && ci->expected_id != NULL) ? ci->expected_id : p->peer_id;
    // The same peer presents the same chain on every connection: skip the
    // parse and the path validation when these exact bytes passed before.
    chain_key(chain, peer_is_server, key);
    if (cache_lookup(p, key, now, id, sizeof(id), &expires)) {
        ok = authorize(p, id, peer_is_server, expected, &reason, &detail);
        goto out;
    }
    leaf = X509_parse_from_buffer(sk_CRYPTO_BUFFER_value(chain, 0));
    inter = sk_X509_new_null();
    if (leaf == NULL || inter == NULL) {
        reason = SC_TLS_FAIL_BAD_SVID;
        detail = "cannot parse the peer certificate";
        goto out;
    }
    for (size_t i = 1; i < sk_CRYPTO_BUFFER_num(chain); i++) {
        X509 *x = X509_parse_from_buffer(sk_CRYPTO_BUFFER_value(chain, i));
        if (x == NULL || !sk_X509_push(inter, x)) {
            X509_free(x);
            reason = SC_TLS_FAIL_BAD_SVID;
            detail = "cannot parse an intermediate certificate";
            goto out;
        }
    }
    if (verify_chain(p, leaf, inter, peer_is_server, 0, id, sizeof(id), &expires, &reason,
                     &detail)) {
        cache_insert(p, key, expires, id);
        ok = authorize(p, id, peer_is_server, expected, &reason, &detail);
    }

out:
    ERR_clear_error();
    sk_X509_pop_free(inter, X509_free);
    X509_free(leaf);
    set_info(ssl, !ok, reason, detail, id, ok ? expires : 0);
    if (!ok) {
        *out_alert = alert_for(reason);
    }
    return ok;
}

enum ssl_verify_result_t sc_tls__custom_verify(SSL *ssl, uint8_t *out_alert)
{
    return check_peer(ssl, out_alert) ? ssl_verify_ok : ssl_verify_invalid;
}

bool sc_tls__verify_resumed(SSL *ssl)
{
    if (!SSL_is_server(ssl) || !SSL_session_reused(ssl) ||
        !(SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER)) {
        return true;
    }
    uint8_t alert = 0;
    return check_peer(ssl, &alert);
}

// ---- client session cache (resumption) ------------------------------------

static void session_key(SSL *ssl, const struct sc_tls_policy *p, char *out, size_t cap)
{
    struct conn_info *ci = get_info(ssl);
    const char *id = (ci != NULL && ci->expected_id != NULL) ? ci->expected_id : p->peer_id;
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    snprintf(out, cap, "%s|%s", id ? id : "-", sni ? sni : "-");
}

int sc_tls__on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct sc_tls_policy *p = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), sc_tls__ctx_policy_index());
    char key[SC_SPIFFE_ID_MAX + 300];
    if (p == NULL) {
        SSL_SESSION_free(sess);
        return 1;
    }
    session_key(ssl, p, key, sizeof(key));
    char *k = strdup(key);
    if (k == NULL) {
        SSL_SESSION_free(sess);
        return 1;
    }
    size_t n = sizeof(p->sessions) / sizeof(p->sessions[0]);
    uv_mutex_lock(&p->cache_lock);
    // The ring's oldest entry makes room, whatever its destination.
    size_t slot = p->sess_next;
    p->sess_next = (p->sess_next + 1) % n;
    free(p->sessions[slot].key);
    SSL_SESSION_free(p->sessions[slot].sess);
    p->sessions[slot].key = k;
    p->sessions[slot].sess = sess;
    uv_mutex_unlock(&p->cache_lock);
    return 1;
}

void sc_tls__before_handshake(SSL *ssl)
{
    if (SSL_is_server(ssl)) {
        return;
    }
    struct sc_tls_policy *p = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), sc_tls__ctx_policy_index());
    if (p == NULL) {
        return;
    }
    char key[SC_SPIFFE_ID_MAX + 300];
    session_key(ssl, p, key, sizeof(key));
    SSL_SESSION *sess = NULL;
    size_t n = sizeof(p->sessions) / sizeof(p->sessions[0]);
    uv_mutex_lock(&p->cache_lock);
    // Newest first: walk back from the slot filled last.
    for (size_t k = 1; k <= n; k++) {
        size_t i = (p->sess_next + n - k) % n;
        if (p->sessions[i].key != NULL && strcmp(p->sessions[i].key, key) == 0) {
            sess = p->sessions[i].sess;
            if (SSL_SESSION_should_be_single_use(sess)) {
                // TLS 1.3 tickets are used once: take it out of the cache.
                free(p->sessions[i].key);
                p->sessions[i].key = NULL;
                p->sessions[i].sess = NULL;
            } else {
                SSL_SESSION_up_ref(sess);
            }
            break;
        }
    }
    uv_mutex_unlock(&p->cache_lock);
    if (sess != NULL) {
        if (SSL_SESSION_is_resumable(sess)) {
            SSL_set_session(ssl, sess); // the SSL takes its own reference
        }
        SSL_SESSION_free(sess);
    }
}
