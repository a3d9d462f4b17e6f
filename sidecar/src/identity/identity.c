// identity.c — the identity manager (sc/identity.h): our certificate from the
// CA, renewed at 50 % ± 10 % of its lifetime, validated before install, and
// the trust bundle; listeners turn both into SSL_CTX snapshots.
//
// Everything runs on the main loop. Three timers: |renew| (next CA request or
// retry), |expiry| (the certificate in force runs out) and |hold| (a
// certificate held back for the new-root grace period). A CA request in
// flight cannot be cancelled (cc_ca_certify), so it carries a small
// |struct pending| that the manager detaches from when it is freed.
#include "sc/identity.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/digest.h>
#include <openssl/err.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "cc/backoff.h"
#include "cc/ca_client.h"
#include "sc/err.h"
#include "sc/log.h"
#include "sc/proxy.h"
#include "sc/spiffe.h"

#define SC_ID_RESULTS (CC_CA_LOCAL + 1) // index 0 = success, else enum cc_ca_error

struct listener {
    sc_identity_listener_fn fn;
    void *arg;
};

struct binding {
    struct sc_identity *id;
    struct sc_proxy *proxy;
    const struct sc_tls_opts *opts;
};

// When a root was first seen in the bundle (monotonic ms; 0 = from the start).
struct root_seen {
    uint8_t fp[32];
    uint64_t first_seen_ms;
};

// One CA request in flight. |id| is NULL once the manager is gone.
struct pending {
    struct sc_identity *id;
    X509_STORE *store; // own reference, lent to cc_ca_certify
};

// A certificate (leaf + intermediates, root stripped) with its key.
struct cert {
    EVP_PKEY *key;
    STACK_OF(X509) * chain;
    char *chain_pem;
    char serial[80];
    int64_t not_before;
    int64_t not_after;
};

struct sc_identity {
    uv_loop_t *loop;
    struct cc_channel *ch;
    char *spiffe_id;
    int64_t ttl_s;
    uint64_t call_timeout_ms;
    uint64_t grace_ms;
    struct cc_backoff backoff;
    uint64_t rng;

    // Trust bundle.
    char *trust_pem;
    size_t trust_len;
    X509_STORE *store;
    STACK_OF(X509) * roots;
    struct root_seen *seen;
    size_t num_seen;

    // Certificate in force, and one held back for the root grace period.
    struct cert cur;
    struct cert held;
    bool have_cur;
    bool have_held;
    bool cur_from_ca;
    bool expired_reported;

    uv_timer_t renew;
    uv_timer_t expiry;
    uv_timer_t hold;
    int open_handles;
    struct pending *inflight;

    struct listener *listeners;
    size_t num_listeners;
    struct binding **bindings;
    size_t num_bindings;

    uint64_t results[SC_ID_RESULTS];
    uint64_t renewals_failed;
    int64_t last_renewal;
    int64_t next_renewal;
    uint64_t generation;
    uint64_t retry_max_ms; // configured backoff cap
    bool freed;            // sc_identity_free ran (maybe from a listener)
};

static uint64_t mono_ms(void)
{
    return uv_hrtime() / 1000000u;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double rand_unit(struct sc_identity *id)
{
    uint64_t x = id->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    id->rng = x;
    return (double)(x >> 11) / 9007199254740992.0; // [0, 1)
}

// asn1_unix is |t| in Unix seconds, 0 if unreadable.
static int64_t asn1_unix(const ASN1_TIME *t)
{
    int64_t v = 0;
    return sc_tls_asn1_unix(t, &v) ? v : 0;
}

static void cert_clear(struct cert *c)
{
    EVP_PKEY_free(c->key);
    sk_X509_pop_free(c->chain, X509_free);
    free(c->chain_pem);
    memset(c, 0, sizeof(*c));
}

static char *certs_to_pem(STACK_OF(X509) * certs)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *out = NULL;
    const uint8_t *data;
    size_t len;
    if (b == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < sk_X509_num(certs); i++) {
        if (!PEM_write_bio_X509(b, sk_X509_value(certs, i))) {
            goto out_free;
        }
    }
    if (BIO_mem_contents(b, &data, &len) && (out = malloc(len + 1)) != NULL) {
        memcpy(out, data, len);
        out[len] = '\0';
    }
out_free:
    BIO_free(b);
    return out;
}

// parse_certs reads every PEM certificate of |pem| into a new stack (NULL if
// none).
static STACK_OF(X509) * parse_certs(const char *pem, size_t len)
{
    STACK_OF(X509) *out = sk_X509_new_null();
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    X509 *x;
    while (out != NULL && b != NULL && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_push(out, x)) {
            X509_free(x);
            break;
        }
    }
    ERR_clear_error();
    BIO_free(b);
    if (out != NULL && sk_X509_num(out) == 0) {
        sk_X509_free(out);
        out = NULL;
    }
    return out;
}

