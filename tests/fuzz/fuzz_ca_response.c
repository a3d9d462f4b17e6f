// Fuzz target for the CA response handling of the control-client
// (control-client/src/ca_client.c): an IstioCertificateResponse as received
// from the CA, decoded with protobuf-c, its cert_chain elements parsed as PEM
// the way parse_chain does (several certificates per element allowed, an
// element without one refused), then cc_ca_validate_chain against a fixed
// trust root, SPIFFE ID and key at a fixed time.
//
// Input: the first byte picks the mode (modulo 2): 0 = the rest is the
// protobuf response; 1 = the rest is the text of one cert_chain element
// (faster to reach the PEM and X.509 parsers). Invariants: every refusal has
// a reason; an accepted chain has a leaf that carries our key, exactly our
// SPIFFE ID, is not a CA, and chains to the fixed root.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "cc/ca_client.h"
#include "istio/v1/auth/ca.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ID "spiffe://fuzz.test/ns/a/sa/b"
#define FUZZ_NOW ((time_t)1893456000) // 2030-01-01, inside every seed's validity

// A throw-away root and leaf made for this target only (tests/fuzz/README.md).
static const char root_pem[] = "-----BEGIN CERTIFICATE-----\n"
                               "MIIBmjCCAUCgAwIBAgIBATAKBggqhkjOPQQDAjAjMQ0wCwYDVQQKDARmdXp6MRIw\n"
                               "EAYDVQQDDAlmdXp6IHJvb3QwIBcNMjYxMTI3MDkyNzI3WhgPMjEyNjExMDMwOTI3\n"
                               "MjdaMCMxDTALBgNVBAoMBGZ1enoxEjAQBgNVBAMMCWZ1enogcm9vdDBZMBMGByqG\n"
                               "SM49AgEGCCqGSM49AwEHA0IABBtTkMucVHxZYyYMQcbG76PXXd8Y47b3Wm2a4TUK\n"
                               "7koFmAFLIui/m16rrftUEv1ACAfvE50Zxm6TOeNNQs8vjfKjYzBhMB0GA1UdDgQW\n"
                               "BBS8Zh9xoVKL+3A57NeFFjR62OO1AzAfBgNVHSMEGDAWgBS8Zh9xoVKL+3A57NeF\n"
                               "FjR62OO1AzAPBgNVHRMBAf8EBTADAQH/MA4GA1UdDwEB/wQEAwIBBjAKBggqhkjO\n"
                               "PQQDAgNIADBFAiEAiMlmyxx+Pzuiw/UFHwdc00FYaGHWY/plva8JLf2Pb0ECIAwq\n"
                               "RAhcY70Twry4MMJhrNE+OCnCruqp+e/jLzPlJpji\n"
                               "-----END CERTIFICATE-----\n";

static const char leaf_key_pem[] =
    "-----BEGIN EC PRIVATE KEY-----\n"
    "MHcCAQEEICQ7OzhYxxP+VpcdAX829qwJFwbT8LCbMPzmUVtHalrfoAoGCCqGSM49\n"
    "AwEHoUQDQgAEIaGEGf7J04XGLvQvnCIOyu45ZqxJ98+HpC8ouMdEEvbfmlQsD9xI\n"
    "l60i0KzyFn012dFdu78YRzRZK86GohVR9A==\n"
    "-----END EC PRIVATE KEY-----\n";

static X509_STORE *g_trust;
static EVP_PKEY *g_key;

static void setup(void)
{
    if (g_trust != NULL) {
        return;
    }
    BIO *b = BIO_new_mem_buf(root_pem, (int)strlen(root_pem));
    X509 *root = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    b = BIO_new_mem_buf(leaf_key_pem, (int)strlen(leaf_key_pem));
    g_key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    g_trust = X509_STORE_new();
    if (root == NULL || g_key == NULL || g_trust == NULL || !X509_STORE_add_cert(g_trust, root)) {
        abort();
    }
    X509_free(root);
}

// add_element parses one cert_chain element like ca_client.c's parse_chain.
// Returns the number of certificates taken from it.
static int add_element(STACK_OF(X509) * chain, const char *s, size_t len)
{
    BIO *b = BIO_new_mem_buf(s, (int)len);
    X509 *x;
    int n = 0;
    while (b != NULL && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_push(chain, x)) {
            X509_free(x);
            break;
        }
        n++;
    }
    BIO_free(b);
    ERR_clear_error();
    return n;
}

static void check_chain(STACK_OF(X509) * chain)
{
    char msg[400];
    msg[0] = 'x';
    msg[1] = '\0';
    enum cc_ca_error e =
        cc_ca_validate_chain(chain, g_trust, FUZZ_ID, g_key, FUZZ_NOW, msg, sizeof(msg));
    if (e != CC_CA_OK) {
        if (msg[0] == '\0' || cc_ca_error_name(e) == NULL) {
            abort(); // every refusal has a reason
        }
        return;
    }
    if (msg[0] != '\0' || sk_X509_num(chain) == 0) {
        abort();
    }
    X509 *leaf = sk_X509_value(chain, 0);
    EVP_PKEY *pub = X509_get_pubkey(leaf);
    if (pub == NULL || EVP_PKEY_cmp(pub, g_key) != 1) {
        abort(); // accepted a leaf without our key
    }
    EVP_PKEY_free(pub);
    if (X509_check_ca(leaf)) {
        abort(); // accepted a CA certificate as our leaf
    }
    GENERAL_NAMES *gens = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    int uris = 0;
    for (size_t i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_URI) {
            continue;
        }
        const ASN1_STRING *u = g->d.uniformResourceIdentifier;
        if ((size_t)ASN1_STRING_length(u) != strlen(FUZZ_ID) ||
            memcmp(ASN1_STRING_get0_data(u), FUZZ_ID, strlen(FUZZ_ID)) != 0) {
            abort(); // accepted a leaf for another identity
        }
        uris++;
    }
    GENERAL_NAMES_free(gens);
    if (uris != 1) {
        abort();
    }
    ERR_clear_error();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    if (size == 0) {
        return 0;
    }
    STACK_OF(X509) *chain = sk_X509_new_null();
    if (chain == NULL) {
        abort();
    }
    if (data[0] % 2 == 1) {
        if (add_element(chain, (const char *)data + 1, size - 1) > 0) {
            check_chain(chain);
        }
        goto out;
    }
    Istio__V1__Auth__IstioCertificateResponse *r =
        istio__v1__auth__istio_certificate_response__unpack(NULL, size - 1, data + 1);
    if (r == NULL) {
        goto out;
    }
    int ok = r->n_cert_chain > 0;
    for (size_t i = 0; ok && i < r->n_cert_chain; i++) {
        ok = add_element(chain, r->cert_chain[i], strlen(r->cert_chain[i])) > 0;
    }
    if (ok) {
        check_chain(chain);
    }
    istio__v1__auth__istio_certificate_response__free_unpacked(r, NULL);
out:
    sk_X509_pop_free(chain, X509_free);
    return 0;
}
