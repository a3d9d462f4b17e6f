// fuzz_clienthello.c — the PERMISSIVE-port ClientHello detector. Checks that
// the answer is stable as bytes arrive (a decision on a prefix never changes
// with more bytes), that it never needs more than SC_MESH_DETECT_BYTES, and
// that "TLS" is given only for a handshake record header followed by a
// ClientHello type byte.
#include <stdint.h>
#include <stdlib.h>

#include "sc/mesh.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    enum sc_mesh_detect full = sc_mesh_detect_client_hello(data, size);
    if (size >= SC_MESH_DETECT_BYTES) {
        CHECK(full != SC_DETECT_NEED_MORE);
    }
    if (full == SC_DETECT_TLS) {
        size_t rec = ((size_t)data[3] << 8) | data[4];
        CHECK(size >= 6 && data[0] == 0x16 && data[1] == 0x03 && data[2] <= 0x04);
        CHECK(rec >= 1 && rec <= 16384 + 2048 && data[5] == 0x01);
    }
    enum sc_mesh_detect first = SC_DETECT_NEED_MORE;
    for (size_t k = 0; k <= size && k <= SC_MESH_DETECT_BYTES + 2; k++) {
        enum sc_mesh_detect d = sc_mesh_detect_client_hello(data, k);
        if (first != SC_DETECT_NEED_MORE) {
            CHECK(d == first); // decided once, for good
        } else {
            first = d;
        }
    }
    if (size <= SC_MESH_DETECT_BYTES + 2) {
        CHECK(first == full);
    }
    return 0;
}
