// admin_certs.c — /certs, readiness and expiry metrics from PEM files, for
// tunnel mode where certificates come from --cert/--trust rather than the
// identity manager. The files are re-read on each request (they are small
// and requests are rare), so a SIGHUP reload shows up without any wiring.
// Only certificates are parsed: PEM blocks of other types (a key bundled in
// the same file) are skipped unread.
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "admin/admin_int.h"
#include "sc/tls.h"

#define MAX_CERTS 32

struct cert_list {
    X509 *certs[MAX_CERTS];
    size_t num;
};

// load_pem_certs reads up to MAX_CERTS certificates from |path|. Returns 0,
// or -1 if the file cannot be opened or holds no certificate.
static int load_pem_certs(struct cert_list *l, const char *path)
{
    l->num = 0;
    if (path == NULL) {
        return -1;
    }
    BIO *bio = BIO_new_file(path, "r");
    if (bio == NULL) {
        ERR_clear_error();
        return -1;
    }
    while (l->num < MAX_CERTS) {
        X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (x == NULL) {
            break;
        }
        l->certs[l->num++] = x;
    }
    ERR_clear_error(); // the expected "no start line" at end of file
    BIO_free(bio);
    return l->num > 0 ? 0 : -1;
}

static void free_certs(struct cert_list *l)
{
    for (size_t i = 0; i < l->num; i++) {
        X509_free(l->certs[i]);
    }
    l->num = 0;
}

// first_uri_san copies the first URI SAN of |x| (the SPIFFE ID of an SVID)
// into |out|, or sets it to "" when there is none.
static void first_uri_san(X509 *x, char *out, size_t cap)
{
    out[0] = '\0';
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    if (names == NULL) {
        ERR_clear_error();
        return;
    }
    for (size_t i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
        if (gn->type == GEN_URI) {
            const ASN1_IA5STRING *u = gn->d.uniformResourceIdentifier;
            size_t n = (size_t)ASN1_STRING_length(u);
            if (n >= cap) {
                n = cap - 1;
            }
            memcpy(out, ASN1_STRING_get0_data(u), n);
            out[n] = '\0';
            // An embedded NUL would truncate; that is fine for display.
            break;
        }
    }
    GENERAL_NAMES_free(names);
}

static void iso_time(int64_t t, char *out, size_t cap)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (gmtime_r(&tt, &tm) == NULL || strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
        snprintf(out, cap, "%lld", (long long)t);
    }
}

static void name_json(struct sc_admin_buf *out, X509_NAME *name)
{
    char buf[512];
    if (name == NULL || X509_NAME_oneline(name, buf, sizeof(buf)) == NULL) {
        sc_admin_buf_json_string(out, NULL);
        return;
    }
    sc_admin_buf_json_string(out, buf);
}

void sc_admin_buf_cert_json(struct sc_admin_buf *out, X509 *x)
{
    char id[2048];
    first_uri_san(x, id, sizeof(id));
    sc_admin_buf_append(out, "{\"spiffe_id\":", 13);
    sc_admin_buf_json_string(out, id[0] ? id : NULL);

    char *serial = NULL;
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    if (bn != NULL) {
        serial = BN_bn2hex(bn);
        BN_free(bn);
    }
    sc_admin_buf_append(out, ",\"serial\":", 10);
    sc_admin_buf_json_string(out, serial);
    OPENSSL_free(serial);

    sc_admin_buf_append(out, ",\"subject\":", 11);
    name_json(out, X509_get_subject_name(x));
    sc_admin_buf_append(out, ",\"issuer\":", 10);
    name_json(out, X509_get_issuer_name(x));

    int64_t nb = 0, na = 0;
    char ts[64];
    if (sc_tls_asn1_unix(X509_get0_notBefore(x), &nb)) {
        iso_time(nb, ts, sizeof(ts));
        sc_admin_buf_printf(out, ",\"not_before\":\"%s\",\"not_before_unix\":%lld", ts,
                            (long long)nb);
    }
    if (sc_tls_asn1_unix(X509_get0_notAfter(x), &na)) {
        iso_time(na, ts, sizeof(ts));
        sc_admin_buf_printf(out, ",\"not_after\":\"%s\",\"not_after_unix\":%lld", ts,
                            (long long)na);
    }
    sc_admin_buf_append(out, "}", 1);
}

