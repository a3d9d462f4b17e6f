// cp_auth.h — caller authentication for the control plane: static bearer
// tokens (--tokens FILE) or Kubernetes projected service-account JWTs
// verified offline against a JWKS file (--jwks FILE --audience AUD).
#ifndef CP_AUTH_H
#define CP_AUTH_H

#include <stddef.h>
#include <stdint.h>

struct cp_auth;

// cp_auth_new_tokens loads a YAML/JSON mapping "token: spiffe-id". Returns
// NULL with |err| set ("FILE: line N: reason") on failure.
struct cp_auth *cp_auth_new_tokens(const char *path, char *err, size_t err_cap);

// cp_auth_new_jwks loads a JWKS file (RS256 / ES256 keys) and checks tokens
// for |audience|, deriving spiffe://|trust_domain|/ns/NS/sa/SA.
struct cp_auth *cp_auth_new_jwks(const char *path, const char *audience, const char *trust_domain,
                                 char *err, size_t err_cap);

// cp_auth_free frees |a|; NULL is ignored.
void cp_auth_free(struct cp_auth *a);

// cp_auth_maybe_reload re-reads the file when its mtime, size or inode
// changed. A file that no longer parses is logged and the old content stays.
void cp_auth_maybe_reload(struct cp_auth *a);

// cp_auth_check authenticates |token| (|len| bytes, without "Bearer ").
// On success writes the SPIFFE ID to |out_id| and returns 0; otherwise -1
// with a short reason in |why| (never the token itself).
int cp_auth_check(struct cp_auth *a, const char *token, size_t len, uint64_t now_s, char *out_id,
                  size_t id_cap, char *why, size_t why_cap);

// cp_jwks_parse and cp_jwt_verify are the pure parts, exposed for tests and
// fuzzing. cp_jwks is opaque.
struct cp_jwks;
struct cp_jwks *cp_jwks_parse(const uint8_t *data, size_t len, char *err, size_t err_cap);
void cp_jwks_free(struct cp_jwks *k);
int cp_jwt_verify(const struct cp_jwks *k, const char *jwt, size_t len, const char *audience,
                  const char *trust_domain, uint64_t now_s, char *out_id, size_t id_cap, char *why,
                  size_t why_cap);

#endif