static void fingerprint(X509 *x, uint8_t out[32])
{
    unsigned int n = 32;
    if (!X509_digest(x, EVP_sha256(), out, &n)) {
        memset(out, 0, 32);
    }
}

static uint64_t root_first_seen(const struct sc_identity *id, X509 *root)
{
    uint8_t fp[32];
    fingerprint(root, fp);
    for (size_t i = 0; i < id->num_seen; i++) {
        if (memcmp(id->seen[i].fp, fp, 32) == 0) {
            return id->seen[i].first_seen_ms;
        }
    }
    return mono_ms(); // not in the bundle: as new as it gets
}

// anchor_of returns (a new reference to) the trust anchor |chain| verifies to
// under |store|, or NULL.
static X509 *anchor_of(X509_STORE *store, STACK_OF(X509) * chain)
{
    X509 *anchor = NULL;
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    for (size_t i = 1; untrusted != NULL && i < sk_X509_num(chain); i++) {
        sk_X509_push(untrusted, sk_X509_value(chain, i));
    }
    if (untrusted != NULL && ctx != NULL &&
        X509_STORE_CTX_init(ctx, store, sk_X509_value(chain, 0), untrusted) &&
        X509_verify_cert(ctx) == 1) {
        STACK_OF(X509) *path = X509_STORE_CTX_get0_chain(ctx);
        if (path != NULL && sk_X509_num(path) > 0) {
            anchor = sk_X509_value(path, sk_X509_num(path) - 1);
            X509_up_ref(anchor);
        }
    }
    X509_STORE_CTX_free(ctx);
    sk_X509_free(untrusted);
    ERR_clear_error();
    return anchor;
}

/* ---- listeners ------------------------------------------------------------ */

static void notify(struct sc_identity *id, enum sc_identity_event ev)
{
    // Listeners may add or remove listeners: iterate over a copy.
    size_t n = id->num_listeners;
    if (n == 0) {
        return;
    }
    struct listener *copy = malloc(n * sizeof(*copy));
    if (copy == NULL) {
        sc_error("identity.notify_failed", "out of memory");
        return;
    }
    memcpy(copy, id->listeners, n * sizeof(*copy));
    for (size_t i = 0; i < n && !id->freed; i++) {
        copy[i].fn(id, ev, copy[i].arg);
    }
    free(copy);
}

int sc_identity_add_listener(struct sc_identity *id, sc_identity_listener_fn fn, void *arg)
{
    struct listener *l = realloc(id->listeners, (id->num_listeners + 1) * sizeof(*l));
    if (l == NULL) {
        return SC_ENOMEM;
    }
    id->listeners = l;
    l[id->num_listeners].fn = fn;
    l[id->num_listeners].arg = arg;
    id->num_listeners++;
    return 0;
}

void sc_identity_remove_listener(struct sc_identity *id, sc_identity_listener_fn fn, void *arg)
{
    for (size_t i = 0; i < id->num_listeners; i++) {
        if (id->listeners[i].fn == fn && id->listeners[i].arg == arg) {
            memmove(&id->listeners[i], &id->listeners[i + 1],
                    (id->num_listeners - i - 1) * sizeof(id->listeners[0]));
            id->num_listeners--;
            return;
        }
    }
}

SSL_CTX *sc_identity_tls_ctx_new(struct sc_identity *id, const struct sc_tls_opts *opts, char *err,
                                 size_t err_cap)
{
    if (!id->have_cur) {
        snprintf(err, err_cap, "no certificate yet for %s", id->spiffe_id);
        return NULL;
    }
    char *key_pem = cc_ca_key_pem(id->cur.key);
    if (key_pem == NULL) {
        snprintf(err, err_cap, "cannot encode the private key");
        return NULL;
    }
    size_t key_len = strlen(key_pem);
    SSL_CTX *ctx = sc_tls_ctx_new_pem(opts, id->cur.chain_pem, strlen(id->cur.chain_pem), key_pem,
                                      key_len, id->trust_pem, id->trust_len, err, err_cap);
    OPENSSL_cleanse(key_pem, key_len);
    free(key_pem);
    return ctx;
}

static void binding_event(struct sc_identity *id, enum sc_identity_event ev, void *arg)
{
    struct binding *b = arg;
    if (ev != SC_IDENTITY_CERT && ev != SC_IDENTITY_TRUST) {
        return;
    }
    char err[512];
    SSL_CTX *ctx = sc_identity_tls_ctx_new(id, b->opts, err, sizeof(err));
    if (ctx == NULL) {
        sc_error("identity.publish_failed", "id=%s error=%s (keeping the snapshot in force)",
                 id->spiffe_id, err);
        return;
    }
    sc_proxy_publish_tls(b->proxy, ctx);
    sc_debug("identity.published", "id=%s serial=%s generation=%llu", id->spiffe_id, id->cur.serial,
             (unsigned long long)id->generation);
    SSL_CTX_free(ctx);
}

