// cp_mesh.h — the mesh description file (--mesh FILE, YAML): parsed and
// validated into a seam.v1.Snapshot without its trust bundle (the CA adds
// that). Pure: no I/O besides what the caller passes. Fuzzed.
#ifndef CP_MESH_H
#define CP_MESH_H

#include <stddef.h>
#include <stdint.h>

#include "seam/v1/config.pb-c.h"

// cp_mesh_parse parses |len| bytes of YAML. On success it returns 0 and a new
// snapshot in |*out| (trust_bundle NULL) that the caller frees with
// cp_mesh_free. On error it returns -1 and writes "NAME:LINE: reason" into
// |err|, where NAME is |name| (the file path, for messages).
int cp_mesh_parse(const uint8_t *data, size_t len, const char *name, Seam__V1__Snapshot **out,
                  char *err, size_t err_cap);

// cp_mesh_free frees a snapshot returned by cp_mesh_parse; NULL is ignored.
void cp_mesh_free(Seam__V1__Snapshot *s);

#endif
