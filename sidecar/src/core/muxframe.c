// muxframe.c — seam-mux/1 and /2 frame header encoding and an incremental decoder
// (sc/muxframe.h). No allocation, no copies of DATA payloads.
#include "sc/muxframe.h"

#include <string.h>

void sc_mux_put_u32(uint8_t out[4], uint32_t v)
{
    out[0] = (uint8_t)(v >> 24);
    out[1] = (uint8_t)(v >> 16);
    out[2] = (uint8_t)(v >> 8);
    out[3] = (uint8_t)v;
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void sc_mux_put_hdr(uint8_t out[SC_MUX_HDR_LEN], enum sc_mux_type type, uint8_t flags, uint16_t len,
                    uint32_t sid)
{
    out[0] = (uint8_t)type;
    out[1] = flags;
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
    sc_mux_put_u32(out + 4, sid);
}

const char *sc_mux_type_name(unsigned type)
{
    switch (type) {
    case SC_MUX_DATA:
        return "DATA";
    case SC_MUX_OPEN:
        return "OPEN";
    case SC_MUX_RST:
        return "RST";
    case SC_MUX_WINDOW:
        return "WINDOW";
    case SC_MUX_GOAWAY:
        return "GOAWAY";
    case SC_MUX_BLOCKED:
        return "BLOCKED";
    default:
        return "?";
    }
}

void sc_mux_decoder_init(struct sc_mux_decoder *d)
{
    memset(d, 0, sizeof(*d));
}

// check_header validates a complete header; returns NULL or a reason.
static const char *check_header(const struct sc_mux_decoder *d)
{
    switch (d->type) {
    case SC_MUX_DATA:
        if (d->flags & ~SC_MUX_FLAG_FIN) {
            return "unknown DATA flags";
        }
        return d->sid == 0 ? "DATA on stream 0" : NULL;
    case SC_MUX_OPEN:
        if (d->len > SC_MUX_MAX_DEST) {
            return "OPEN destination longer than 255 bytes";
        }
        break;
    case SC_MUX_BLOCKED:
        if (!d->v2) {
            return "unknown frame type"; // seam-mux/1 has no BLOCKED
        }
        // fall through
    case SC_MUX_RST:
    case SC_MUX_WINDOW:
    case SC_MUX_GOAWAY:
        if (d->len != 4) {
            return "control frame payload is not 4 bytes";
        }
        break;
    default:
        return "unknown frame type";
    }
    if (d->flags != 0) {
        return "flags on a control frame";
    }
    if ((d->type == SC_MUX_GOAWAY) != (d->sid == 0)) {
        return d->sid == 0 ? "stream 0 on a stream frame" : "GOAWAY on a stream";
    }
    return NULL;
}

int sc_mux_decode(struct sc_mux_decoder *d, const uint8_t *p, size_t n,
                  const struct sc_mux_frame_cbs *cbs, void *arg, const char **err)
{
    *err = NULL;
    while (n > 0) {
        if (!d->in_payload) {
            size_t take = SC_MUX_HDR_LEN - d->have;
            if (take > n) {
                take = n;
            }
            memcpy(d->hdr + d->have, p, take);
            d->have += take;
            p += take;
            n -= take;
            if (d->have < SC_MUX_HDR_LEN) {
                return 0;
            }
            d->type = (enum sc_mux_type)d->hdr[0];
            d->flags = d->hdr[1];
            d->len = (uint16_t)(d->hdr[2] << 8 | d->hdr[3]);
            d->sid = get_u32(d->hdr + 4);
            if ((*err = check_header(d)) != NULL) {
                return SC_MUX_EPROTO;
            }
            d->in_payload = true;
            d->have = 0;
            d->left = d->len;
        }
        if (d->type == SC_MUX_DATA) {
            size_t take = d->left < n ? d->left : n;
            if (take > 0) {
                int r = cbs->data(arg, d->sid, p, take);
                if (r != 0) {
                    return r;
                }
                p += take;
                n -= take;
                d->left -= take;
            }
            if (d->left > 0) {
                return 0;
            }
            d->in_payload = false;
            d->have = 0;
            int r = cbs->data_end(arg, d->sid, (d->flags & SC_MUX_FLAG_FIN) != 0);
            if (r != 0) {
                return r;
            }
            continue;
        }
        size_t take = d->len - d->have;
        if (take > n) {
            take = n;
        }
        memcpy(d->payload + d->have, p, take);
        d->have += take;
        p += take;
        n -= take;
        if (d->have < d->len) {
            return 0;
        }
        d->in_payload = false;
        d->have = 0;
        uint32_t a32 = d->type == SC_MUX_OPEN ? 0 : get_u32(d->payload);
        int r = cbs->control(arg, d->type, d->sid, a32,
                             d->type == SC_MUX_OPEN && d->len > 0 ? d->payload : NULL,
                             d->type == SC_MUX_OPEN ? d->len : 0);
        if (r != 0) {
            return r;
        }
    }
    return 0;
}