int sc_identity_bind_proxy(struct sc_identity *id, struct sc_proxy *proxy,
                           const struct sc_tls_opts *opts)
{
    struct binding *b = calloc(1, sizeof(*b));
    struct binding **arr = realloc(id->bindings, (id->num_bindings + 1) * sizeof(*arr));
    if (b == NULL || arr == NULL) {
        free(b);
        if (arr != NULL) {
            id->bindings = arr;
        }
        return SC_ENOMEM;
    }
    id->bindings = arr;
    b->id = id;
    b->proxy = proxy;
    b->opts = opts;
    if (sc_identity_add_listener(id, binding_event, b) != 0) {
        free(b);
        return SC_ENOMEM;
    }
    arr[id->num_bindings++] = b;
    return 0;
}

void sc_identity_unbind_proxy(struct sc_identity *id, struct sc_proxy *proxy)
{
    for (size_t i = 0; i < id->num_bindings; i++) {
        struct binding *b = id->bindings[i];
        if (b->proxy == proxy) {
            sc_identity_remove_listener(id, binding_event, b);
            free(b);
            memmove(&id->bindings[i], &id->bindings[i + 1],
                    (id->num_bindings - i - 1) * sizeof(id->bindings[0]));
            id->num_bindings--;
            return;
        }
    }
}

/* ---- renewal schedule ----------------------------------------------------- */

static void start_request(struct sc_identity *id);

static void on_renew_timer(uv_timer_t *t)
{
    start_request(t->data);
}

static void schedule_in(struct sc_identity *id, uint64_t delay_ms)
{
    id->next_renewal = (wall_ms() + (int64_t)delay_ms) / 1000;
    uv_timer_start(&id->renew, on_renew_timer, delay_ms, 0);
}

// schedule_renewal plans the next request at 50 % ± 10 % of the lifetime of
// the certificate in force.
static void schedule_renewal(struct sc_identity *id)
{
    if (id->ch == NULL || !id->have_cur) {
        return;
    }
    int64_t nb = id->cur.not_before * 1000, na = id->cur.not_after * 1000;
    double frac = 0.4 + 0.2 * rand_unit(id);
    int64_t at = nb + (int64_t)((double)(na - nb) * frac);
    int64_t delay = at - wall_ms();
    schedule_in(id, delay > 0 ? (uint64_t)delay : 0);
}

static void schedule_retry(struct sc_identity *id, const char *result, const char *msg)
{
    uint64_t delay = cc_backoff_next(&id->backoff);
    int64_t left = id->have_cur ? id->cur.not_after - wall_ms() / 1000 : 0;
    sc_warn("identity.renewal_failed",
            "id=%s result=%s error=%s retry_in_ms=%llu current_serial=%s current_valid_for_s=%lld",
            id->spiffe_id, result, msg, (unsigned long long)delay,
            id->have_cur ? id->cur.serial : "-", (long long)(left > 0 ? left : 0));
    schedule_in(id, delay);
}

static void on_expiry(uv_timer_t *t)
{
    struct sc_identity *id = t->data;
    if (!id->have_cur || id->expired_reported) {
        return;
    }
    // notAfter is inclusive (RFC 5280 §4.1.2.5, second granularity): peers
    // refuse the certificate from the next second on.
    int64_t now = wall_ms(), end = (id->cur.not_after + 1) * 1000;
    if (now < end) {
        uv_timer_start(&id->expiry, on_expiry, (uint64_t)(end - now), 0);
        return;
    }
    id->expired_reported = true;
    sc_error("identity.cert_expired",
             "id=%s serial=%s not_after=%lld: certificate expired, not ready; new handshakes "
             "will fail until a renewal succeeds",
             id->spiffe_id, id->cur.serial, (long long)id->cur.not_after);
    notify(id, SC_IDENTITY_EXPIRED);
}

/* ---- install -------------------------------------------------------------- */

static void on_hold(uv_timer_t *t);

