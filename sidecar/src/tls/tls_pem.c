// tls_pem.c — PEM and key helpers (sc/pem.h).
#include "sc/pem.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/pem.h>

EVP_PKEY *sc_pem_new_p256_key(void)
{
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *kctx = EVP_PKEY_CTX_new_id(EVP_PKEY_EC, NULL);
    if (kctx == NULL || !EVP_PKEY_keygen_init(kctx) ||
        !EVP_PKEY_CTX_set_ec_paramgen_curve_nid(kctx, NID_X9_62_prime256v1) ||
        !EVP_PKEY_keygen(kctx, &pkey)) {
        pkey = NULL;
    }
    EVP_PKEY_CTX_free(kctx);
    return pkey;
}

char *sc_pem_bio_string(BIO *mem)
{
    const uint8_t *data;
    size_t len;
    if (!BIO_mem_contents(mem, &data, &len)) {
        return NULL;
    }
    char *out = malloc(len + 1);
    if (out != NULL) {
        memcpy(out, data, len);
        out[len] = '\0';
    }
    return out;
}

char *sc_pem_certs(const STACK_OF(X509) * chain, size_t from, size_t to)
{
    BIO *mem = BIO_new(BIO_s_mem());
    char *out = NULL;
    if (mem == NULL) {
        return NULL;
    }
    for (size_t i = from; i < to; i++) {
        if (!PEM_write_bio_X509(mem, sk_X509_value(chain, i))) {
            goto out;
        }
    }
    out = sc_pem_bio_string(mem);
out:
    BIO_free(mem);
    return out;
}

char *sc_pem_cert(X509 *x)
{
    BIO *mem = BIO_new(BIO_s_mem());
    char *out = NULL;
    if (mem != NULL && PEM_write_bio_X509(mem, x)) {
        out = sc_pem_bio_string(mem);
    }
    BIO_free(mem);
    return out;
}

int sc_pem_add_trust_file(X509_STORE *store, const char *file)
{
    BIO *bio = BIO_new_file(file, "r");
    if (bio == NULL) {
        int e = errno != 0 ? errno : EIO;
        ERR_clear_error();
        return -e;
    }
    int count = 0;
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (X509_STORE_add_cert(store, x)) {
            count++;
        }
        X509_free(x);
    }
    ERR_clear_error();
    BIO_free(bio);
    return count;
}
