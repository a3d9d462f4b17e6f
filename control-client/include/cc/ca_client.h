// cc/ca_client.h — the Istio-compatible CA client (PROTOCOLS.md §2.1).
//
// Generates a P-256 key in memory, sends a CSR (empty subject, one critical
// URI SAN = our SPIFFE ID, ECDSA-SHA256) to
// istio.v1.auth.IstioCertificateService/CreateCertificate over a cc_channel,
// and validates the returned chain before handing it over: it must chain to
// the trust roots, the leaf must carry exactly our SPIFFE ID and our public
// key, and it must be valid now. The sidecar's identity manager (issue 5)
// calls cc_ca_certify on its loop and installs the result.
#ifndef CC_CA_CLIENT_H
#define CC_CA_CLIENT_H

#include <stdint.h>
#include <time.h>

#include <openssl/base.h>
#include <openssl/x509.h>

#include "cc/grpc_client.h"

#define CC_CA_PATH "/istio.v1.auth.IstioCertificateService/CreateCertificate"

// Why a certification failed.
enum cc_ca_error {
    CC_CA_OK = 0,
    CC_CA_RPC,           // the call failed: see status/message
    CC_CA_BAD_RESPONSE,  // the response did not parse or held no usable PEM chain
    CC_CA_UNTRUSTED,     // the chain does not lead to the trust roots
    CC_CA_WRONG_ID,      // the leaf's URI SAN is not exactly our SPIFFE ID
    CC_CA_WRONG_KEY,     // the leaf's public key is not ours
    CC_CA_EXPIRED,       // the leaf (or chain) is expired
    CC_CA_NOT_YET_VALID, // the leaf (or chain) is not valid yet
    CC_CA_NOT_LEAF,      // the leaf is a CA certificate
    CC_CA_LOCAL,         // local failure (key generation, CSR)
};

// cc_ca_error_name returns a stable snake_case name of |e| ("untrusted_chain" ...).
const char *cc_ca_error_name(enum cc_ca_error e);

// cc_ca_result is what the completion callback gets. Everything in it is
// owned by the result; take ownership of |key| / |chain| by setting the
// pointers to NULL inside the callback, otherwise they are freed after it.
struct cc_ca_result {
    enum cc_ca_error error; // CC_CA_OK on success
    int status;             // gRPC status of the call (OK unless error == CC_CA_RPC)
    char message[512];      // human readable failure reason ("" on success)
    EVP_PKEY *key;          // our private key (never logged or sent)
    STACK_OF(X509) * chain; // validated chain, leaf first (as received)
    char *chain_pem;        // PEM of the chain as received, leaf first
    char spiffe_id[2048];   // the leaf's SPIFFE ID
    char serial[80];        // leaf serial number, hex
    time_t not_before;      // leaf validity
    time_t not_after;
};

// cc_ca_done_cb receives the result of cc_ca_certify (exactly once, from the loop).
typedef void (*cc_ca_done_cb)(struct cc_ca_result *res, void *arg);

struct cc_ca_request {
    const char *spiffe_id; // our SPIFFE ID (goes into the CSR)
    int64_t ttl_seconds;   // requested validity; <= 0 lets the CA choose
    uint64_t timeout_ms;   // call deadline; 0 = 30 s
    X509_STORE *trust;     // roots the chain must lead to (borrowed until the callback)
};

// cc_ca_certify generates a key, sends the CSR over |ch| and calls |cb| with
// the validated result. Returns 0, or a negative code (and |cb| never runs)
// if the key or CSR could not be made.
int cc_ca_certify(struct cc_channel *ch, const struct cc_ca_request *req, cc_ca_done_cb cb,
                  void *arg);

// cc_ca_validate_chain checks |chain| (leaf first) against |trust| at time
// |now| (0 = current time): it chains to a trusted root, the leaf has exactly
// one URI SAN equal to |spiffe_id|, it is not a CA, and its public key equals
// |key|'s. Returns CC_CA_OK or the failure with a reason in |msg|.
enum cc_ca_error cc_ca_validate_chain(STACK_OF(X509) * chain, X509_STORE *trust,
                                      const char *spiffe_id, EVP_PKEY *key, time_t now, char *msg,
                                      size_t msg_len);

// cc_ca_make_csr returns a PEM "CERTIFICATE REQUEST" for |key| with an empty
// subject and one critical URI SAN |spiffe_id|, signed with ECDSA-SHA256,
// or NULL. Release with free().
char *cc_ca_make_csr(EVP_PKEY *key, const char *spiffe_id);

// cc_ca_new_key returns a new P-256 key, or NULL.
EVP_PKEY *cc_ca_new_key(void);

// cc_ca_load_trust reads PEM certificates from |file| into a new store. Returns
// NULL with a reason in |err| if the file is unreadable or holds none.
X509_STORE *cc_ca_load_trust(const char *file, char *err, size_t err_len);

// cc_ca_key_pem returns |key| as PKCS#8 PEM, or NULL. The caller must cleanse
// (OPENSSL_cleanse) and free() it; write it only to a 0600 file.
char *cc_ca_key_pem(EVP_PKEY *key);

#endif
