// sc/muxframe.h — the frames of seam-mux/1: many proxied TCP connections
// ("streams") over one mTLS connection between two sidecars (docs/MUX.md).
//
// Every frame is an 8-byte header and a payload:
//
//   0       1       2               4                               8
//   +-------+-------+---------------+-------------------------------+
//   | type  | flags | length (BE16) | stream id (BE32)              |
//   +-------+-------+---------------+-------------------------------+
//   | payload: length bytes                                          |
//
//   DATA   (0) stream bytes, 0..65535; flag FIN: the sender's half-close
//              after these bytes (TCP FIN of its side).
//   OPEN   (1) the client opens stream id (ids only grow); payload: the
//              destination, 0..255 bytes (tunnel mode: empty).
//   RST    (2) abort the stream; payload: 4-byte reason code.
//   WINDOW (3) the receiver wrote this many more bytes of the stream on
//              (4-byte increment, 1..2^31-1): the sender may send as many.
//   GOAWAY (4) stream id 0; payload: the last stream id the sender accepted.
//              Open new streams on another session; the open ones finish.
//   BLOCKED (5) seam-mux/2 only: the sender has used all its credit on the
//              stream and stopped reading its source; payload: the bytes it
//              has sent on the stream, mod 2^32 (informational). The
//              receiver may take it as a sign that the window, not the
//              sender's app, limits the stream (docs/MUX.md).
//
// seam-mux/2 is seam-mux/1 plus BLOCKED. A client offers both (ALPN), a
// server picks the newest it knows, and a session's decoder knows BLOCKED
// only on a seam-mux/2 session (elsewhere it is an unknown type).
//
// The decoder below only checks what a frame says about itself (known type,
// flags, length, id); what it means for a session (is the stream open, does
// the window allow it) is the session's job (proxy/mux.c). It takes bytes in
// any split and never copies DATA payloads: they are handed on in slices.
#ifndef SC_MUXFRAME_H
#define SC_MUXFRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SC_MUX_ALPN "seam-mux/1"
#define SC_MUX_ALPN2 "seam-mux/2"
// SC_MUX_ALPN_WIRE: the versions in ALPN wire form (length-prefixed), newest
// first, as clients offer them and servers prefer them.
#define SC_MUX_ALPN_WIRE "\x0a" SC_MUX_ALPN2 "\x0a" SC_MUX_ALPN
_Static_assert(sizeof(SC_MUX_ALPN2) - 1 == 0x0a && sizeof(SC_MUX_ALPN) - 1 == 0x0a,
               "SC_MUX_ALPN_WIRE lengths");
#define SC_MUX_HDR_LEN 8
#define SC_MUX_MAX_DATA 65535
#define SC_MUX_MAX_DEST 255
#define SC_MUX_FLAG_FIN 0x01u

enum sc_mux_type {
    SC_MUX_DATA = 0,
    SC_MUX_OPEN = 1,
    SC_MUX_RST = 2,
    SC_MUX_WINDOW = 3,
    SC_MUX_GOAWAY = 4,
    SC_MUX_BLOCKED = 5, // seam-mux/2
};

// RST reason codes (informational: both ends close the stream either way).
enum sc_mux_rst {
    SC_MUX_RST_CANCEL = 0,      // the sender's side closed with an error
    SC_MUX_RST_REFUSED = 1,     // the server could not reach the destination
    SC_MUX_RST_FLOW = 2,        // the peer sent beyond its window
    SC_MUX_RST_NOT_ALLOWED = 3, // the server does not take new streams (draining)
};

// sc_mux_put_hdr writes one frame header into |out|.
void sc_mux_put_hdr(uint8_t out[SC_MUX_HDR_LEN], enum sc_mux_type type, uint8_t flags, uint16_t len,
                    uint32_t sid);

// sc_mux_put_u32 writes |v| big-endian (the payload of RST, WINDOW, GOAWAY).
void sc_mux_put_u32(uint8_t out[4], uint32_t v);

// What the decoder reports. Each callback returns 0 to go on, or anything
// else to stop decoding (sc_mux_decode then returns that value).
struct sc_mux_frame_cbs {
    // A complete OPEN, RST, WINDOW, GOAWAY or BLOCKED frame. |arg32| is the
    // 4-byte payload of RST/WINDOW/GOAWAY/BLOCKED (0 for OPEN); |dest|/|dest_len| the OPEN
    // payload (NULL/0 otherwise).
    int (*control)(void *arg, enum sc_mux_type type, uint32_t sid, uint32_t arg32,
                   const uint8_t *dest, size_t dest_len);
    // A slice of a DATA payload (never empty), in order.
    int (*data)(void *arg, uint32_t sid, const uint8_t *p, size_t n);
    // The end of a DATA frame: |fin| if it carried the FIN flag. Runs for
    // every DATA frame, also an empty one, after its slices.
    int (*data_end)(void *arg, uint32_t sid, bool fin);
};

struct sc_mux_decoder {
    uint8_t hdr[SC_MUX_HDR_LEN];
    uint8_t payload[SC_MUX_MAX_DEST]; // control payloads are collected here
    size_t have;                      // header bytes, then control payload bytes, collected
    size_t left;                      // DATA payload bytes still to come
    bool in_payload;                  // the header of the current frame is complete
    enum sc_mux_type type;
    uint8_t flags;
    uint16_t len;
    uint32_t sid;
    bool v2; // seam-mux/2: BLOCKED frames are known (set after sc_mux_decoder_init)
};

// SC_MUX_EPROTO is returned for a malformed frame (with a reason in |*err|).
#define SC_MUX_EPROTO (-1)

// sc_mux_decoder_init readies |d| for the first byte of a connection.
void sc_mux_decoder_init(struct sc_mux_decoder *d);

// sc_mux_decode feeds |n| bytes. Returns 0 when all were consumed (a frame
// may be incomplete: the rest comes with the next call), SC_MUX_EPROTO with
// |*err| set to a static reason for a malformed frame, or the nonzero value
// a callback returned. After a nonzero return the decoder must not be fed
// again.
int sc_mux_decode(struct sc_mux_decoder *d, const uint8_t *p, size_t n,
                  const struct sc_mux_frame_cbs *cbs, void *arg, const char **err);

// sc_mux_type_name returns "DATA", "OPEN", ... or "?".
const char *sc_mux_type_name(unsigned type);

#endif
