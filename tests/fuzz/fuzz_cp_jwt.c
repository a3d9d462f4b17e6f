// fuzz_cp_jwt: JWKS parsing and JWT verification (control-plane/src/cp_auth.c).
// Input: a JWKS document, a NUL byte, then a compact JWS token.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cp_auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, '\0', size);
    size_t jwks_len = nul != NULL ? (size_t)(nul - data) : size;
    char err[256], id[512], why[128];
    struct cp_jwks *k = cp_jwks_parse(data, jwks_len, err, sizeof(err));
    if (k == NULL || nul == NULL) {
        cp_jwks_free(k);
        return 0;
    }
    size_t tok_len = size - jwks_len - 1;
    char *tok = malloc(tok_len + 1);
    if (tok == NULL) {
        abort();
    }
    memcpy(tok, nul + 1, tok_len);
    tok[tok_len] = '\0';
    if (cp_jwt_verify(k, tok, tok_len, "aud", "td.test", 1700000000, id, sizeof(id), why,
                      sizeof(why)) == 0 &&
        strncmp(id, "spiffe://td.test/ns/", 20) != 0) {
        abort(); // an accepted token always maps to an ID in our trust domain
    }
    free(tok);
    cp_jwks_free(k);
    return 0;
}
