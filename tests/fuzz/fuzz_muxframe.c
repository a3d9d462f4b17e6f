// fuzz_muxframe.c — the seam-mux frame decoder (sc/muxframe.h), the first
// parser of bytes an authenticated peer proxy sends on a session. Checks
// that decoding is the same whatever the split (the first input byte picks
// the cut), that DATA slices never exceed the frame's declared length, and
// that an error is final and names a reason; each input is decoded as
// seam-mux/1 and as seam-mux/2 (which knows BLOCKED): what seam-mux/1 decodes,
// seam-mux/2 decodes the same way.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sc/muxframe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

struct trace {
    uint64_t hash; // of every event, in order
    size_t events;
    size_t frame_data; // DATA bytes of the current frame so far
};

static void mix(struct trace *t, uint64_t v)
{
    t->hash = (t->hash ^ v) * 0x100000001b3ull;
    t->events++;
}

static int on_control(void *arg, enum sc_mux_type type, uint32_t sid, uint32_t arg32,
                      const uint8_t *dest, size_t dest_len)
{
    struct trace *t = arg;
    CHECK(type != SC_MUX_DATA);
    CHECK(dest_len <= SC_MUX_MAX_DEST);
    CHECK((dest == NULL) == (dest_len == 0));
    CHECK((type == SC_MUX_GOAWAY) == (sid == 0));
    mix(t, type);
    mix(t, sid);
    mix(t, arg32);
    for (size_t i = 0; i < dest_len; i++) {
        mix(t, dest[i]);
    }
    return 0;
}

static int on_data(void *arg, uint32_t sid, const uint8_t *p, size_t n)
{
    struct trace *t = arg;
    CHECK(n > 0 && sid != 0);
    t->frame_data += n;
    CHECK(t->frame_data <= SC_MUX_MAX_DATA);
    for (size_t i = 0; i < n; i++) {
        t->hash = (t->hash ^ p[i]) * 0x100000001b3ull; // bytes, not slice bounds
    }
    return 0;
}

static int on_data_end(void *arg, uint32_t sid, bool fin)
{
    struct trace *t = arg;
    mix(t, sid);
    mix(t, fin);
    mix(t, t->frame_data);
    t->frame_data = 0;
    return 0;
}

static const struct sc_mux_frame_cbs cbs = {on_control, on_data, on_data_end};

static int run(const uint8_t *p, size_t n, size_t cut, bool v2, struct trace *t, const char **err)
{
    struct sc_mux_decoder d;
    sc_mux_decoder_init(&d);
    d.v2 = v2;
    memset(t, 0, sizeof(*t));
    t->hash = 0xcbf29ce484222325ull;
    int r = sc_mux_decode(&d, p, cut, &cbs, t, err);
    if (r == 0) {
        r = sc_mux_decode(&d, p + cut, n - cut, &cbs, t, err);
    }
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    size_t cut = size > 1 ? data[0] % size : 0;
    data++;
    size--;
    if (cut > size) {
        cut = size;
    }
    int rv[2];
    struct trace whole[2];
    for (int v2 = 0; v2 < 2; v2++) {
        struct trace b;
        const char *ea = NULL, *eb = NULL;
        int ra = run(data, size, size, v2, &whole[v2], &ea);
        int rb = run(data, size, cut, v2, &b, &eb);
        CHECK(ra == 0 || ra == SC_MUX_EPROTO);
        CHECK(ra == rb);
        CHECK((ra == SC_MUX_EPROTO) == (ea != NULL));
        if (ra != 0) {
            CHECK(strcmp(ea, eb) == 0);
        } else {
            CHECK(whole[v2].hash == b.hash && whole[v2].events == b.events);
        }
        rv[v2] = ra;
    }
    // seam-mux/2 decodes all that seam-mux/1 does, and the same way.
    if (rv[0] == 0) {
        CHECK(rv[1] == 0);
        CHECK(whole[0].hash == whole[1].hash && whole[0].events == whole[1].events);
    }
    return 0;
}