static void list_json(struct sc_admin_buf *out, struct cert_list *l, size_t from)
{
    sc_admin_buf_append(out, "[", 1);
    for (size_t i = from; i < l->num; i++) {
        if (i > from) {
            sc_admin_buf_append(out, ",", 1);
        }
        sc_admin_buf_cert_json(out, l->certs[i]);
    }
    sc_admin_buf_append(out, "]", 1);
}

void sc_admin__file_certs_json(struct sc_admin_buf *out, const char *cert_path,
                               const char *trust_path)
{
    struct cert_list chain, roots;
    bool have_chain = load_pem_certs(&chain, cert_path) == 0;
    (void)load_pem_certs(&roots, trust_path); // empty list when absent

    sc_admin_buf_append(out, "{\"source\":\"files\",\"leaf\":", 25);
    if (have_chain) {
        sc_admin_buf_cert_json(out, chain.certs[0]);
    } else {
        sc_admin_buf_append(out, "null", 4);
    }
    sc_admin_buf_append(out, ",\"chain\":", 9);
    list_json(out, &chain, 1);
    sc_admin_buf_append(out, ",\"roots\":", 9);
    list_json(out, &roots, 0);
    if (!have_chain) {
        sc_admin_buf_append(out, ",\"error\":", 9);
        sc_admin_buf_json_string(out, "no certificate could be read from the --cert file");
    }
    sc_admin_buf_append(out, "}", 1);
    free_certs(&chain);
    free_certs(&roots);
}

void sc_admin_buf_cert_expiry_family(struct sc_admin_buf *out,
                                     const struct sc_admin_cert_expiry *items, size_t num)
{
    sc_admin_buf_printf(out, "# HELP seam_cert_expiry_timestamp_seconds Not-after time of the "
                             "certificates in force, by role and SPIFFE ID.\n"
                             "# TYPE seam_cert_expiry_timestamp_seconds gauge\n");
    for (size_t i = 0; i < num; i++) {
        sc_admin_buf_printf(out, "seam_cert_expiry_timestamp_seconds{role=\"");
        sc_admin_buf_label_value(out, items[i].role);
        sc_admin_buf_printf(out, "\",spiffe_id=\"");
        sc_admin_buf_label_value(out, items[i].spiffe_id);
        sc_admin_buf_printf(out, "\"} %lld\n", (long long)items[i].not_after);
    }
}

void sc_admin__file_cert_metrics(struct sc_admin_buf *out, const char *cert_path,
                                 const char *trust_path)
{
    struct cert_list l;
    if (load_pem_certs(&l, cert_path) == 0) {
        int64_t na;
        if (sc_tls_asn1_unix(X509_get0_notAfter(l.certs[0]), &na)) {
            char id[2048];
            first_uri_san(l.certs[0], id, sizeof(id));
            struct sc_admin_cert_expiry e = {.role = "leaf", .spiffe_id = id, .not_after = na};
            sc_admin_buf_cert_expiry_family(out, &e, 1);
        }
        free_certs(&l);
    }
    if (trust_path != NULL) {
        size_t n = 0;
        if (load_pem_certs(&l, trust_path) == 0) {
            n = l.num;
            free_certs(&l);
        }
        sc_admin_buf_printf(out,
                            "# HELP seam_trust_bundle_roots Root certificates in the trust "
                            "bundle.\n# TYPE seam_trust_bundle_roots gauge\n"
                            "seam_trust_bundle_roots %zu\n",
                            n);
    }
}

bool sc_admin__file_cert_valid(const char *cert_path, int64_t now)
{
    struct cert_list l;
    if (load_pem_certs(&l, cert_path) != 0) {
        return false;
    }
    int64_t nb, na;
    bool ok = sc_tls_asn1_unix(X509_get0_notBefore(l.certs[0]), &nb) &&
              sc_tls_asn1_unix(X509_get0_notAfter(l.certs[0]), &na) && nb <= now && now < na;
    free_certs(&l);
    return ok;
}
