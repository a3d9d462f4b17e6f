// admin_int.h — internals shared by the files of src/admin/.
#ifndef SC_ADMIN_INT_H
#define SC_ADMIN_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <sys/socket.h>

#include "sc/admin.h"

// sc_admin__file_certs_json appends the /certs JSON object for the PEM files
// |cert_path| (leaf first, then chain) and |trust_path| (roots, may be NULL):
// {"source":"files","leaf":{…}|null,"chain":[…],"roots":[…],"error":…}.
// Never reads or prints a private key.
void sc_admin__file_certs_json(struct sc_admin_buf *out, const char *cert_path,
                               const char *trust_path);

// sc_admin__file_cert_metrics appends seam_cert_expiry_timestamp_seconds
// {role="leaf",spiffe_id} and, when |trust_path| is set, seam_trust_bundle_roots.
void sc_admin__file_cert_metrics(struct sc_admin_buf *out, const char *cert_path,
                                 const char *trust_path);

// sc_admin__file_cert_valid reports whether the leaf in |cert_path| is valid
// at Unix time |now| (not-before <= now < not-after).
bool sc_admin__file_cert_valid(const char *cert_path, int64_t now);

#endif
