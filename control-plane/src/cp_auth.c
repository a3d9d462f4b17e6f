// cp_auth.c — bearer token authentication: a static token table or offline
// verification of Kubernetes service-account JWTs (RS256, ES256) against a
// JWKS file. JSON is parsed with libyaml (JSON is YAML's flow style).
#include "cp_auth.h"

#include <errno.h>
#include <openssl/base64.h>
#include <openssl/bn.h>
#include <openssl/bytestring.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/rsa.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sc/log.h"
#include "sc/spiffe.h"
#include "ytree.h"

#define CP_AUTH_FILE_MAX (4u << 20)
#define CP_JWT_MAX 16384

enum cp_auth_kind { CP_AUTH_TOKENS, CP_AUTH_JWKS };

struct cp_jwk {
    char kid[128];
    EVP_PKEY *key; // RSA or EC P-256 public key
};

struct cp_jwks {
    size_t num;
    struct cp_jwk *keys;
};

struct cp_tokens {
    size_t num;
    char **tokens;
    char **ids;
};

struct cp_auth {
    enum cp_auth_kind kind;
    char path[4096];
    char audience[256];
    char td[256];
    struct stat st;          // of the loaded file, to detect changes
    struct cp_tokens tokens; // CP_AUTH_TOKENS
    struct cp_jwks *jwks;    // CP_AUTH_JWKS
};

// b64url_decode decodes unpadded base64url into a new buffer.
static uint8_t *b64url_decode(const char *in, size_t len, size_t *out_len)
{
    if (len > CP_JWT_MAX) {
        return NULL;
    }
    size_t padded = (len + 3) / 4 * 4;
    char *std = malloc(padded + 1);
    if (std == NULL) {
        abort();
    }
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '-') {
            c = '+';
        } else if (c == '_') {
            c = '/';
        } else if (c == '+' || c == '/' || c == '=') {
            free(std);
            return NULL; // not base64url
        }
        std[i] = c;
    }
    for (size_t i = len; i < padded; i++) {
        std[i] = '=';
    }
    size_t max = 0;
    uint8_t *out = NULL;
    if (!EVP_DecodedLength(&max, padded) || (out = malloc(max + 1)) == NULL ||
        !EVP_DecodeBase64(out, out_len, max, (const uint8_t *)std, padded)) {
        free(out);
        free(std);
        return NULL;
    }
    free(std);
    out[*out_len] = '\0';
    return out;
}

static void tokens_clear(struct cp_tokens *t)
{
    for (size_t i = 0; i < t->num; i++) {
        OPENSSL_cleanse(t->tokens[i], strlen(t->tokens[i]));
        free(t->tokens[i]);
        free(t->ids[i]);
    }
    free(t->tokens);
    free(t->ids);
    memset(t, 0, sizeof(*t));
}

static int tokens_load(const char *path, struct cp_tokens *out, char *err, size_t err_cap)
{
    uint8_t *data;
    size_t len;
    char perr[256];
    int rc = cp_ytree_read_file(path, CP_AUTH_FILE_MAX, &data, &len);
    if (rc < 0) {
        snprintf(err, err_cap, "%s: %s", path, strerror(-rc));
        return -1;
    }
    struct cp_ynode *root = cp_ytree_parse(data, len, 0, perr, sizeof(perr));
    OPENSSL_cleanse(data, len);
    free(data);
    if (root == NULL) {
        snprintf(err, err_cap, "%s: %s", path, perr);
        return -1;
    }
    if (root->kind != CP_Y_MAP) {
        snprintf(err, err_cap, "%s: line %u: expected a mapping of token: spiffe-id", path,
                 root->line);
        goto out_fail;
    }
    struct cp_tokens t = {0};
    size_t pairs = root->num_items / 2;
    t.tokens = calloc(pairs + 1, sizeof(char *));
    t.ids = calloc(pairs + 1, sizeof(char *));
    if (t.tokens == NULL || t.ids == NULL) {
        abort();
    }
    for (size_t i = 0; i < pairs; i++) {
        const struct cp_ynode *k = root->items[2 * i], *v = root->items[2 * i + 1];
        const char *why = NULL;
        if (k->kind != CP_Y_SCALAR || k->len == 0 || v->kind != CP_Y_SCALAR) {
            snprintf(err, err_cap, "%s: line %u: each entry must be token: spiffe-id", path,
                     k->line);
            tokens_clear(&t);
            goto out_fail;
        }
        if (!sc_spiffe_id_valid(v->str, v->len, &why)) {
            snprintf(err, err_cap, "%s: line %u: %.200s is not a valid SPIFFE ID: %s", path,
                     v->line, v->str, why ? why : "invalid");
            tokens_clear(&t);
            goto out_fail;
        }
        t.tokens[t.num] = strdup(k->str);
        t.ids[t.num] = strdup(v->str);
        t.num++;
    }
    *out = t;
    cp_ytree_free(root);
    return 0;

out_fail:
    cp_ytree_free(root);
    return -1;
}

