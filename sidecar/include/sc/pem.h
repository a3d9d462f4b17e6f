// sc/pem.h — small PEM and key helpers shared by the CA client
// (control-client/src/ca_client.c), the control plane's CA
// (control-plane/src/cp_ca.c) and `seam-sidecar certify`.
//
// Every string returned here is heap-allocated and NUL-terminated; the caller
// frees it with free(). A string holding a private key must be wiped with
// OPENSSL_cleanse before it is freed.
#ifndef SC_PEM_H
#define SC_PEM_H

#include <stddef.h>

#include <openssl/base.h>
#include <openssl/x509.h>

// sc_pem_new_p256_key returns a new ECDSA P-256 key, or NULL.
EVP_PKEY *sc_pem_new_p256_key(void);

// sc_pem_bio_string returns a copy of the contents of memory BIO |mem| as a
// string, or NULL if |mem| is not a memory BIO or on allocation failure.
char *sc_pem_bio_string(BIO *mem);

// sc_pem_cert returns the PEM encoding of |x|, or NULL.
char *sc_pem_cert(X509 *x);

// sc_pem_certs returns the PEM encodings of elements [from, to) of |chain|,
// concatenated, or NULL if any of them cannot be encoded.
char *sc_pem_certs(const STACK_OF(X509) * chain, size_t from, size_t to);

// sc_pem_add_trust_file adds every PEM certificate in |file| to |store|.
// Returns how many were added (0: the file holds none), or -errno if the file
// cannot be opened. The error queue is left empty.
int sc_pem_add_trust_file(X509_STORE *store, const char *file);

#endif
