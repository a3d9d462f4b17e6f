// cp_ca.h — the control plane's certificate authority: a root (loaded or
// generated in memory, P-256), optionally an intermediate signing chain,
// CSR signing with the caller's SPIFFE ID, and root rotation.
#ifndef CP_CA_H
#define CP_CA_H

#include <openssl/base.h>
#include <stddef.h>
#include <stdint.h>

struct cp_ca;

// gRPC status codes the CA returns (PROTOCOLS.md §1.4).
#define CP_GRPC_OK 0
#define CP_GRPC_INVALID_ARGUMENT 3
#define CP_GRPC_PERMISSION_DENIED 7
#define CP_GRPC_RESOURCE_EXHAUSTED 8
#define CP_GRPC_UNIMPLEMENTED 12
#define CP_GRPC_INTERNAL 13
#define CP_GRPC_UNAVAILABLE 14
#define CP_GRPC_UNAUTHENTICATED 16

// cp_ca_new_generated creates a CA with a fresh in-memory P-256 root for
// |trust_domain|. |max_ttl_s| caps issued leaves. Returns NULL on failure.
struct cp_ca *cp_ca_new_generated(const char *trust_domain, uint64_t max_ttl_s);

// cp_ca_new_load loads the signing certificate (first PEM in |cert_path|,
// followed optionally by its intermediates and root) and its key. If the file
// does not end in a self-signed root the chain is still served as given and
// the last certificate is used as the trust anchor. On failure returns NULL
// and writes a reason to |err|.
struct cp_ca *cp_ca_new_load(const char *cert_path, const char *key_path, const char *trust_domain,
                             uint64_t max_ttl_s, char *err, size_t err_cap);

// cp_ca_free frees |ca|; NULL is ignored.
void cp_ca_free(struct cp_ca *ca);

// cp_ca_add_root_file adds every certificate in |path| to the trust bundle
// (trust only; issuing does not change). Returns 0 or -1 with |err| set.
int cp_ca_add_root_file(struct cp_ca *ca, const char *path, char *err, size_t err_cap);

// cp_ca_rotate generates a new P-256 root, switches issuing to it and keeps
// the previous roots in the bundle. Returns 0 or -1.
int cp_ca_rotate(struct cp_ca *ca);

// cp_ca_retire drops every root but the one issuing now from the bundle.
// Returns the number of roots removed.
int cp_ca_retire(struct cp_ca *ca);

// cp_ca_bundle_pem returns the current trust bundle as a NUL-terminated array
// of PEM strings (borrowed; valid until the next rotate/retire/add).
size_t cp_ca_bundle(const struct cp_ca *ca, const char *const **out_pems);

// cp_ca_generation increases on every bundle change.
uint64_t cp_ca_generation(const struct cp_ca *ca);

// cp_ca_trust_domain returns the trust domain (borrowed).
const char *cp_ca_trust_domain(const struct cp_ca *ca);

// cp_ca_clamp_ttl returns the TTL in seconds a request for |requested_s|
// gets: <= 0 means the maximum, anything above the maximum is cut to it.
uint64_t cp_ca_clamp_ttl(const struct cp_ca *ca, int64_t requested_s);

// cp_ca_sign_csr verifies the PEM CSR |csr_pem| and issues a leaf for
// |identity|. On success it returns CP_GRPC_OK and a malloc'd array of
// malloc'd PEM strings (leaf first, root last) in |out_chain|/|out_num|;
// free with cp_ca_chain_free. On failure it returns a gRPC status and a
// static or |msg|-formatted reason.
int cp_ca_sign_csr(struct cp_ca *ca, const char *csr_pem, size_t csr_len, const char *identity,
                   int64_t requested_ttl_s, char ***out_chain, size_t *out_num, char *msg,
                   size_t msg_cap);

// cp_ca_chain_free frees a chain returned by cp_ca_sign_csr.
void cp_ca_chain_free(char **chain, size_t num);

// cp_ca_issue_server creates the control plane's own TLS certificate with the
// DNS names |dns| (|num_dns| entries) and a fresh P-256 key. |out_chain| gets
// a PEM chain (leaf first, malloc'd) and |out_key| the key (caller frees with
// EVP_PKEY_free). Returns 0 or -1.
int cp_ca_issue_server(struct cp_ca *ca, const char *const *dns, size_t num_dns,
                       char **out_chain_pem, EVP_PKEY **out_key);

// cp_ca_write_roots writes the bundle (plus the root that issued the
// server certificate, which is never dropped) to |path| atomically.
int cp_ca_write_roots(const struct cp_ca *ca, const char *path);

#endif