static EVP_PKEY *jwk_rsa(const struct cp_ynode *k)
{
    const struct cp_ynode *n = cp_ytree_get(k, "n"), *e = cp_ytree_get(k, "e");
    if (n == NULL || e == NULL || n->kind != CP_Y_SCALAR || e->kind != CP_Y_SCALAR) {
        return NULL;
    }
    size_t nl, el;
    uint8_t *nb = b64url_decode(n->str, n->len, &nl);
    uint8_t *eb = b64url_decode(e->str, e->len, &el);
    EVP_PKEY *pk = NULL;
    RSA *rsa = NULL;
    if (nb == NULL || eb == NULL) {
        goto out;
    }
    BIGNUM *bn_n = BN_bin2bn(nb, nl, NULL), *bn_e = BN_bin2bn(eb, el, NULL);
    rsa = RSA_new();
    if (rsa == NULL || bn_n == NULL || bn_e == NULL || !RSA_set0_key(rsa, bn_n, bn_e, NULL)) {
        BN_free(bn_n);
        BN_free(bn_e);
        goto out;
    }
    if (RSA_bits(rsa) < 2048) {
        goto out;
    }
    pk = EVP_PKEY_new();
    if (pk == NULL || !EVP_PKEY_set1_RSA(pk, rsa)) {
        EVP_PKEY_free(pk);
        pk = NULL;
    }
out:
    RSA_free(rsa);
    free(nb);
    free(eb);
    return pk;
}

static EVP_PKEY *jwk_ec(const struct cp_ynode *k)
{
    const struct cp_ynode *crv = cp_ytree_get(k, "crv"), *x = cp_ytree_get(k, "x"),
                          *y = cp_ytree_get(k, "y");
    if (crv == NULL || x == NULL || y == NULL || crv->kind != CP_Y_SCALAR ||
        strcmp(crv->str, "P-256") != 0 || x->kind != CP_Y_SCALAR || y->kind != CP_Y_SCALAR) {
        return NULL;
    }
    size_t xl, yl;
    uint8_t *xb = b64url_decode(x->str, x->len, &xl);
    uint8_t *yb = b64url_decode(y->str, y->len, &yl);
    EVP_PKEY *pk = NULL;
    EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    BIGNUM *bx = NULL, *by = NULL;
    if (xb == NULL || yb == NULL || xl != 32 || yl != 32 || ec == NULL) {
        goto out;
    }
    bx = BN_bin2bn(xb, xl, NULL);
    by = BN_bin2bn(yb, yl, NULL);
    if (bx == NULL || by == NULL || !EC_KEY_set_public_key_affine_coordinates(ec, bx, by)) {
        goto out;
    }
    pk = EVP_PKEY_new();
    if (pk == NULL || !EVP_PKEY_set1_EC_KEY(pk, ec)) {
        EVP_PKEY_free(pk);
        pk = NULL;
    }
out:
    ERR_clear_error();
    BN_free(bx);
    BN_free(by);
    EC_KEY_free(ec);
    free(xb);
    free(yb);
    return pk;
}

void cp_jwks_free(struct cp_jwks *k)
{
    if (k == NULL) {
        return;
    }
    for (size_t i = 0; i < k->num; i++) {
        EVP_PKEY_free(k->keys[i].key);
    }
    free(k->keys);
    free(k);
}