// commit makes |c| the certificate in force (taking its contents).
static void commit(struct sc_identity *id, struct cert *c, bool from_ca)
{
    cert_clear(&id->cur);
    id->cur = *c;
    memset(c, 0, sizeof(*c));
    id->have_cur = true;
    id->cur_from_ca = from_ca;
    id->expired_reported = false;
    id->generation++;
    id->last_renewal = wall_ms() / 1000;
    if (from_ca) {
        id->results[0]++;
    }
    // A held-back certificate is older than this one: drop it.
    if (id->have_held) {
        cert_clear(&id->held);
        id->have_held = false;
        uv_timer_stop(&id->hold);
    }
    // Retries stay well inside the lifetime: cap the backoff at a fifth of
    // it (10 s certificates retry at least every 2 s).
    uint64_t life_ms = (uint64_t)(id->cur.not_after - id->cur.not_before) * 1000;
    uint64_t cap = life_ms / 5;
    cap = cap < id->backoff.initial_ms ? id->backoff.initial_ms : cap;
    id->backoff.max_ms = cap < id->retry_max_ms ? cap : id->retry_max_ms;
    uv_timer_stop(&id->renew);
    id->next_renewal = 0;
    schedule_renewal(id);
    int64_t until = (id->cur.not_after + 1) * 1000 - wall_ms();
    uv_timer_start(&id->expiry, on_expiry, until > 0 ? (uint64_t)until : 0, 0);
    sc_info("identity.cert_installed",
            "id=%s serial=%s source=%s not_before=%lld not_after=%lld lifetime_s=%lld "
            "next_renewal=%lld generation=%llu",
            id->spiffe_id, id->cur.serial, from_ca ? "ca" : "static", (long long)id->cur.not_before,
            (long long)id->cur.not_after, (long long)(id->cur.not_after - id->cur.not_before),
            (long long)id->next_renewal, (unsigned long long)id->generation);
    notify(id, SC_IDENTITY_CERT);
}

// install validates |key| + |chain| (leaf first, root allowed last; both
// taken over, freed on failure) and installs or holds them. Returns
// CC_CA_OK or the reason for refusal with a message in |msg|.
static enum cc_ca_error install(struct sc_identity *id, EVP_PKEY *key, STACK_OF(X509) * chain,
                                bool from_ca, char *msg, size_t msg_cap)
{
    struct cert c = {.key = key, .chain = chain};
    X509 *anchor = NULL;
    enum cc_ca_error e =
        cc_ca_validate_chain(chain, id->store, id->spiffe_id, key, 0, msg, msg_cap);
    if (e != CC_CA_OK) {
        goto out_fail;
    }
    X509 *leaf = sk_X509_value(chain, 0);
    // cc_ca_validate_chain relies on X509_check_ca, which calls a CA:TRUE
    // certificate without keyCertSign "not a CA"; the SPIFFE rules refuse
    // both (peers would refuse it in the handshake).
    uint32_t xf = X509_get_extension_flags(leaf);
    if ((xf & EXFLAG_CA) != 0 ||
        ((xf & EXFLAG_KUSAGE) != 0 &&
         (X509_get_key_usage(leaf) & (KU_KEY_CERT_SIGN | KU_CRL_SIGN)) != 0)) {
        snprintf(msg, msg_cap,
                 "issued certificate is a CA certificate or may sign certificates, "
                 "not a leaf");
        e = CC_CA_NOT_LEAF;
        goto out_fail;
    }
    c.not_before = asn1_unix(X509_get0_notBefore(leaf));
    c.not_after = asn1_unix(X509_get0_notAfter(leaf));
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(leaf), NULL);
    char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;
    snprintf(c.serial, sizeof(c.serial), "%s", hex != NULL ? hex : "?");
    OPENSSL_free(hex);
    BN_free(bn);
    anchor = anchor_of(id->store, chain);
    // The root is not sent to peers (they have it in their bundle).
    size_t n = sk_X509_num(chain);
    if (n > 1) {
        X509 *last = sk_X509_value(chain, n - 1);
        if (X509_check_issued(last, last) == X509_V_OK) {
            X509_free(sk_X509_pop(chain));
        }
    }
    c.chain_pem = certs_to_pem(chain);
    if (c.chain_pem == NULL || c.not_after == 0) {
        snprintf(msg, msg_cap, "cannot encode the certificate chain");
        e = CC_CA_LOCAL;
        goto out_fail;
    }
    // New-root grace: peers must have had time to trust the root first.
    bool cur_valid = sc_identity_ready(id);
    if (from_ca && cur_valid && id->grace_ms > 0 && anchor != NULL) {
        uint64_t seen = root_first_seen(id, anchor);
        uint64_t now = mono_ms();
        // (10 ms slack: the hold timer has millisecond granularity.)
        if (seen != 0 && now + 10 < seen + id->grace_ms) {
            uint64_t wait = seen + id->grace_ms - now;
            // Never hold past the expiry of the certificate in force.
            int64_t left = id->cur.not_after * 1000 - wall_ms() - 1000;
            if (left > 0 && (int64_t)wait < left) {
                cert_clear(&id->held);
                id->held = c;
                id->have_held = true;
                uv_timer_start(&id->hold, on_hold, wait, 0);
                sc_info("identity.cert_held",
                        "id=%s serial=%s wait_ms=%llu: issued by a root new to the bundle; "
                        "installing once peers have had time to trust it",
                        id->spiffe_id, c.serial, (unsigned long long)wait);
                X509_free(anchor);
                return CC_CA_OK;
            }
        }
    }
    X509_free(anchor);
    commit(id, &c, from_ca);
    return CC_CA_OK;

