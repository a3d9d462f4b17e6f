// Fuzz target for the config snapshot decoder + validator
// (control-client/src/snapshot.c): arbitrary bytes as a ConfigResponse
// message. Checks that a decoded, accepted snapshot really satisfies the
// invariants the sidecar relies on.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cc/config_client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    char nonce[128];
    Seam__V1__ConfigResponse *r =
        cc_snapshot_decode(data, size, err, sizeof(err), nonce, sizeof(nonce));
    if (r == NULL) {
        if (err[0] == '\0') {
            abort(); // every refusal has a reason
        }
        return 0;
    }
    const Seam__V1__Snapshot *s = r->snapshot;
    if (s == NULL || s->trust_bundle == NULL || s->trust_bundle->n_roots == 0) {
        abort();
    }
    for (size_t i = 0; i < s->n_inbound_ports; i++) {
        if (s->inbound_ports[i]->port == 0 || s->inbound_ports[i]->port > 65535) {
            abort();
        }
    }
    seam__v1__config_response__free_unpacked(r, NULL);
    return 0;
}