struct cp_jwks *cp_jwks_parse(const uint8_t *data, size_t len, char *err, size_t err_cap)
{
    char perr[256];
    struct cp_ynode *root = cp_ytree_parse(data, len, 0, perr, sizeof(perr));
    if (root == NULL) {
        snprintf(err, err_cap, "%s", perr);
        return NULL;
    }
    const struct cp_ynode *keys = cp_ytree_get(root, "keys");
    if (keys == NULL || keys->kind != CP_Y_SEQ) {
        snprintf(err, err_cap, "line %u: expected an object with a \"keys\" array", root->line);
        cp_ytree_free(root);
        return NULL;
    }
    struct cp_jwks *k = calloc(1, sizeof(*k));
    k->keys = calloc(keys->num_items + 1, sizeof(*k->keys));
    if (k == NULL || k->keys == NULL) {
        abort();
    }
    for (size_t i = 0; i < keys->num_items; i++) {
        const struct cp_ynode *jk = keys->items[i];
        const struct cp_ynode *kty = cp_ytree_get(jk, "kty"), *kid = cp_ytree_get(jk, "kid"),
                              *use = cp_ytree_get(jk, "use");
        if (kty == NULL || kty->kind != CP_Y_SCALAR) {
            snprintf(err, err_cap, "line %u: key without \"kty\"", jk->line);
            goto out_fail;
        }
        if (use != NULL && use->kind == CP_Y_SCALAR && strcmp(use->str, "sig") != 0) {
            continue; // not a signing key
        }
        EVP_PKEY *pk = NULL;
        if (strcmp(kty->str, "RSA") == 0) {
            pk = jwk_rsa(jk);
        } else if (strcmp(kty->str, "EC") == 0) {
            pk = jwk_ec(jk);
        } else {
            continue; // unsupported key types are skipped, as JWKS consumers do
        }
        if (pk == NULL) {
            snprintf(err, err_cap, "line %u: invalid %s key (RSA >= 2048 or EC P-256)", jk->line,
                     kty->str);
            goto out_fail;
        }
        struct cp_jwk *dst = &k->keys[k->num++];
        dst->key = pk;
        if (kid != NULL && kid->kind == CP_Y_SCALAR) {
            snprintf(dst->kid, sizeof(dst->kid), "%s", kid->str);
        }
    }
    if (k->num == 0) {
        snprintf(err, err_cap, "line %u: no usable RS256/ES256 key", keys->line);
        goto out_fail;
    }
    cp_ytree_free(root);
    return k;

out_fail:
    cp_ytree_free(root);
    cp_jwks_free(k);
    return NULL;
}

static bool scalar_u64(const struct cp_ynode *n, uint64_t *out)
{
    if (n == NULL || n->kind != CP_Y_SCALAR || n->quoted || n->len == 0 || n->len > 20) {
        return false;
    }
    char *end;
    errno = 0;
    double d = strtod(n->str, &end); // JSON numbers may be written as 1.7e9
    if (errno != 0 || *end != '\0' || !(d >= 0) || d > 1e18) {
        return false;
    }
    *out = (uint64_t)d;
    return true;
}

static bool aud_matches(const struct cp_ynode *aud, const char *want)
{
    if (aud == NULL) {
        return false;
    }
    if (aud->kind == CP_Y_SCALAR) {
        return strcmp(aud->str, want) == 0;
    }
    if (aud->kind == CP_Y_SEQ) {
        for (size_t i = 0; i < aud->num_items; i++) {
            if (aud->items[i]->kind == CP_Y_SCALAR && strcmp(aud->items[i]->str, want) == 0) {
                return true;
            }
        }
    }
    return false;
}

// verify_sig checks |sig| over |input| with |pk| for alg RS256 or ES256.
static bool verify_sig(EVP_PKEY *pk, bool es256, const uint8_t *input, size_t input_len,
                       const uint8_t *sig, size_t sig_len)
{
    uint8_t *der = NULL;
    size_t der_len = 0;
    bool ok = false;
    if (es256) {
        // JWS ES256 signatures are r || s (RFC 7518 §3.4); EVP wants DER.
        if (sig_len != 64) {
            return false;
        }
        ECDSA_SIG *es = ECDSA_SIG_new();
        BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
        if (es == NULL || r == NULL || s == NULL || !ECDSA_SIG_set0(es, r, s)) {
            BN_free(r);
            BN_free(s);
            ECDSA_SIG_free(es);
            return false;
        }
        int m = ECDSA_SIG_to_bytes(&der, &der_len, es);
        ECDSA_SIG_free(es);
        if (!m) {
            return false;
        }
        sig = der;
        sig_len = der_len;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md != NULL && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pk) &&
        EVP_DigestVerify(md, sig, sig_len, input, input_len) == 1) {
        ok = true;
    }
    EVP_MD_CTX_free(md);
    OPENSSL_free(der);
    ERR_clear_error();
    return ok;
}