out_fail:
    X509_free(anchor);
    cert_clear(&c);
    return e;
}

static void on_hold(uv_timer_t *t)
{
    struct sc_identity *id = t->data;
    if (!id->have_held) {
        return;
    }
    // Validate again: the bundle may have changed meanwhile.
    struct cert h = id->held;
    memset(&id->held, 0, sizeof(id->held));
    id->have_held = false;
    free(h.chain_pem);
    char msg[512];
    enum cc_ca_error e = install(id, h.key, h.chain, true, msg, sizeof(msg));
    if (e != CC_CA_OK) {
        id->results[e]++;
        id->renewals_failed++;
        schedule_retry(id, cc_ca_error_name(e), msg);
    }
}

/* ---- CA requests ---------------------------------------------------------- */

static void on_certified(struct cc_ca_result *res, void *arg)
{
    struct pending *p = arg;
    struct sc_identity *id = p->id;
    X509_STORE *used = p->store;
    free(p);
    if (id == NULL) {
        X509_STORE_free(used);
        return; // the manager is gone
    }
    id->inflight = NULL;
    enum cc_ca_error e = res->error;
    char msg[512];
    snprintf(msg, sizeof(msg), "%s", res->message);
    // Validation happens (again) against the bundle in force now: it may
    // have changed while the call was in flight.
    bool retry_validation = e == CC_CA_UNTRUSTED && used != id->store;
    X509_STORE_free(used);
    if ((e == CC_CA_OK || retry_validation) && res->chain != NULL && res->key != NULL) {
        EVP_PKEY *key = res->key;
        STACK_OF(X509) *chain = res->chain;
        res->key = NULL;
        res->chain = NULL;
        e = install(id, key, chain, true, msg, sizeof(msg));
    }
    if (e == CC_CA_OK) {
        cc_backoff_reset(&id->backoff);
        return;
    }
    id->results[e]++;
    id->renewals_failed++;
    schedule_retry(id, cc_ca_error_name(e), msg);
}

static void start_request(struct sc_identity *id)
{
    if (id->inflight != NULL || id->ch == NULL) {
        return;
    }
    uv_timer_stop(&id->renew);
    id->next_renewal = 0;
    struct pending *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        id->results[CC_CA_LOCAL]++;
        id->renewals_failed++;
        schedule_retry(id, cc_ca_error_name(CC_CA_LOCAL), "out of memory");
        return;
    }
    p->id = id;
    p->store = id->store;
    X509_STORE_up_ref(p->store);
    struct cc_ca_request req = {
        .spiffe_id = id->spiffe_id,
        .ttl_seconds = id->ttl_s,
        .timeout_ms = id->call_timeout_ms,
        .trust = p->store,
    };
    sc_debug("identity.renewal_start", "id=%s current_serial=%s", id->spiffe_id,
             id->have_cur ? id->cur.serial : "-");
    id->inflight = p;
    int rc = cc_ca_certify(id->ch, &req, on_certified, p);
    if (rc != 0) {
        id->inflight = NULL;
        X509_STORE_free(p->store);
        free(p);
        id->results[CC_CA_LOCAL]++;
        id->renewals_failed++;
        schedule_retry(id, cc_ca_error_name(CC_CA_LOCAL), "cannot create the key or CSR");
    }
}

void sc_identity_renew_now(struct sc_identity *id)
{
    start_request(id);
}

/* ---- trust bundle --------------------------------------------------------- */

// load_bundle parses |pem| into a store + root list. Returns 0 or -1.
static int load_bundle(const char *pem, size_t len, X509_STORE **out_store,
                       STACK_OF(X509) * *out_roots, char *err, size_t err_cap)
{
    STACK_OF(X509) *roots = parse_certs(pem, len);
    if (roots == NULL) {
        snprintf(err, err_cap, "trust bundle holds no PEM certificate");
        return -1;
    }
    X509_STORE *store = X509_STORE_new();
    if (store == NULL) {
        sk_X509_pop_free(roots, X509_free);
        snprintf(err, err_cap, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < sk_X509_num(roots); i++) {
        if (!X509_STORE_add_cert(store, sk_X509_value(roots, i))) {
            // A duplicate root is harmless; anything else is not.
            uint32_t code = ERR_peek_last_error();
            if (ERR_GET_REASON(code) != X509_R_CERT_ALREADY_IN_HASH_TABLE) {
                ERR_clear_error();
                X509_STORE_free(store);
                sk_X509_pop_free(roots, X509_free);
                snprintf(err, err_cap, "trust bundle: certificate %zu is unusable", i);
                return -1;
            }
        }
    }
    ERR_clear_error();
    *out_store = store;
    *out_roots = roots;
    return 0;
}

// set_seen records the first-seen time of each root of |roots|, keeping the
// time of roots already known. |now| 0 marks them as known from the start.
static int set_seen(struct sc_identity *id, STACK_OF(X509) * roots, uint64_t now)
{
    size_t n = sk_X509_num(roots);
    struct root_seen *seen = calloc(n > 0 ? n : 1, sizeof(*seen));
    if (seen == NULL) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        X509 *r = sk_X509_value(roots, i);
        fingerprint(r, seen[i].fp);
        seen[i].first_seen_ms = now;
        for (size_t j = 0; j < id->num_seen; j++) {
            if (memcmp(id->seen[j].fp, seen[i].fp, 32) == 0) {
                seen[i].first_seen_ms = id->seen[j].first_seen_ms;
            }
        }
    }
    free(id->seen);
    id->seen = seen;
    id->num_seen = n;
    return 0;
}

