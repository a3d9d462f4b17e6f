// fuzz_mesh: the mesh-file parser (control-plane/src/cp_mesh.c). Any input
// either parses into a snapshot that packs and round-trips, or fails with an
// error that names the file and a line.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cp_mesh.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Seam__V1__Snapshot *s = NULL;
    char err[512];
    err[0] = '\0';
    if (cp_mesh_parse(data, size, "f.yaml", &s, err, sizeof(err)) != 0) {
        if (strncmp(err, "f.yaml:", 7) != 0 || s != NULL) {
            abort();
        }
        return 0;
    }
    size_t len = seam__v1__snapshot__get_packed_size(s);
    uint8_t *buf = malloc(len + 1);
    if (buf == NULL) {
        abort();
    }
    seam__v1__snapshot__pack(s, buf);
    Seam__V1__Snapshot *back = seam__v1__snapshot__unpack(NULL, len, buf);
    if (back == NULL || back->n_services != s->n_services ||
        back->n_inbound_ports != s->n_inbound_ports) {
        abort();
    }
    seam__v1__snapshot__free_unpacked(back, NULL);
    free(buf);
    cp_mesh_free(s);
    return 0;
}