int cp_jwt_verify(const struct cp_jwks *k, const char *jwt, size_t len, const char *audience,
                  const char *trust_domain, uint64_t now_s, char *out_id, size_t id_cap, char *why,
                  size_t why_cap)
{
    int rc = -1;
    uint8_t *hdr = NULL, *pay = NULL, *sig = NULL;
    size_t hdr_len, pay_len, sig_len;
    struct cp_ynode *h = NULL, *p = NULL;
    char perr[128];

    if (len == 0 || len > CP_JWT_MAX) {
        snprintf(why, why_cap, "token size");
        return -1;
    }
    const char *d1 = memchr(jwt, '.', len);
    const char *d2 = d1 != NULL ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - jwt)) : NULL;
    if (d2 == NULL || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - jwt)) != NULL) {
        snprintf(why, why_cap, "not a JWS compact token");
        return -1;
    }
    hdr = b64url_decode(jwt, (size_t)(d1 - jwt), &hdr_len);
    pay = b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), &pay_len);
    sig = b64url_decode(d2 + 1, len - (size_t)(d2 + 1 - jwt), &sig_len);
    if (hdr == NULL || pay == NULL || sig == NULL) {
        snprintf(why, why_cap, "bad base64url");
        goto out;
    }
    h = cp_ytree_parse(hdr, hdr_len, 64, perr, sizeof(perr));
    if (h == NULL || h->kind != CP_Y_MAP) {
        snprintf(why, why_cap, "bad header");
        goto out;
    }
    const struct cp_ynode *alg = cp_ytree_get(h, "alg"), *kid = cp_ytree_get(h, "kid");
    bool es256;
    if (alg != NULL && alg->kind == CP_Y_SCALAR && strcmp(alg->str, "RS256") == 0) {
        es256 = false;
    } else if (alg != NULL && alg->kind == CP_Y_SCALAR && strcmp(alg->str, "ES256") == 0) {
        es256 = true;
    } else {
        snprintf(why, why_cap, "unsupported alg");
        goto out;
    }
    bool verified = false;
    for (size_t i = 0; i < k->num && !verified; i++) {
        const struct cp_jwk *key = &k->keys[i];
        if (kid != NULL && kid->kind == CP_Y_SCALAR && key->kid[0] != '\0' &&
            strcmp(kid->str, key->kid) != 0) {
            continue;
        }
        if ((EVP_PKEY_id(key->key) == EVP_PKEY_EC) != es256) {
            continue;
        }
        verified =
            verify_sig(key->key, es256, (const uint8_t *)jwt, (size_t)(d2 - jwt), sig, sig_len);
    }
    if (!verified) {
        snprintf(why, why_cap, "bad signature");
        goto out;
    }
    p = cp_ytree_parse(pay, pay_len, 256, perr, sizeof(perr));
    if (p == NULL || p->kind != CP_Y_MAP) {
        snprintf(why, why_cap, "bad payload");
        goto out;
    }
    uint64_t exp, nbf;
    if (!scalar_u64(cp_ytree_get(p, "exp"), &exp)) {
        snprintf(why, why_cap, "missing exp");
        goto out;
    }
    if (now_s >= exp) {
        snprintf(why, why_cap, "expired");
        goto out;
    }
    if (scalar_u64(cp_ytree_get(p, "nbf"), &nbf) && now_s < nbf) {
        snprintf(why, why_cap, "not yet valid");
        goto out;
    }
    if (!aud_matches(cp_ytree_get(p, "aud"), audience)) {
        snprintf(why, why_cap, "wrong audience");
        goto out;
    }
    const char *ns = NULL, *sa = NULL;
    const struct cp_ynode *kio = cp_ytree_get(p, "kubernetes.io");
    const struct cp_ynode *kns = cp_ytree_get(kio, "namespace");
    const struct cp_ynode *ksa = cp_ytree_get(cp_ytree_get(kio, "serviceaccount"), "name");
    char subbuf[512];
    if (kns != NULL && ksa != NULL && kns->kind == CP_Y_SCALAR && ksa->kind == CP_Y_SCALAR) {
        ns = kns->str;
        sa = ksa->str;
    } else {
        const struct cp_ynode *sub = cp_ytree_get(p, "sub");
        static const char pfx[] = "system:serviceaccount:";
        if (sub != NULL && sub->kind == CP_Y_SCALAR && sub->len < sizeof(subbuf) &&
            strncmp(sub->str, pfx, sizeof(pfx) - 1) == 0) {
            memcpy(subbuf, sub->str + sizeof(pfx) - 1, sub->len - (sizeof(pfx) - 1) + 1);
            char *colon = strchr(subbuf, ':');
            if (colon != NULL) {
                *colon = '\0';
                ns = subbuf;
                sa = colon + 1;
            }
        }
    }
    if (ns == NULL || sa == NULL || strchr(ns, '/') != NULL || strchr(sa, '/') != NULL) {
        snprintf(why, why_cap, "no service account claims");
        goto out;
    }
    int n = snprintf(out_id, id_cap, "spiffe://%s/ns/%s/sa/%s", trust_domain, ns, sa);
    if (n < 0 || (size_t)n >= id_cap || !sc_spiffe_id_valid(out_id, (size_t)n, NULL)) {
        snprintf(why, why_cap, "service account name not usable in a SPIFFE ID");
        goto out;
    }
    rc = 0;
