// snapshot.c — decoding and validation of config snapshots. Pure (no I/O,
// no global state) so it can be fuzzed: tests/fuzz/fuzz_snapshot.c.
#include <stdio.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "cc/config_client.h"
#include "sc/spiffe.h"

// root_parses reports whether |pem| holds at least one certificate and nothing
// that fails to parse.
static bool root_parses(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, (int)strlen(pem));
    if (b == NULL) {
        return false;
    }
    int n = 0;
    X509 *x;
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        n++;
        X509_free(x);
    }
    BIO_free(b);
    ERR_clear_error();
    return n > 0;
}

static bool mode_known(int m)
{
    return m == SEAM__V1__INBOUND_MODE__INBOUND_MODE_UNSPECIFIED ||
           m == SEAM__V1__INBOUND_MODE__STRICT || m == SEAM__V1__INBOUND_MODE__PERMISSIVE;
}

int cc_snapshot_validate(const Seam__V1__Snapshot *snap, char *err, size_t err_len)
{
    const char *why = NULL;
    if (snap == NULL) {
        snprintf(err, err_len, "response carries no snapshot");
        return -1;
    }
    if (snap->trust_bundle == NULL || snap->trust_bundle->n_roots == 0) {
        snprintf(err, err_len, "snapshot has an empty trust bundle");
        return -1;
    }
    for (size_t i = 0; i < snap->trust_bundle->n_roots; i++) {
        if (!root_parses(snap->trust_bundle->roots[i])) {
            snprintf(err, err_len, "trust_bundle.roots[%zu] is not a PEM certificate", i);
            return -1;
        }
    }
    if (!mode_known(snap->default_inbound_mode)) {
        snprintf(err, err_len, "unknown default_inbound_mode %d", (int)snap->default_inbound_mode);
        return -1;
    }
    int pol = snap->outbound_policy;
    if (pol != SEAM__V1__OUTBOUND_POLICY__OUTBOUND_POLICY_UNSPECIFIED &&
        pol != SEAM__V1__OUTBOUND_POLICY__ALLOW_ANY &&
        pol != SEAM__V1__OUTBOUND_POLICY__REGISTRY_ONLY) {
        snprintf(err, err_len, "unknown outbound_policy %d", pol);
        return -1;
    }
    if (snap->cert_ttl_seconds < 0) {
        snprintf(err, err_len, "negative cert_ttl_seconds %lld", (long long)snap->cert_ttl_seconds);
        return -1;
    }
    for (size_t i = 0; i < snap->n_inbound_ports; i++) {
        const Seam__V1__InboundPort *p = snap->inbound_ports[i];
        if (p->port == 0 || p->port > 65535) {
            snprintf(err, err_len, "inbound_ports[%zu]: port %u out of range", i, p->port);
            return -1;
        }
        for (size_t j = 0; j < i; j++) {
            if (snap->inbound_ports[j]->port == p->port) {
                snprintf(err, err_len, "inbound_ports[%zu]: port %u listed twice", i, p->port);
                return -1;
            }
        }
        if (!mode_known(p->mode)) {
            snprintf(err, err_len, "inbound_ports[%zu]: unknown mode %d", i, (int)p->mode);
            return -1;
        }
        for (size_t k = 0; k < p->n_allow; k++) {
            if (!sc_spiffe_pattern_valid(p->allow[k], &why)) {
                snprintf(err, err_len, "inbound_ports[%zu].allow[%zu] '%.200s': %s", i, k,
                         p->allow[k], why != NULL ? why : "invalid pattern");
                return -1;
            }
        }
    }
    for (size_t i = 0; i < snap->n_services; i++) {
        const Seam__V1__Service *s = snap->services[i];
        if (s->name == NULL || s->name[0] == '\0') {
            snprintf(err, err_len, "services[%zu] has no name", i);
            return -1;
        }
        if (s->port > 65535) {
            snprintf(err, err_len, "services[%zu] '%.200s': port %u out of range", i, s->name,
                     s->port);
            return -1;
        }
        for (size_t k = 0; k < s->n_endpoints; k++) {
            const Seam__V1__Endpoint *e = s->endpoints[k];
            if (e->address == NULL || e->address[0] == '\0' || e->port == 0 || e->port > 65535) {
                snprintf(err, err_len, "services[%zu] '%.200s' endpoints[%zu]: bad address/port", i,
                         s->name, k);
                return -1;
            }
            if (!sc_spiffe_id_valid(e->spiffe_id, strlen(e->spiffe_id), &why)) {
                snprintf(err, err_len,
                         "services[%zu] '%.200s' endpoints[%zu]: spiffe_id '%.200s': %s", i,
                         s->name, k, e->spiffe_id, why != NULL ? why : "invalid");
                return -1;
            }
        }
    }
    return 0;
}

Seam__V1__ConfigResponse *cc_snapshot_decode(const uint8_t *buf, size_t len, char *err,
                                             size_t err_len, char *nonce, size_t nonce_cap)
{
    if (nonce_cap > 0) {
        nonce[0] = '\0';
    }
    Seam__V1__ConfigResponse *r = seam__v1__config_response__unpack(NULL, len, buf);
    if (r == NULL) {
        snprintf(err, err_len, "ConfigResponse (%zu bytes) does not parse", len);
        return NULL;
    }
    if (nonce_cap > 0) {
        snprintf(nonce, nonce_cap, "%s", r->nonce);
    }
    if (cc_snapshot_validate(r->snapshot, err, err_len) != 0) {
        seam__v1__config_response__free_unpacked(r, NULL);
        return NULL;
    }
    return r;
}
