// mux.h — seam-mux on the data path (tunnel and mesh mode): the outbound proxy
// carries every client connection as a stream of one long-lived mTLS
// session to the inbound proxy, instead of one mTLS connection each
// (docs/MUX.md; frames in sc/muxframe.h).
//
// Why: per request a proxy pair otherwise makes one socket write and one
// read per hop and direction; the proxy-to-proxy hop's writes of all
// connections served in one loop turn leave as one write here, and its
// handshakes are paid once per session instead of once per connection.
//
// Threading: everything lives on one worker's loop.
#ifndef SC_PROXY_MUX_H
#define SC_PROXY_MUX_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct sc_worker;
struct sc_stream;

// SC_MUX_STREAM_WINDOW is the bytes a sender may have in flight per stream before
// the receiver's WINDOW frames (sent as it writes them on) give more.
#define SC_MUX_STREAM_WINDOW (256 * 1024)

// SC_MUX_MAX_STREAMS bounds the open streams of one session; the outbound
// opens another session beyond it, the inbound refuses (RST).
#define SC_MUX_MAX_STREAMS 128

// SC_MUX_GOAWAY_GRACE_MS: how long after its GOAWAY the inbound still takes
// new streams (OPENs the outbound sent before it heard); later ones are
// refused, reason goaway_ignored.
#define SC_MUX_GOAWAY_GRACE_MS 5000

// SC_MUX_SESS_IDLE_MS: the outbound closes a session that has had no stream
// this long (or for the idle timeout, if shorter); the inbound after twice
// that, if its client vanished without closing.
#define SC_MUX_SESS_IDLE_MS (5 * 60 * 1000)

// SC_MUX_RETRY_MS: after a peer refused seam-mux the outbound carries
// its connections 1:1 for this long, then offers seam-mux again (the peer
// may have been upgraded meanwhile).
#define SC_MUX_RETRY_MS (60 * 1000)

// sc_mux__worker_init prepares |w| (its flush handle). Always called.
void sc_mux__worker_init(struct sc_worker *w);

// sc_mux__worker_close closes what sc_mux__worker_init opened (stop).
void sc_mux__worker_close(struct sc_worker *w);

// sc_mux__wanted reports whether an outbound worker with cfg.mux carries
// new connections to |target| as streams now: false for SC_MUX_RETRY_MS
// after a peer without seam-mux (tunnel mode: on every worker; mesh mode:
// for that destination, on the worker that met it).
bool sc_mux__wanted(struct sc_worker *w, const struct sockaddr *target);

// sc_mux__accept takes one pending client connection of an outbound worker
// with cfg.mux and carries it as a stream.
void sc_mux__accept(struct sc_worker *w);

// sc_mux__carry carries |down|, a mesh outbound connection routed to
// |target| (mTLS; its server must present |peer_id|, copied) and already
// admitted and counted, accepted at |start_ms|, as a stream of a session to
// that destination and identity. 0, or SC_ENOMEM: |down| is still the
// caller's.
int sc_mux__carry(struct sc_worker *w, struct sc_stream *down, const struct sockaddr *target,
                  const char *peer_id, uint64_t start_ms);

// sc_mux__serve takes over |tls|, an accepted inbound stream whose TLS
// handshake negotiated SC_MUX_ALPN (authenticated and authorized), as a
// session; |peer| is its address. The caller forgets |tls|.
void sc_mux__serve(struct sc_worker *w, struct sc_stream *tls, const char *peer);

// sc_mux__negotiated reports whether |tls| negotiated SC_MUX_ALPN.
bool sc_mux__negotiated(const struct sc_stream *tls);

// sc_mux__sweep runs every tick: idle streams and sessions, session age,
// drain (|force|: the deadline passed, close everything).
void sc_mux__sweep(struct sc_worker *w, bool force);

// sc_mux__retire stops new streams on the worker's current outbound
// sessions (a new TLS snapshot: rotation); they close once empty.
void sc_mux__retire(struct sc_worker *w);

#endif