out:
    cp_ytree_free(h);
    cp_ytree_free(p);
    free(hdr);
    free(pay);
    free(sig);
    return rc;
}

static int jwks_load(const char *path, struct cp_jwks **out, char *err, size_t err_cap)
{
    uint8_t *data;
    size_t len;
    char perr[256];
    int rc = cp_ytree_read_file(path, CP_AUTH_FILE_MAX, &data, &len);
    if (rc < 0) {
        snprintf(err, err_cap, "%s: %s", path, strerror(-rc));
        return -1;
    }
    *out = cp_jwks_parse(data, len, perr, sizeof(perr));
    free(data);
    if (*out == NULL) {
        snprintf(err, err_cap, "%s: %s", path, perr);
        return -1;
    }
    return 0;
}

static struct cp_auth *auth_alloc(enum cp_auth_kind kind, const char *path)
{
    struct cp_auth *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        abort();
    }
    a->kind = kind;
    snprintf(a->path, sizeof(a->path), "%s", path);
    stat(path, &a->st);
    return a;
}

struct cp_auth *cp_auth_new_tokens(const char *path, char *err, size_t err_cap)
{
    struct cp_auth *a = auth_alloc(CP_AUTH_TOKENS, path);
    if (tokens_load(path, &a->tokens, err, err_cap) != 0) {
        free(a);
        return NULL;
    }
    return a;
}

struct cp_auth *cp_auth_new_jwks(const char *path, const char *audience, const char *trust_domain,
                                 char *err, size_t err_cap)
{
    struct cp_auth *a = auth_alloc(CP_AUTH_JWKS, path);
    snprintf(a->audience, sizeof(a->audience), "%s", audience);
    snprintf(a->td, sizeof(a->td), "%s", trust_domain);
    if (jwks_load(path, &a->jwks, err, err_cap) != 0) {
        free(a);
        return NULL;
    }
    return a;
}

void cp_auth_free(struct cp_auth *a)
{
    if (a == NULL) {
        return;
    }
    tokens_clear(&a->tokens);
    cp_jwks_free(a->jwks);
    free(a);
}

void cp_auth_maybe_reload(struct cp_auth *a)
{
    struct stat st;
    char err[512];
    if (stat(a->path, &st) != 0) {
        return; // a missing file keeps the old content (Kubernetes swaps symlinks)
    }
    if (st.st_mtim.tv_sec == a->st.st_mtim.tv_sec && st.st_mtim.tv_nsec == a->st.st_mtim.tv_nsec &&
        st.st_size == a->st.st_size && st.st_ino == a->st.st_ino) {
        return;
    }
    a->st = st;
    if (a->kind == CP_AUTH_TOKENS) {
        struct cp_tokens t;
        if (tokens_load(a->path, &t, err, sizeof(err)) != 0) {
            sc_warn("cp.auth_reload_failed", "file=%s error=\"%s\" kept=previous", a->path, err);
            return;
        }
        tokens_clear(&a->tokens);
        a->tokens = t;
        sc_info("cp.auth_reloaded", "file=%s tokens=%zu", a->path, t.num);
    } else {
        struct cp_jwks *k;
        if (jwks_load(a->path, &k, err, sizeof(err)) != 0) {
            sc_warn("cp.auth_reload_failed", "file=%s error=\"%s\" kept=previous", a->path, err);
            return;
        }
        cp_jwks_free(a->jwks);
        a->jwks = k;
        sc_info("cp.auth_reloaded", "file=%s keys=%zu", a->path, k->num);
    }
}

int cp_auth_check(struct cp_auth *a, const char *token, size_t len, uint64_t now_s, char *out_id,
                  size_t id_cap, char *why, size_t why_cap)
{
    if (a->kind == CP_AUTH_JWKS) {
        return cp_jwt_verify(a->jwks, token, len, a->audience, a->td, now_s, out_id, id_cap, why,
                             why_cap);
    }
    for (size_t i = 0; i < a->tokens.num; i++) {
        const char *t = a->tokens.tokens[i];
        if (strlen(t) == len && CRYPTO_memcmp(t, token, len) == 0) {
            snprintf(out_id, id_cap, "%s", a->tokens.ids[i]);
            return 0;
        }
    }
    snprintf(why, why_cap, "unknown token");
    return -1;
}