int sc_identity_set_trust_bundle(struct sc_identity *id, const char *pem, size_t len, char *err,
                                 size_t err_cap)
{
    if (pem == NULL || len == 0) {
        snprintf(err, err_cap, "empty trust bundle");
        return SC_ECONFIG;
    }
    if (len == id->trust_len && memcmp(pem, id->trust_pem, len) == 0) {
        return 0;
    }
    X509_STORE *store;
    STACK_OF(X509) * roots;
    if (load_bundle(pem, len, &store, &roots, err, err_cap) != 0) {
        return SC_ECONFIG;
    }
    char *copy = malloc(len + 1);
    if (copy == NULL || set_seen(id, roots, mono_ms()) != 0) {
        free(copy);
        X509_STORE_free(store);
        sk_X509_pop_free(roots, X509_free);
        snprintf(err, err_cap, "out of memory");
        return SC_ENOMEM;
    }
    memcpy(copy, pem, len);
    copy[len] = '\0';
    size_t before = sk_X509_num(id->roots);
    free(id->trust_pem);
    id->trust_pem = copy;
    id->trust_len = len;
    X509_STORE_free(id->store);
    id->store = store;
    sk_X509_pop_free(id->roots, X509_free);
    id->roots = roots;
    id->generation++;
    sc_info("identity.trust_bundle", "roots=%zu previous_roots=%zu generation=%llu",
            sk_X509_num(roots), before, (unsigned long long)id->generation);
    // Does the certificate in force still chain to the bundle?
    if (id->have_cur) {
        char msg[512];
        enum cc_ca_error e = cc_ca_validate_chain(id->cur.chain, id->store, id->spiffe_id,
                                                  id->cur.key, 0, msg, sizeof(msg));
        if (e == CC_CA_UNTRUSTED && id->ch != NULL) {
            sc_warn("identity.cert_untrusted",
                    "id=%s serial=%s: the certificate in force does not chain to the new trust "
                    "bundle; renewing now",
                    id->spiffe_id, id->cur.serial);
            start_request(id);
        }
    }
    notify(id, SC_IDENTITY_TRUST);
    return 0;
}

/* ---- static certificates -------------------------------------------------- */

int sc_identity_install_pem(struct sc_identity *id, const char *chain_pem, size_t chain_len,
                            const char *key_pem, size_t key_len, char *err, size_t err_cap)
{
    STACK_OF(X509) *chain = parse_certs(chain_pem, chain_len);
    if (chain == NULL) {
        snprintf(err, err_cap, "certificate: no valid PEM certificate");
        return SC_ECONFIG;
    }
    BIO *kb = BIO_new_mem_buf(key_pem, (int)key_len);
    EVP_PKEY *key = kb != NULL ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    BIO_free(kb);
    ERR_clear_error();
    if (key == NULL) {
        sk_X509_pop_free(chain, X509_free);
        snprintf(err, err_cap, "key: no valid PEM private key");
        return SC_ECONFIG;
    }
    char msg[512];
    enum cc_ca_error e = install(id, key, chain, false, msg, sizeof(msg));
    if (e != CC_CA_OK) {
        snprintf(err, err_cap, "%s: %s", cc_ca_error_name(e), msg);
        sc_warn("identity.cert_refused", "id=%s source=static result=%s error=%s", id->spiffe_id,
                cc_ca_error_name(e), msg);
        return SC_ECONFIG;
    }
    return 0;
}

/* ---- lifecycle ------------------------------------------------------------ */

struct sc_identity *sc_identity_new(const struct sc_identity_config *cfg, char *err, size_t err_cap)
{
    const char *why = NULL;
    if (cfg->loop == NULL || cfg->spiffe_id == NULL || cfg->trust_pem == NULL ||
        cfg->trust_len == 0) {
        snprintf(err, err_cap, "identity: loop, SPIFFE ID and trust bundle are required");
        return NULL;
    }
    if (!sc_spiffe_id_valid(cfg->spiffe_id, strlen(cfg->spiffe_id), &why)) {
        snprintf(err, err_cap, "identity: \"%s\" is not a SPIFFE ID: %s", cfg->spiffe_id,
                 why != NULL ? why : "invalid");
        return NULL;
    }
    struct sc_identity *id = calloc(1, sizeof(*id));
    if (id == NULL || (id->spiffe_id = strdup(cfg->spiffe_id)) == NULL ||
        (id->trust_pem = malloc(cfg->trust_len + 1)) == NULL) {
        snprintf(err, err_cap, "out of memory");
        goto out_fail;
    }
    memcpy(id->trust_pem, cfg->trust_pem, cfg->trust_len);
    id->trust_pem[cfg->trust_len] = '\0';
    id->trust_len = cfg->trust_len;
    if (load_bundle(cfg->trust_pem, cfg->trust_len, &id->store, &id->roots, err, err_cap) != 0) {
        goto out_fail;
    }
    if (set_seen(id, id->roots, 0) != 0) {
        snprintf(err, err_cap, "out of memory");
        goto out_fail;
    }
    id->loop = cfg->loop;
    id->ch = cfg->ca_channel;
    id->ttl_s = cfg->cert_ttl_s;
    id->call_timeout_ms = cfg->call_timeout_ms;
    id->grace_ms = cfg->new_root_grace_ms;
    id->rng = (uv_hrtime() ^ (uint64_t)(uintptr_t)id) | 1;
    id->retry_max_ms = cfg->retry_max_ms ? cfg->retry_max_ms : 30000;
    cc_backoff_init(&id->backoff, cfg->retry_initial_ms ? cfg->retry_initial_ms : 1000,
                    id->retry_max_ms, 1.6, 0.2, 0);
    uv_timer_init(id->loop, &id->renew);
    uv_timer_init(id->loop, &id->expiry);
    uv_timer_init(id->loop, &id->hold);
    id->renew.data = id->expiry.data = id->hold.data = id;
    id->open_handles = 3;
    return id;

out_fail:
    if (id != NULL) {
        X509_STORE_free(id->store);
        sk_X509_pop_free(id->roots, X509_free);
        free(id->seen);
        free(id->trust_pem);
        free(id->spiffe_id);
        free(id);
    }
    return NULL;
}

int sc_identity_start(struct sc_identity *id)
{
    if (id->ch == NULL) {
        return SC_ESTATE;
    }
    sc_info("identity.start", "id=%s ttl_s=%lld roots=%zu", id->spiffe_id, (long long)id->ttl_s,
            sk_X509_num(id->roots));
    start_request(id);
    return 0;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct sc_identity *id = h->data;
    if (--id->open_handles > 0) {
        return;
    }
    cert_clear(&id->cur);
    cert_clear(&id->held);
    X509_STORE_free(id->store);
    sk_X509_pop_free(id->roots, X509_free);
    free(id->seen);
    free(id->trust_pem);
    free(id->spiffe_id);
    free(id);
}

void sc_identity_free(struct sc_identity *id)
{
    if (id == NULL || id->freed) {
        return;
    }
    id->freed = true;
    if (id->inflight != NULL) {
        id->inflight->id = NULL; // its callback frees it
        id->inflight = NULL;
    }
    for (size_t i = 0; i < id->num_bindings; i++) {
        free(id->bindings[i]);
    }
    free(id->bindings);
    id->bindings = NULL;
    id->num_bindings = 0;
    free(id->listeners);
    id->listeners = NULL;
    id->num_listeners = 0;
    uv_close((uv_handle_t *)&id->renew, on_timer_closed);
    uv_close((uv_handle_t *)&id->expiry, on_timer_closed);
    uv_close((uv_handle_t *)&id->hold, on_timer_closed);
}

/* ---- state ---------------------------------------------------------------- */

bool sc_identity_ready(const struct sc_identity *id)
{
    if (!id->have_cur) {
        return false;
    }
    // Both bounds inclusive, as X.509 validity (and peers' checks) are.
    int64_t now = wall_ms() / 1000;
    return now >= id->cur.not_before && now <= id->cur.not_after;
}

const char *sc_identity_spiffe_id(const struct sc_identity *id)
{
    return id->spiffe_id;
}

void sc_identity_get_info(const struct sc_identity *id, struct sc_identity_info *out)
{
    memset(out, 0, sizeof(*out));
    out->has_cert = id->have_cur;
    if (id->have_cur) {
        snprintf(out->serial, sizeof(out->serial), "%s", id->cur.serial);
        out->not_before = id->cur.not_before;
        out->not_after = id->cur.not_after;
    }
    out->next_renewal = id->next_renewal;
    out->last_renewal = id->last_renewal;
    out->renewals_ok = id->results[0];
    out->renewals_failed = id->renewals_failed;
    out->trust_roots = sk_X509_num(id->roots);
    out->generation = id->generation;
}

void sc_identity_certs_json(void *arg, struct sc_admin_buf *out)
{
    struct sc_identity *id = arg;
    sc_admin_buf_printf(out, "{\"source\":\"%s\",\"spiffe_id\":",
                        id->have_cur && !id->cur_from_ca ? "static" : "control-plane");
    sc_admin_buf_json_string(out, id->spiffe_id);
    sc_admin_buf_printf(out, ",\"ready\":%s,\"serial\":", sc_identity_ready(id) ? "true" : "false");
    sc_admin_buf_json_string(out, id->have_cur ? id->cur.serial : NULL);
    sc_admin_buf_printf(out, ",\"leaf\":");
    if (id->have_cur) {
        sc_admin_buf_cert_json(out, sk_X509_value(id->cur.chain, 0));
    } else {
        sc_admin_buf_printf(out, "null");
    }
    sc_admin_buf_printf(out, ",\"chain\":[");
    for (size_t i = 1; id->have_cur && i < sk_X509_num(id->cur.chain); i++) {
        if (i > 1) {
            sc_admin_buf_append(out, ",", 1);
        }
        sc_admin_buf_cert_json(out, sk_X509_value(id->cur.chain, i));
    }
    sc_admin_buf_printf(out, "],\"roots\":[");
    for (size_t i = 0; i < sk_X509_num(id->roots); i++) {
        if (i > 0) {
            sc_admin_buf_append(out, ",", 1);
        }
        sc_admin_buf_cert_json(out, sk_X509_value(id->roots, i));
    }
    sc_admin_buf_printf(out,
                        "],\"next_renewal_unix\":%lld,\"last_renewal_unix\":%lld,"
                        "\"renewals\":{\"success\":%llu,\"failed\":%llu},\"generation\":%llu}",
                        (long long)id->next_renewal, (long long)id->last_renewal,
                        (unsigned long long)id->results[0], (unsigned long long)id->renewals_failed,
                        (unsigned long long)id->generation);
}

void sc_identity_metrics(void *arg, struct sc_admin_buf *out)
{
    struct sc_identity *id = arg;
    // Expiry: leaf, intermediates, roots. Label pairs must be distinct: one
    // sample per (role, spiffe_id), the earliest expiry wins.
    size_t cap = 1 + (id->have_cur ? sk_X509_num(id->cur.chain) : 0) + sk_X509_num(id->roots);
    struct sc_admin_cert_expiry *items = calloc(cap, sizeof(*items));
    size_t n = 0;
    if (items != NULL) {
        if (id->have_cur) {
            items[n++] = (struct sc_admin_cert_expiry){"leaf", id->spiffe_id, id->cur.not_after};
        }
        int64_t inter = 0, root = 0;
        for (size_t i = 1; id->have_cur && i < sk_X509_num(id->cur.chain); i++) {
            int64_t t = asn1_unix(X509_get0_notAfter(sk_X509_value(id->cur.chain, i)));
            inter = inter == 0 || t < inter ? t : inter;
        }
        for (size_t i = 0; i < sk_X509_num(id->roots); i++) {
            int64_t t = asn1_unix(X509_get0_notAfter(sk_X509_value(id->roots, i)));
            root = root == 0 || t < root ? t : root;
        }
        if (inter != 0) {
            items[n++] = (struct sc_admin_cert_expiry){"intermediate", "", inter};
        }
        if (root != 0) {
            items[n++] = (struct sc_admin_cert_expiry){"root", "", root};
        }
        sc_admin_buf_cert_expiry_family(out, items, n);
        free(items);
    }
    sc_admin_buf_printf(out, "# HELP seam_cert_renewals_total Certificate requests to the CA by "
                             "result (success or why the attempt failed).\n"
                             "# TYPE seam_cert_renewals_total counter\n");
    for (int e = 0; e < SC_ID_RESULTS; e++) {
        sc_admin_buf_printf(out, "seam_cert_renewals_total{result=\"%s\"} %llu\n",
                            e == 0 ? "success" : cc_ca_error_name((enum cc_ca_error)e),
                            (unsigned long long)id->results[e]);
    }
    sc_admin_buf_printf(out,
                        "# HELP seam_cert_last_renewal_timestamp_seconds When the certificate in "
                        "force was installed (0: never).\n"
                        "# TYPE seam_cert_last_renewal_timestamp_seconds gauge\n"
                        "seam_cert_last_renewal_timestamp_seconds %lld\n"
                        "# HELP seam_trust_bundle_roots Root certificates in the trust bundle.\n"
                        "# TYPE seam_trust_bundle_roots gauge\n"
                        "seam_trust_bundle_roots %zu\n",
                        (long long)id->last_renewal, sk_X509_num(id->roots));
}
