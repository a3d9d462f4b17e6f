// mux.c — seam-mux sessions and streams (/1, and /2 with BLOCKED) (mux.h, docs/MUX.md).
//
//   outbound: accept client -> (the worker's open session, or a new one:
//             connect inbound, mTLS handshake offering seam-mux) ->
//             OPEN -> pump client <-> stream
//   inbound:  mTLS handshake chose seam-mux (forward.c) -> session ->
//             each OPEN: connect the app, pump stream <-> app
//
// Writes: frames of every stream go into the session's one plaintext buffer;
// it is encrypted and written once per loop turn (the worker's check handle,
// after all I/O callbacks of the turn) or when it fills. That is the point:
// N connections' requests served in one turn leave in one write.
//
// Flow control, per stream: a sender has SC_MUX_STREAM_WINDOW bytes of credit and
// stops reading its source when it runs out; the receiver gives credit back
// (WINDOW) as its writes to the local socket complete. A reader that stops
// thus stalls its own stream only; the session is always read. A sender may
// overshoot by one read buffer; beyond that the stream is reset. A receiver
// whose stream is limited by the window, not by its app, grows it (below).
#include "proxy/mux.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxy/proxy_int.h"
#include "sc/err.h"
#include "sc/limits.h"
#include "sc/log.h"
#include "sc/muxframe.h"
#include "sc/parse.h"
#include "sc/tcp_path.h"
#include "sc/tls.h"

#if __has_include("sc/failures.h")
#include "sc/failures.h"
#define SC_HAVE_FAILURES 1
#endif

// MUX_WIOV: slices of one session read a stream writes in place at once
// (libuv's try-write path takes up to 8). MUX_OIOV: pieces of one session
// write (frame headers and the client bytes they carry, see send_data_zc).
#define MUX_WIOV 8
#define MUX_OIOV 32

// MUX_ZC_MIN: a read at least this large is framed in place instead of
// copied into the session buffer (its header then costs a small TLS record
// of its own, which is cheap next to copying 16 KiB).
#define MUX_ZC_MIN (SC_BUF_SIZE / 2)

// Scheduling (docs/MUX.md "Sharing a session"). A session socket keeps at
// most MUX_NOTSENT_LOWAT bytes unsent in the kernel (TCP_NOTSENT_LOWAT); what
// it does not take waits in libuv's queue, and while anything waits there a
// stream that reads stops reading (blocked) until the queue drains, so its
// next bytes stay in its own socket instead of in front of other streams'.
// For MUX_CONGESTED_MS after a session write was queued its streams read in
// small buffers: what one read can put ahead of another stream's bytes.
// On a path with a round trip the kernel paces a session's bytes out over it,
// and 16 KiB unsent lasts tens of microseconds: the socket runs dry between
// two turns of the loop. So the limit follows the path (sess_tune_lowat):
// half of what the session sends per round trip of its TCP connection (its
// rate over the last MUX_RATE_MS or more, times the path's round trip,
// sc_tcp_min_rtt_us), at most MUX_NOTSENT_MAX, and MUX_NOTSENT_LOWAT while
// that is under twice MUX_NOTSENT_LOWAT. What waits unsent in front of another
// stream's bytes then lasts at most half the round trip those bytes take
// anyway; on one host it stays 16 KiB, within a zone it rises only at
// multi-Gbit/s rates.
#define MUX_NOTSENT_LOWAT (16 * 1024)
#define MUX_NOTSENT_MAX (1024 * 1024)
#define MUX_CONGESTED_MS 200

// Window growth (docs/MUX.md "Flow control per stream"). When the receiver
// gives credit back and finds the sender had used more than three quarters of
// the window while every write to the local socket since the last WINDOW went
// into the kernel at once (the app keeps up), the window, not the app, limits
// the stream: the same WINDOW frame grants MUX_WINDOW_STEP more, up to
// MUX_WINDOW_MAX. A sender whose bytes arrive spread over a round trip never
// shows three quarters of the window unacknowledged; on seam-mux/2 it says
// BLOCKED when it runs out of credit, which counts the same (peer_blocked).
// The growth of all streams of a worker is a reservation against its
// large-buffer budget (w->mux_window_extra), so what grown windows can make a
// worker hold stays within its --max-buffer-memory share. A stream
// whose app is behind when it gives credit back (bytes still queued for it)
// gives the growth back (a WINDOW that returns less than was written). A grant
// is an ordinary WINDOW increment, so an older seam-mux peer without growth takes
// the credit as it is, and sends with 256 KiB to a receiver that never grants
// more.
// Only a stream alone on its session grows: bytes a grown window keeps in
// flight sit in the one TCP flow (and the link queues) in front of every
// other stream's. "Alone" counts streams that move bytes: a session is shared
// for MUX_SHARED_HOLD_MS after one of its streams moved bytes within
// MUX_SHARED_HOLD_MS of another (chan_moved; an idle keep-alive connection
// beside a download does not count, one that sends a request now and then
// does, one connection after another does not). A stream whose session is
// shared when it gives credit back gives its growth back, and none grows.
// Past MUX_WINDOW_MAX a window grows only while the network's round trip is
// what it waits for (path_needs_more): up to four times what the stream
// delivers in one round trip of its session's TCP connection (the path's,
// sc_tcp_min_rtt_us, read by sess_tune_lowat), at most MUX_WINDOW_PATH_MAX.
// Between two proxies on one host or a short path that product stays far
// below 1 MiB - there the credit's round trip is the proxies' own CPU time,
// which a larger window only fills with queued bytes - while across zones or
// regions it is what TCP alone would keep in flight.
#define MUX_WINDOW_STEP SC_MUX_STREAM_WINDOW
#define MUX_WINDOW_MAX (4 * SC_MUX_STREAM_WINDOW)
#define MUX_WINDOW_PATH_MAX (32 * SC_MUX_STREAM_WINDOW)
#define MUX_SHARED_HOLD_MS 1000
// The rates path_needs_more and sess_tune_lowat multiply by the round trip
// (struct mux_rate): bytes given to the app (a stream) or written to the
// session (a session) per ms over the last period of at least MUX_RATE_MS,
// which ends at the first write after it (a pause counts in, so a rate is
// never stale-high).
#define MUX_RATE_MS 16

// Spreading (docs/MUX.md "Bulk streams"). An outbound stream that moves at
// least MUX_BULK_BYTES (one stream window) either way within
// MUX_BULK_WINDOW_MS marks its session as carrying bulk for MUX_BULK_HOLD_MS.
// A new stream then goes on the newest session to its destination without
// bulk, or opens one while the destination has fewer than cfg.mux_sessions,
// so small exchanges do not queue behind a download in one TCP flow.
// If such a session fails before it opens, the streams waiting on it go on
// one of the busy sessions instead, and the worker opens no more beside busy
// ones for MUX_SPREAD_BACKOFF_MS.
#define MUX_BULK_BYTES SC_MUX_STREAM_WINDOW
#define MUX_BULK_WINDOW_MS 100
#define MUX_BULK_HOLD_MS 1000
#define MUX_SPREAD_BACKOFF_MS 10000

enum sess_state { SESS_CONNECTING, SESS_HANDSHAKE, SESS_OPEN, SESS_CLOSING };
enum chan_state { CHAN_WAIT, CHAN_CONNECTING, CHAN_PUMP, CHAN_CLOSING };

// pend holds bytes that arrived for an inbound stream whose app connection
// is not up yet (bounded by the stream's window).
struct pend {
    struct pend *next;
    char *buf;
    size_t len;
};

// mux_rate: see MUX_RATE_MS (rate_count).
struct mux_rate {
    uint64_t since_ms; // start of the period |bytes| counts in
    uint64_t bytes;    // counted since since_ms
    uint64_t per_ms;   // bytes per ms over the last period
};

struct mux_chan {
    struct mux_chan *next; // session's list
    struct mux_chan *prev;
    struct mux_chan *hnext;   // session's id hash chain
    struct sc_mux_sess *sess; // NULL once unlinked
    struct sc_worker *w;
    struct sc_stream *plain; // client (outbound) or app (inbound); closed with the stream
    uint32_t sid;            // 0 until opened
    enum chan_state state;
    int64_t credit;       // bytes we may still send
    uint64_t unacked;     // received, not yet given back with WINDOW
    uint32_t rwin;        // window granted to the peer (grows to MUX_WINDOW_MAX, or further)
    bool backlog;         // a write to |plain| since the last WINDOW was queued
    bool peer_blocked;    // the peer sent BLOCKED since the last WINDOW (seam-mux/2)
    uint64_t to_ack;      // written on, not yet given back
    int inflight;         // writes to |plain| not completed
    bool paused;          // |plain| not read: out of credit
    bool blocked;         // |plain| not read: the session's socket is backed up
    bool fin_sent;        // |plain|'s EOF went out as FIN
    bool fin_recv;        // the peer's FIN arrived
    bool shut_pending;    // fin_recv before the app connection was up
    bool aged;            // past max_connection_age: FIN sent, closed after a grace period
    bool drop_in;         // inbound, aged: the peer's further DATA is dropped
    uint64_t await_since; // request bytes forwarded, no answer yet (busy poll, worker.c)
    uint64_t aged_ms;
    struct pend *pend_head;
    struct pend *pend_tail;
    char *wbuf; // bytes of this session read for |plain|, written after it
    size_t wlen;
    uv_buf_t wiov[MUX_WIOV]; // or: its slices of the session read, written in place
    unsigned niov;
    size_t iov_len;
    char *wsrc;             // the session read they point into
    bool zc;                // this read's slices go out in place (not copied)
    struct mux_chan *wnext; // session's wlist
    bool wlisted;           // on it
    uint64_t start_ms;
    uint64_t last_active_ms;
    uint64_t bytes_in;   // from the downstream (client / peer stream)
    uint64_t bytes_out;  // to the downstream
    uint64_t rate_ms;    // outbound: start of the window |rate_bytes| counts in
    uint64_t rate_bytes; // bytes moved either way since rate_ms
    struct mux_rate rx;  // bytes given to the app
};

struct sc_mux_sess {
    struct sc_mux_sess *next; // worker's list
    struct sc_mux_sess *prev;
    struct sc_mux_sess *flush_next; // worker's flush list
    struct sc_worker *w;
    struct sc_stream *s; // NULL once closed
    enum sess_state state;
    bool client;
    bool retired; // no new streams: closes once empty
    bool goaway_sent;
    bool flush_queued;
    bool spread;       // outbound: opened beside sessions carrying bulk
    uint32_t last_sid; // highest stream id opened
    struct mux_chan *chans;
    uint32_t nchans;
    uint32_t nblocked;        // streams waiting for the session's queue to drain
    uint32_t ntracked;        // session writes whose completion on_sess_written sees
    uint64_t small_until_ms;  // loop time its streams read small buffers until (a write queued)
    uint64_t bulk_until_ms;   // outbound: loop time it counts as carrying a bulk stream until
    uint64_t shared_until_ms; // loop time its streams' windows may grow from (MUX_SHARED_HOLD_MS)
    uint32_t moved_sid;       // the stream that moved bytes last (0: none, or it ended)
    uint64_t moved_ms;        // loop time it did
    struct mux_chan **buckets;
    uint32_t nbuckets; // power of two
    char *out;         // frames not yet written
    size_t out_len;
    size_t out_cut;          // out[0, out_cut) is in oiov already
    uv_buf_t oiov[MUX_OIOV]; // pieces of the next write when client bytes go in place
    unsigned noiov;
    char *ohold[MUX_OIOV / 2]; // the read buffers those point into
    unsigned nhold;
    char *rbuf;             // the read being decoded
    struct mux_chan *wlist; // streams given bytes by the read being decoded
    struct sc_mux_decoder dec;
    uint64_t start_ms;
    uint64_t idle_since_ms;
    struct mux_rate tx;     // bytes written to the session
    uint32_t lowat;         // its TCP_NOTSENT_LOWAT now (sess_tune_lowat)
    uint32_t rtt_us;        // its path's round trip when it last wrote (0: unknown)
    uint64_t goaway_ms;     // when GOAWAY was sent (inbound)
    uint64_t peer_until_ms; // loop time the peer's verified chain expires (0: unknown)
    uint64_t streams_total;
    struct sockaddr_storage target; // outbound: where it connects; inbound: the app
    char *peer_id; // outbound, mesh: the ID the inbound must present (NULL: the context's)
    char peer[64];
};

static const char *dir_name(const struct sc_worker *w)
{
    return w->proxy->cfg.dir == SC_DIR_INBOUND ? "inbound" : "outbound";
}

static void sess_close(struct sc_mux_sess *m, const char *reason);
static void carry(struct sc_worker *w, struct mux_chan *ch, const struct sockaddr *target,
                  const char *peer_id);
static void send_goaway(struct sc_mux_sess *m);
static void chan_finalize(struct mux_chan *ch, const char *reason, bool send_rst);

// ---- stream id table ------------------------------------------------------

static uint32_t bucket_of(const struct sc_mux_sess *m, uint32_t sid)
{
    return (sid * 2654435761u) & (m->nbuckets - 1);
}

static struct mux_chan *chan_find(const struct sc_mux_sess *m, uint32_t sid)
{
    if (m->buckets == NULL) {
        return NULL;
    }
    for (struct mux_chan *ch = m->buckets[bucket_of(m, sid)]; ch != NULL; ch = ch->hnext) {
        if (ch->sid == sid) {
            return ch;
        }
    }
    return NULL;
}

static void hash_insert(struct sc_mux_sess *m, struct mux_chan *ch)
{
    if (m->buckets == NULL || m->nchans > m->nbuckets * 2) {
        uint32_t n = m->buckets == NULL ? 16 : m->nbuckets * 2;
        struct mux_chan **b = calloc(n, sizeof(*b));
        if (b == NULL) {
            abort(); // like sc_buf_get: no graceful path for a few hundred bytes
        }
        struct mux_chan **old = m->buckets;
        uint32_t oldn = m->nbuckets;
        m->buckets = b;
        m->nbuckets = n;
        for (uint32_t i = 0; i < oldn; i++) {
            struct mux_chan *c = old[i];
            while (c != NULL) {
                struct mux_chan *next = c->hnext;
                uint32_t k = bucket_of(m, c->sid);
                c->hnext = b[k];
                b[k] = c;
                c = next;
            }
        }
        free(old);
    }
    uint32_t k = bucket_of(m, ch->sid);
    ch->hnext = m->buckets[k];
    m->buckets[k] = ch;
}

static void hash_remove(struct sc_mux_sess *m, struct mux_chan *ch)
{
    if (ch->sid == 0 || m->buckets == NULL) {
        return;
    }
    struct mux_chan **p = &m->buckets[bucket_of(m, ch->sid)];
    while (*p != NULL && *p != ch) {
        p = &(*p)->hnext;
    }
    if (*p == ch) {
        *p = ch->hnext;
    }
}

// chan_moved notes |n| bytes |ch| moved either way: the session is shared
// while its streams take turns (MUX_SHARED_HOLD_MS), and an outbound
// session's bulk mark counts them (the outbound places new streams; the
// inbound does not).
static void chan_moved(struct sc_mux_sess *m, struct mux_chan *ch, size_t n)
{
    uint64_t now = uv_now(&m->w->loop);
    if (m->moved_sid != ch->sid) {
        if (m->moved_sid != 0 && now - m->moved_ms < MUX_SHARED_HOLD_MS) {
            m->shared_until_ms = now + MUX_SHARED_HOLD_MS;
        }
        m->moved_sid = ch->sid;
    }
    m->moved_ms = now;
    if (!m->client) {
        return;
    }
    if (now - ch->rate_ms >= MUX_BULK_WINDOW_MS) {
        ch->rate_ms = now;
        ch->rate_bytes = 0;
    }
    ch->rate_bytes += n;
    if (ch->rate_bytes >= MUX_BULK_BYTES) {
        m->bulk_until_ms = now + MUX_BULK_HOLD_MS;
    }
}

// ---- output: frames into the session buffer, one write per loop turn -------

static void on_sess_written(struct sc_stream *s, int status, void *arg);

static void release_holds(struct sc_mux_sess *m)
{
    for (unsigned i = 0; i < m->nhold; i++) {
        sc_buf_release(m->ohold[i]);
    }
    m->nhold = 0;
    m->noiov = 0;
}

// rate_count counts |n| bytes at loop time |now| into |r|; true when that
// ended a period (r->per_ms is new).
static bool rate_count(struct mux_rate *r, uint64_t n, uint64_t now)
{
    uint64_t dt = now - r->since_ms;
    if (dt < MUX_RATE_MS) {
        r->bytes += n;
        return false;
    }
    r->per_ms = r->bytes / dt;
    r->since_ms = now;
    r->bytes = n;
    return true;
}

// sess_set_lowat sets the session socket's TCP_NOTSENT_LOWAT to |lowat|.
static void sess_set_lowat(struct sc_mux_sess *m, uint32_t lowat)
{
    // A kernel without the option only loses the turns streams take.
    uv_os_fd_t fd;
    int v = (int)lowat;
    if (uv_fileno((uv_handle_t *)sc_stream_get0_tcp(m->s), &fd) == 0 &&
        setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &v, sizeof(v)) != 0) {
        sc_debug("mux.notsent_lowat_failed", "error=%s", strerror(errno));
    }
    m->lowat = lowat;
}

// sess_tune_lowat counts |n| bytes written to |m| and, once per MUX_RATE_MS
// or more, reads its path's round trip (m->rtt_us, which path_needs_more
// uses too) and sets its unsent limit for the path: see MUX_NOTSENT_LOWAT.
static void sess_tune_lowat(struct sc_mux_sess *m, size_t n)
{
    if (!rate_count(&m->tx, n, uv_now(&m->w->loop))) {
        return;
    }
    uint64_t rate = m->tx.per_ms;
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)sc_stream_get0_tcp(m->s), &fd) != 0 ||
        sc_tcp_min_rtt_us(fd, &m->rtt_us) != 0) {
        m->rtt_us = 0;
    }
    uint64_t want = rate * m->rtt_us / 1000 / 2;
    want = want < 2 * MUX_NOTSENT_LOWAT ? MUX_NOTSENT_LOWAT
           : want > MUX_NOTSENT_MAX     ? MUX_NOTSENT_MAX
                                        : want;
    // Changes of less than an eighth are not worth a syscall.
    if (want > m->lowat + m->lowat / 8 || want < m->lowat - m->lowat / 8) {
        sc_debug("mux.notsent_lowat", "dir=%s peer=%s bytes=%llu rate_bpms=%llu", dir_name(m->w),
                 m->peer, (unsigned long long)want, (unsigned long long)rate);
        sess_set_lowat(m, (uint32_t)want);
    }
}

static void sess_write_now(struct sc_mux_sess *m)
{
    if (m->out == NULL) {
        return;
    }
    char *o = m->out;
    if (m->out_len > m->out_cut) {
        m->oiov[m->noiov++] = uv_buf_init(o + m->out_cut, (unsigned)(m->out_len - m->out_cut));
    }
    unsigned n = m->noiov;
    m->out = NULL;
    m->out_len = 0;
    m->out_cut = 0;
    if (m->s == NULL || m->state != SESS_OPEN) {
        sc_buf_release(o);
        release_holds(m);
        return;
    }
    size_t total = 0;
    for (unsigned i = 0; i < n; i++) {
        total += m->oiov[i].len;
    }
    sess_tune_lowat(m, total);
    // A TLS stream encrypts during the call: the pieces' buffers are free
    // to go right after it. A write that may queue behind others, or that
    // blocked streams wait on, reports its completion (on_sess_written); the
    // last one queued always does while a stream is blocked.
    bool track = m->nblocked > 0 || sc_stream_write_queue_size(m->s) > 0;
    int r = sc_stream_write_owned(m->s, m->oiov, n, o, track ? on_sess_written : NULL, m);
    m->ntracked += track && r == 0;
    release_holds(m);
    if (r != 0) {
        sc_warn("mux.write_failed", "dir=%s peer=%s error=%s", dir_name(m->w), m->peer,
                sc_strerror(r));
        sess_close(m, "write_error");
        return;
    }
    if (sc_stream_write_queue_size(m->s) > 0) {
        m->small_until_ms = uv_now(&m->w->loop) + MUX_CONGESTED_MS;
    }
}

static void flush_unlink(struct sc_mux_sess *m)
{
    if (!m->flush_queued) {
        return;
    }
    struct sc_mux_sess **p = &m->w->mux_flush;
    while (*p != NULL && *p != m) {
        p = &(*p)->flush_next;
    }
    if (*p == m) {
        *p = m->flush_next;
    }
    m->flush_queued = false;
}

static void flush_all(struct sc_worker *w)
{
    while (w->mux_flush != NULL) {
        struct sc_mux_sess *m = w->mux_flush;
        w->mux_flush = m->flush_next;
        m->flush_queued = false;
        sess_write_now(m);
    }
}

// Frames queued by I/O callbacks are written after the poll phase (check);
// those queued by timers (a write completion reported on the next turn,
// giving window back) before the loop sleeps in the next poll (prepare).
static void on_mux_check(uv_check_t *h)
{
    flush_all(h->data);
}

static void on_mux_prepare(uv_prepare_t *h)
{
    flush_all(h->data);
}

// reserve returns room for |need| bytes (at most a buffer) at the end of the
// session's pending frames, writing out a full buffer first; NULL if that
// write failed and closed the session (nothing may be queued on it then: it
// is freed once its stream has closed).
static uint8_t *reserve(struct sc_mux_sess *m, size_t need, bool large, size_t *room)
{
    if (m->out != NULL && sc_buf_size(m->out) - m->out_len < need) {
        sess_write_now(m);
        if (m->state != SESS_OPEN) {
            return NULL;
        }
    }
    if (m->out == NULL) {
        m->out = sc_buf_get_sized(&m->w->pool, large);
        m->out_len = 0;
    }
    if (!m->flush_queued) {
        m->flush_queued = true;
        m->flush_next = m->w->mux_flush;
        m->w->mux_flush = m;
    }
    *room = sc_buf_size(m->out) - m->out_len;
    return (uint8_t *)m->out + m->out_len;
}

static void send_control(struct sc_mux_sess *m, enum sc_mux_type type, uint32_t sid, uint32_t arg32)
{
    if (m->state != SESS_OPEN) {
        return;
    }
    size_t room;
    uint8_t *p = reserve(m, SC_MUX_HDR_LEN + 4, false, &room);
    if (p == NULL) {
        return;
    }
    sc_mux_put_hdr(p, type, 0, type == SC_MUX_OPEN ? 0 : 4, sid);
    if (type == SC_MUX_OPEN) {
        m->out_len += SC_MUX_HDR_LEN;
        return;
    }
    sc_mux_put_u32(p + SC_MUX_HDR_LEN, arg32);
    m->out_len += SC_MUX_HDR_LEN + 4;
}

// send_data frames |n| bytes (n may be 0 with |fin|) of stream |sid|.
static void send_data(struct sc_mux_sess *m, uint32_t sid, const char *p, size_t n, bool fin)
{
    if (m->state != SESS_OPEN) {
        return;
    }
    do {
        // A large write goes into large buffers (one socket write per 256 KiB);
        // no tiny tail of it is put into a nearly full buffer.
        size_t want = n < 1024 ? n : 1024;
        size_t room;
        uint8_t *o = reserve(m, SC_MUX_HDR_LEN + want, n > SC_BUF_SIZE / 2, &room);
        if (o == NULL) {
            return;
        }
        size_t chunk = room - SC_MUX_HDR_LEN;
        if (chunk > n) {
            chunk = n;
        }
        if (chunk > SC_MUX_MAX_DATA) {
            chunk = SC_MUX_MAX_DATA;
        }
        bool last = chunk == n;
        sc_mux_put_hdr(o, SC_MUX_DATA, last && fin ? SC_MUX_FLAG_FIN : 0, (uint16_t)chunk, sid);
        if (chunk > 0) {
            memcpy(o + SC_MUX_HDR_LEN, p, chunk);
        }
        m->out_len += SC_MUX_HDR_LEN + chunk;
        p += chunk;
        n -= chunk;
    } while (n > 0);
}

// send_data_zc frames |n| bytes that a read left in |buf| (a pool buffer it
// takes over) without copying them: the headers go into the session buffer,
// the bytes are encrypted from where they are when the session is written.
static void send_data_zc(struct sc_mux_sess *m, uint32_t sid, char *buf, size_t n)
{
    const char *p = buf;
    while (n > 0 && m->state == SESS_OPEN) {
        // Room for this frame's two pieces, the final piece, and the buffer.
        if (m->noiov + 3 > MUX_OIOV || m->nhold == MUX_OIOV / 2) {
            sess_write_now(m);
            continue; // the session may have closed
        }
        size_t room;
        uint8_t *o = reserve(m, SC_MUX_HDR_LEN, false, &room);
        if (o == NULL) {
            break;
        }
        size_t chunk = n < SC_MUX_MAX_DATA ? n : SC_MUX_MAX_DATA;
        sc_mux_put_hdr(o, SC_MUX_DATA, 0, (uint16_t)chunk, sid);
        m->out_len += SC_MUX_HDR_LEN;
        m->oiov[m->noiov++] = uv_buf_init(m->out + m->out_cut, (unsigned)(m->out_len - m->out_cut));
        m->out_cut = m->out_len;
        m->oiov[m->noiov++] = uv_buf_init((char *)p, (unsigned)chunk);
        p += chunk;
        n -= chunk;
        if (n == 0) {
            m->ohold[m->nhold++] = buf;
            return;
        }
    }
    // Not queued whole: the session closed, or a full buffer was written out
    // with this buffer's first frames (encrypted already).
    sc_buf_release(buf);
}

// ---- streams ---------------------------------------------------------------

static void on_chan_closed(struct sc_stream *s)
{
    struct mux_chan *ch = sc_stream_get_data(s);
    struct sc_worker *w = ch->w;
    w->mux_window_extra -= ch->rwin - SC_MUX_STREAM_WINDOW;
    free(ch);
    sc_worker__conn_gone(w);
}

static void chan_unlink(struct mux_chan *ch)
{
    struct sc_mux_sess *m = ch->sess;
    if (m == NULL) {
        return;
    }
    hash_remove(m, ch);
    if (m->moved_sid == ch->sid) {
        m->moved_sid = 0; // the next stream to move bytes does not share with it
    }
    if (ch->prev != NULL) {
        ch->prev->next = ch->next;
    } else {
        m->chans = ch->next;
    }
    if (ch->next != NULL) {
        ch->next->prev = ch->prev;
    }
    ch->sess = NULL;
    if (ch->blocked) {
        ch->blocked = false;
        m->nblocked--;
    }
    if (--m->nchans == 0) {
        m->idle_since_ms = uv_now(&m->w->loop);
        if (m->retired && m->state == SESS_OPEN) {
            sess_close(m, m->w->draining ? "drain" : "retired");
        }
    }
}

static void chan_link(struct sc_mux_sess *m, struct mux_chan *ch)
{
    ch->sess = m;
    ch->next = m->chans;
    ch->prev = NULL;
    if (m->chans != NULL) {
        m->chans->prev = ch;
    }
    m->chans = ch;
    m->nchans++;
    m->streams_total++;
}

// chan_new makes a stream around |plain| (NULL: a new socket stream).
static struct mux_chan *chan_new(struct sc_worker *w, struct sc_stream *plain)
{
    struct mux_chan *ch = calloc(1, sizeof(*ch));
    if (ch == NULL) {
        return NULL;
    }
    ch->w = w;
    ch->credit = SC_MUX_STREAM_WINDOW;
    ch->rwin = SC_MUX_STREAM_WINDOW;
    ch->start_ms = ch->last_active_ms = uv_now(&w->loop);
    ch->plain = plain != NULL ? plain : sc_stream_new(&w->loop, &w->pool);
    sc_stream_set_data(ch->plain, ch);
    atomic_fetch_add(&w->num_conns, 1);
    return ch;
}

// chan_finalize ends a stream once: RST to the peer unless both sides ended
// cleanly (or the peer reset it), then the local socket is closed.
static void chan_finalize(struct mux_chan *ch, const char *reason, bool send_rst)
{
    if (ch->state == CHAN_CLOSING) {
        return;
    }
    struct sc_worker *w = ch->w;
    enum sc_dir dir = w->proxy->cfg.dir;
    bool pumped = ch->state == CHAN_PUMP;
    ch->state = CHAN_CLOSING;
    struct sc_mux_sess *m = ch->sess;
    if (pumped) {
        sc_info("conn.close",
                "dir=%s peer=%s peer_id=%s tls=mux stream=%u bytes_in=%llu bytes_out=%llu "
                "duration_ms=%llu reason=%s",
                dir_name(w), m ? m->peer : "-",
                m && m->s ? sc_tls_peer_id(sc_stream_get0_ssl(m->s)) : "-", ch->sid,
                (unsigned long long)ch->bytes_in, (unsigned long long)ch->bytes_out,
                (unsigned long long)(uv_now(&w->loop) - ch->start_ms), reason);
    }
    SC_STAT_ADD(w->stats.conn_closed[dir][SC_MODE_MTLS], 1);
    sc_worker__await_end(w, &ch->await_since);
    if (m != NULL) {
        if (send_rst && ch->sid != 0 && !(ch->fin_sent && ch->fin_recv)) {
            send_control(m, SC_MUX_RST, ch->sid, SC_MUX_RST_CANCEL);
        }
        chan_unlink(ch);
    }
    while (ch->pend_head != NULL) {
        struct pend *p = ch->pend_head;
        ch->pend_head = p->next;
        sc_buf_release(p->buf);
        free(p);
    }
    sc_buf_release(ch->wbuf); // it may stay on its session's wlist until the read ends
    ch->wbuf = NULL;
    ch->wlen = 0;
    ch->niov = 0; // slices of a session read: nothing held yet
    ch->iov_len = 0;
    sc_stream_close(ch->plain, on_chan_closed);
}

static void chan_maybe_done(struct mux_chan *ch)
{
    if (ch->fin_sent && ch->fin_recv && ch->inflight == 0 && ch->state == CHAN_PUMP) {
        // An aged stream that drained says why it ended, as forward.c does.
        chan_finalize(ch, ch->aged ? "max_connection_age" : "eof", false);
    }
}

static void on_chan_read(struct sc_stream *s, ssize_t nread, const uv_buf_t *buf);

static void chan_resume(struct mux_chan *ch)
{
    if (ch->paused && ch->credit > 0 && !ch->fin_sent && ch->state == CHAN_PUMP) {
        ch->paused = false;
        if (!ch->blocked) {
            sc_stream_read_start(ch->plain, on_chan_read);
        }
    }
}

static void on_chan_read(struct sc_stream *s, ssize_t nread, const uv_buf_t *buf)
{
    struct mux_chan *ch = sc_stream_get_data(s);
    struct sc_worker *w = ch->w;
    struct sc_mux_sess *m = ch->sess;
    enum sc_dir dir = w->proxy->cfg.dir;
    if (m == NULL) { // not expected: a stream leaves its session only when it closes
        if (nread > 0) {
            sc_buf_release(buf->base);
        }
        chan_finalize(ch, "mux_session_closed", false);
        return;
    }
    if (nread < 0) {
        if (nread != UV_EOF) {
            chan_finalize(ch, dir == SC_DIR_OUTBOUND ? "downstream_error" : "upstream_error", true);
            return;
        }
        ch->fin_sent = true;
        send_data(m, ch->sid, NULL, 0, true);
        chan_maybe_done(ch);
        return;
    }
    ch->last_active_ms = uv_now(&w->loop);
    // Outbound: the client's request went on; inbound: the app answered.
    sc_worker__awaiting(w, &ch->await_since, dir == SC_DIR_OUTBOUND);
    if ((size_t)nread >= MUX_ZC_MIN) {
        send_data_zc(m, ch->sid, buf->base, (size_t)nread);
    } else {
        send_data(m, ch->sid, buf->base, (size_t)nread, false);
        sc_buf_release(buf->base);
    }
    chan_moved(m, ch, (size_t)nread);
    if (dir == SC_DIR_OUTBOUND) {
        ch->bytes_in += (uint64_t)nread;
        SC_STAT_ADD(w->stats.bytes_received[dir], (uint64_t)nread);
    } else {
        ch->bytes_out += (uint64_t)nread;
        SC_STAT_ADD(w->stats.bytes_sent[dir], (uint64_t)nread);
    }
    ch->credit -= nread;
    if (ch->credit <= 0 && !ch->paused) {
        ch->paused = true;
        if (!ch->blocked) {
            sc_stream_read_stop(s);
        }
        if (m->dec.v2) {
            // The receiver cannot tell credit out in transit from credit
            // unused; the sender can (window_limited).
            uint64_t sent = dir == SC_DIR_OUTBOUND ? ch->bytes_in : ch->bytes_out;
            send_control(m, SC_MUX_BLOCKED, ch->sid, (uint32_t)sent);
        }
    }
    if (m->state != SESS_OPEN) {
        return; // the write above failed: the session closed, and this stream with it
    }
    sc_stream_set_small_reads(s, uv_now(&w->loop) < m->small_until_ms);
    if (!ch->blocked && sc_stream_write_queue_size(m->s) > 0) {
        ch->blocked = true;
        m->nblocked++;
        SC_STAT_ADD(w->stats.mux_waits[dir], 1);
        if (!ch->paused) {
            sc_stream_read_stop(s);
        }
    }
}

// on_sess_written: a tracked session write is in the kernel. Once nothing is
// left in the queue the blocked streams read again (each once per loop turn,
// as their sockets are ready: round robin).
static void on_sess_written(struct sc_stream *s, int status, void *arg)
{
    struct sc_mux_sess *m = arg;
    m->ntracked--;
    if (status != 0 || m->state != SESS_OPEN || m->nblocked == 0) {
        return;
    }
    if (sc_stream_write_queue_size(s) > 0) {
        // Bytes TLS wrote on its own (a record it answers with) may follow
        // the last tracked write: an empty write behind them reports when
        // they are out.
        if (m->ntracked == 0 && sc_stream_write(s, NULL, 0, on_sess_written, m) == 0) {
            m->ntracked++;
        }
        return;
    }
    for (struct mux_chan *ch = m->chans; ch != NULL && m->nblocked > 0; ch = ch->next) {
        if (ch->blocked) {
            ch->blocked = false;
            m->nblocked--;
            if (!ch->paused && !ch->fin_sent && ch->state == CHAN_PUMP) {
                sc_stream_read_start(ch->plain, on_chan_read);
            }
        }
    }
}

// path_needs_more: may |ch|'s window grow past MUX_WINDOW_MAX? See MUX_WINDOW_STEP.
static bool path_needs_more(const struct mux_chan *ch)
{
    // Bytes per round trip: rx.per_ms * rtt_us / 1000.
    return ch->rwin < MUX_WINDOW_PATH_MAX &&
           (uint64_t)ch->rwin + MUX_WINDOW_STEP <= 4 * ch->rx.per_ms * ch->sess->rtt_us / 1000;
}

// window_limited: see MUX_WINDOW_STEP.
static bool window_limited(const struct mux_chan *ch, uint64_t now)
{
    const struct sc_bufpool *pool = &ch->w->pool;
    const struct sc_mux_sess *m = ch->sess;
    return !ch->backlog && !ch->fin_recv && now >= m->shared_until_ms &&
           (ch->unacked > ch->rwin - ch->rwin / 4 || ch->peer_blocked) &&
           (pool->large_budget == 0 ||
            pool->bytes_out + ch->w->mux_window_extra + MUX_WINDOW_STEP <= pool->large_budget) &&
           (ch->rwin < MUX_WINDOW_MAX || path_needs_more(ch));
}

// chan_wrote notes a write to |plain| the kernel did not take at once.
static void chan_wrote(struct mux_chan *ch)
{
    if (sc_stream_write_queue_size(ch->plain) > 0) {
        ch->backlog = true;
    }
}

static void on_chan_written(struct sc_stream *s, int status, void *arg)
{
    struct mux_chan *ch = sc_stream_get_data(s);
    ch->inflight--;
    if (ch->state == CHAN_CLOSING) {
        return;
    }
    if (status != 0) {
        chan_finalize(ch,
                      ch->w->proxy->cfg.dir == SC_DIR_OUTBOUND ? "downstream_write_error"
                                                               : "upstream_write_error",
                      true);
        return;
    }
    ch->to_ack += (uintptr_t)arg;
    uint64_t now = uv_now(&ch->w->loop);
    rate_count(&ch->rx, (uintptr_t)arg, now);
    if (ch->to_ack >= SC_MUX_STREAM_WINDOW / 4 && ch->sess != NULL) {
        uint64_t inc = ch->to_ack;
        // Bytes still queued for |plain| now that this write is done: the app
        // is behind at this moment (not just once since the last WINDOW).
        bool behind = sc_stream_write_queue_size(ch->plain) > 0;
        if (window_limited(ch, now)) {
            inc += MUX_WINDOW_STEP;
            ch->rwin += MUX_WINDOW_STEP;
            ch->w->mux_window_extra += MUX_WINDOW_STEP;
            SC_STAT_ADD(ch->w->stats.mux_window_grows[ch->w->proxy->cfg.dir], 1);
        } else if ((behind || now < ch->sess->shared_until_ms) && ch->rwin > SC_MUX_STREAM_WINDOW) {
            // The app fell behind, or other streams share the session: give
            // the growth back (the peer then has less out), keeping the
            // increment above zero.
            uint64_t back = ch->rwin - SC_MUX_STREAM_WINDOW;
            if (back >= inc) {
                back = inc - 1;
            }
            inc -= back;
            ch->rwin -= (uint32_t)back;
            ch->w->mux_window_extra -= back;
            SC_STAT_ADD(ch->w->stats.mux_window_shrinks[ch->w->proxy->cfg.dir], 1);
        }
        send_control(ch->sess, SC_MUX_WINDOW, ch->sid, (uint32_t)inc);
        ch->unacked -= ch->to_ack;
        ch->to_ack = 0;
        ch->backlog = behind;
        ch->peer_blocked = false;
    }
    chan_maybe_done(ch);
}

// chan_flush_plain writes what this session read holds for |ch|: its slices
// in place, then the bytes collected in |ch->wbuf|.
static int chan_flush_plain(struct mux_chan *ch)
{
    if (ch->niov > 0) {
        unsigned n = ch->niov;
        size_t k = ch->iov_len;
        ch->niov = 0;
        ch->iov_len = 0;
        if (ch->state != CHAN_PUMP) {
            return 0;
        }
        // The write holds the session read until the kernel took its bytes.
        if (sc_stream_write_owned(ch->plain, ch->wiov, n, sc_buf_ref(ch->wsrc), on_chan_written,
                                  (void *)(uintptr_t)k) != 0) {
            return -1;
        }
        ch->inflight++;
        // A socket that did not take it all is slow: copy the rest of this
        // read rather than hold more session reads for it.
        if (sc_stream_write_queue_size(ch->plain) > 0) {
            ch->zc = false;
            ch->backlog = true;
        }
    }
    char *b = ch->wbuf;
    size_t k = ch->wlen;
    ch->wbuf = NULL;
    ch->wlen = 0;
    if (b == NULL) {
        return 0;
    }
    if (k == 0 || ch->state != CHAN_PUMP) {
        sc_buf_release(b);
        return 0;
    }
    uv_buf_t ub = uv_buf_init(b, (unsigned)k);
    if (sc_stream_write_owned(ch->plain, &ub, 1, b, on_chan_written, (void *)(uintptr_t)k) != 0) {
        return -1;
    }
    ch->inflight++;
    chan_wrote(ch);
    return 0;
}

// chan_collect takes |n| bytes for |ch|'s socket: all the slices one
// session read holds for a stream leave in one socket write (when the read
// is decoded, or when a copy buffer is full): in place (a writev from the
// read) or copied into |ch->wbuf| (chan_copy).
static int chan_copy(struct mux_chan *ch, const uint8_t *p, size_t n)
{
    while (n > 0) {
        if (ch->wbuf != NULL && ch->wlen == sc_buf_size(ch->wbuf) && chan_flush_plain(ch) != 0) {
            return -1;
        }
        if (ch->wbuf == NULL) {
            ch->wbuf = sc_buf_get_sized(&ch->w->pool, n > SC_BUF_SIZE / 2);
            ch->wlen = 0;
        }
        size_t k = sc_buf_size(ch->wbuf) - ch->wlen;
        if (k > n) {
            k = n;
        }
        memcpy(ch->wbuf + ch->wlen, p, k);
        ch->wlen += k;
        p += k;
        n -= k;
    }
    return 0;
}

static int chan_collect(struct sc_mux_sess *m, struct mux_chan *ch, const uint8_t *p, size_t n)
{
    if (!ch->wlisted) {
        // First bytes of this read for |ch|: written in place from the read
        // unless its socket is behind (then a copy bounds what it holds).
        ch->zc = m->rbuf != NULL && ch->wbuf == NULL && sc_stream_write_queue_size(ch->plain) == 0;
        ch->wsrc = m->rbuf;
        ch->wlisted = true;
        ch->wnext = m->wlist;
        m->wlist = ch;
    }
    if (ch->zc && ch->niov == MUX_WIOV) {
        // Many slices for one stream in one read (small frames): one copy
        // and one write beat a writev per MUX_WIOV slices.
        ch->zc = false;
        unsigned k = ch->niov;
        ch->niov = 0;
        ch->iov_len = 0;
        for (unsigned i = 0; i < k; i++) {
            if (chan_copy(ch, (const uint8_t *)ch->wiov[i].base, ch->wiov[i].len) != 0) {
                return -1;
            }
        }
    }
    if (ch->zc) {
        ch->wiov[ch->niov++] = uv_buf_init((char *)p, (unsigned)n);
        ch->iov_len += n;
        return 0;
    }
    return chan_copy(ch, p, n);
}

static void chan_start_pump(struct mux_chan *ch)
{
    ch->state = CHAN_PUMP;
    ch->last_active_ms = uv_now(&ch->w->loop);
    while (ch->pend_head != NULL) {
        // The held copies are pool buffers already: written as they are.
        struct pend *p = ch->pend_head;
        ch->pend_head = p->next;
        uv_buf_t ub = uv_buf_init(p->buf, (unsigned)p->len);
        int r = sc_stream_write_owned(ch->plain, &ub, 1, p->buf, on_chan_written,
                                      (void *)(uintptr_t)p->len);
        free(p);
        if (r != 0) { // the stream released the buffer
            chan_finalize(ch, "upstream_write_error", true);
            return;
        }
        ch->inflight++;
        chan_wrote(ch);
    }
    ch->pend_tail = NULL;
    if (ch->shut_pending) {
        sc_stream_shutdown(ch->plain);
    }
    if (sc_stream_read_start(ch->plain, on_chan_read) != 0) {
        chan_finalize(ch, "read_error", true);
    }
}

// ---- input: frames from the peer ---------------------------------------------

static int proto_error(struct sc_mux_sess *m, const char *why, uint32_t sid)
{
    sc_warn("mux.protocol_error", "dir=%s peer=%s peer_id=%s stream=%u detail=%s", dir_name(m->w),
            m->peer, m->s ? sc_tls_peer_id(sc_stream_get0_ssl(m->s)) : "-", sid, why);
    return 1;
}

// known_sid tells whether |sid| was opened on this session (it may have been
// closed since: frames for it are dropped).
static bool known_sid(const struct sc_mux_sess *m, uint32_t sid)
{
    return sid <= m->last_sid;
}

static void on_app_connect(struct sc_stream *s, int status);

// route_stream decides, in mesh mode, whether a new stream of inbound session
// |m| may reach the app, as for a new 1:1 connection: routed by the session
// socket's original destination with the worker's newest config, and its
// peer's identity authorized for that port by the newest rules (a rule
// withdrawn since the session's handshake refuses its next streams). NULL,
// with m->target set, or the refusal's reason (and, for a refusal a 1:1
// handshake would have made, its |*why|). (All streams of a session
// share its original destination, so one target serves them: a config
// change between two OPENs only moves where the next ones connect.)
static const char *route_stream(struct sc_mux_sess *m, enum sc_tls_fail *why)
{
    struct sc_worker *w = m->w;
    const struct sc_proxy_router *rt = w->proxy->cfg.router;
    struct sc_route r;
    memset(&r, 0, sizeof(r));
    snprintf(r.orig, sizeof(r.orig), "-");
    uv_os_fd_t fd = -1;
    uv_fileno((uv_handle_t *)sc_stream_get0_tcp(m->s), &fd);
    rt->route(w->snap, SC_DIR_INBOUND, fd, &r);
    if (r.kind == SC_ROUTE_REFUSE) {
        return r.reason != NULL ? r.reason : "bad_route";
    }
    if (rt->authorize != NULL &&
        !rt->authorize(w->snap, &r, sc_tls_peer_id(sc_stream_get0_ssl(m->s)))) {
        SC_STAT_ADD(w->stats.authz_deny, 1);
        *why = SC_TLS_FAIL_NOT_ALLOWED;
        return "not_allowed";
    }
    SC_STAT_ADD(w->stats.authz_allow, 1);
    m->target = r.target;
    return NULL;
}

// peer_expired tells whether the certificate chain the peer of |m| proved
// its identity with has expired since: no new stream rides on it (the open
// ones finish, as 1:1 connections outlive their certificates).
static bool peer_expired(const struct sc_mux_sess *m, uint64_t now)
{
    return m->peer_until_ms != 0 && now >= m->peer_until_ms;
}

// serve_open starts an inbound stream: connect the app.
static int serve_open(struct sc_mux_sess *m, uint32_t sid, size_t dest_len)
{
    struct sc_worker *w = m->w;
    if (m->client) {
        return proto_error(m, "OPEN from the server", sid);
    }
    if (sid <= m->last_sid) {
        return proto_error(m, "stream id not increasing", sid);
    }
    m->last_sid = sid;
    const char *refuse = NULL;
    enum sc_tls_fail why = SC_TLS_FAIL_OTHER; // not a handshake's refusal
    uint64_t now = uv_now(&w->loop);
    if (w->draining) {
        refuse = "draining";
    } else if (peer_expired(m, now)) {
        refuse = "peer_cert_expired";
        why = SC_TLS_FAIL_EXPIRED;
        send_goaway(m);
    } else if (m->goaway_sent && now - m->goaway_ms >= SC_MUX_GOAWAY_GRACE_MS) {
        // GOAWAY (a rotation of either side's certificate or trust, or the
        // session's max age) is advice only until the OPENs that crossed it
        // are in: a peer that keeps opening streams after that is refused.
        refuse = "goaway_ignored";
    } else if (dest_len != 0) {
        refuse = "destination_given"; // seam-mux senders route by session, not by stream
    } else if (m->nchans >= SC_MUX_MAX_STREAMS) {
        refuse = "max_streams";
    } else {
        refuse = sc_limits_admit(&w->stats, w->id, w->proxy->num_workers, -1,
                                 atomic_load_explicit(&w->num_conns, memory_order_relaxed),
                                 (uint64_t)w->pool.bytes_out);
    }
    if (refuse == NULL && w->proxy->cfg.router != NULL) {
        refuse = route_stream(m, &why);
    }
    if (refuse != NULL) {
        const char *peer_id = sc_tls_peer_id(sc_stream_get0_ssl(m->s));
        sc_warn("mux.stream_refused", "dir=inbound peer=%s peer_id=%s stream=%u reason=%s", m->peer,
                peer_id, sid, refuse);
        SC_STAT_ADD(w->stats.conn_failed[SC_DIR_INBOUND][SC_MODE_MTLS], 1);
        if (why != SC_TLS_FAIL_OTHER) {
            // Refused as a new 1:1 connection would have been at its
            // handshake: the same failure counter and /debug/tls-failures entry.
            SC_STAT_ADD(w->stats.hs_failures[SC_DIR_INBOUND][why], 1);
#ifdef SC_HAVE_FAILURES
            sc_failures_record(SC_DIR_INBOUND, why, m->peer, peer_id,
                               why == SC_TLS_FAIL_EXPIRED
                                   ? "seam-mux stream after the peer's certificate expired"
                                   : "client SPIFFE ID not allowed on this port (seam-mux stream)");
#endif
        }
        send_control(m, SC_MUX_RST, sid, SC_MUX_RST_NOT_ALLOWED);
        return 0;
    }
    struct mux_chan *ch = chan_new(w, NULL);
    if (ch == NULL) {
        send_control(m, SC_MUX_RST, sid, SC_MUX_RST_REFUSED);
        return 0;
    }
    ch->sid = sid;
    ch->state = CHAN_CONNECTING;
    chan_link(m, ch);
    hash_insert(m, ch);
    SC_STAT_ADD(w->stats.conn_opened[SC_DIR_INBOUND][SC_MODE_MTLS], 1);
    int r = sc_stream_connect(ch->plain, (const struct sockaddr *)&m->target,
                              w->proxy->cfg.connect_timeout_ms, on_app_connect);
    if (r != 0) {
        on_app_connect(ch->plain, r); // the stream made no call: not re-entrant
    }
    return 0;
}

static void on_app_connect(struct sc_stream *s, int status)
{
    struct mux_chan *ch = sc_stream_get_data(s);
    struct sc_worker *w = ch->w;
    if (ch->state == CHAN_CLOSING) {
        return;
    }
    if (status != 0) {
        char target[64];
        SC_STAT_ADD(w->stats.conn_failed[SC_DIR_INBOUND][SC_MODE_MTLS], 1);
        const struct sockaddr_storage *app =
            ch->sess != NULL ? &ch->sess->target : &w->proxy->cfg.target;
        sc_warn("conn.upstream_failed", "dir=inbound target=%s stream=%u error=%s",
                sc_format_addr((const struct sockaddr *)app, target, sizeof(target)), ch->sid,
                status == UV_ETIMEDOUT ? "connect timeout" : uv_strerror(status));
        if (ch->sess != NULL) {
            send_control(ch->sess, SC_MUX_RST, ch->sid, SC_MUX_RST_REFUSED);
        }
        chan_finalize(ch, "upstream_connect_failed", false);
        return;
    }
    sc_proxy__set_loopback_cc(w, (const struct sockaddr *)&ch->sess->target, s);
    chan_start_pump(ch);
}

static int on_frame_control(void *arg, enum sc_mux_type type, uint32_t sid, uint32_t arg32,
                            const uint8_t *dest, size_t dest_len)
{
    (void)dest;
    struct sc_mux_sess *m = arg;
    if (m->state == SESS_CLOSING) {
        return 1; // closed meanwhile (a write failed): the rest is not read
    }
    if (type == SC_MUX_OPEN) {
        return serve_open(m, sid, dest_len);
    }
    if (type == SC_MUX_GOAWAY) {
        if (!m->client) {
            return proto_error(m, "GOAWAY from the client", 0);
        }
        // No new streams here; the open ones finish (a stream the server
        // does not take, when draining, comes back as RST).
        m->retired = true;
        if (m->nchans == 0) {
            sess_close(m, "retired");
            return 1;
        }
        return 0;
    }
    if (!known_sid(m, sid)) {
        return proto_error(m, "frame for a stream never opened", sid);
    }
    struct mux_chan *ch = chan_find(m, sid);
    if (ch == NULL) {
        return 0; // closed here already: late frames are dropped
    }
    if (type == SC_MUX_RST) {
        chan_finalize(ch, arg32 == SC_MUX_RST_REFUSED ? "upstream_connect_failed" : "reset_by_peer",
                      false);
        return 0;
    }
    if (type == SC_MUX_BLOCKED) { // the decoder lets it through on seam-mux/2 only
        ch->peer_blocked = true;
        return 0;
    }
    // WINDOW
    if (arg32 == 0 || arg32 > INT32_MAX || ch->credit + (int64_t)arg32 > INT32_MAX) {
        return proto_error(m, "bad WINDOW increment", sid);
    }
    ch->credit += arg32;
    chan_resume(ch);
    return 0;
}

static int on_frame_data(void *arg, uint32_t sid, const uint8_t *p, size_t n)
{
    struct sc_mux_sess *m = arg;
    if (m->state == SESS_CLOSING) {
        return 1; // closed meanwhile (a write failed): the rest is not read
    }
    if (!known_sid(m, sid)) {
        return proto_error(m, "DATA for a stream never opened", sid);
    }
    struct mux_chan *ch = chan_find(m, sid);
    if (ch == NULL || ch->state == CHAN_CLOSING) {
        return 0;
    }
    struct sc_worker *w = m->w;
    enum sc_dir dir = w->proxy->cfg.dir;
    if (ch->drop_in) {
        return 0;
    }
    if (ch->fin_recv) {
        send_control(m, SC_MUX_RST, sid, SC_MUX_RST_CANCEL);
        chan_finalize(ch, "data_after_fin", false);
        return 0;
    }
    ch->unacked += n;
    if (ch->unacked > (uint64_t)ch->rwin + SC_BUF_LARGE_SIZE) {
        sc_warn("mux.flow_violation", "dir=%s peer=%s stream=%u unacked=%llu", dir_name(w), m->peer,
                sid, (unsigned long long)ch->unacked);
        send_control(m, SC_MUX_RST, sid, SC_MUX_RST_FLOW);
        chan_finalize(ch, "flow_violation", false);
        return 0;
    }
    ch->last_active_ms = uv_now(&w->loop);
    // Outbound: the answer arrived; inbound: a request goes on to the app.
    sc_worker__awaiting(w, &ch->await_since, dir == SC_DIR_INBOUND);
    chan_moved(m, ch, n);
    if (dir == SC_DIR_OUTBOUND) {
        ch->bytes_out += n;
        SC_STAT_ADD(w->stats.bytes_sent[dir], n);
    } else {
        ch->bytes_in += n;
        SC_STAT_ADD(w->stats.bytes_received[dir], n);
    }
    if (ch->state != CHAN_PUMP) {
        // Inbound, app not connected yet: keep a copy (bounded by the window).
        while (n > 0) {
            struct pend *pd = malloc(sizeof(*pd));
            if (pd == NULL) {
                abort(); // like sc_buf_get
            }
            pd->buf = sc_buf_get_sized(&w->pool, n > SC_BUF_SIZE);
            pd->len = sc_buf_size(pd->buf) < n ? sc_buf_size(pd->buf) : n;
            memcpy(pd->buf, p, pd->len);
            p += pd->len;
            n -= pd->len;
            pd->next = NULL;
            if (ch->pend_tail != NULL) {
                ch->pend_tail->next = pd;
            } else {
                ch->pend_head = pd;
            }
            ch->pend_tail = pd;
        }
        return 0;
    }
    if (chan_collect(m, ch, p, n) != 0) {
        chan_finalize(
            ch, dir == SC_DIR_OUTBOUND ? "downstream_write_error" : "upstream_write_error", true);
    }
    return 0;
}

static int on_frame_data_end(void *arg, uint32_t sid, bool fin)
{
    struct sc_mux_sess *m = arg;
    if (m->state == SESS_CLOSING) {
        return 1; // closed meanwhile (a write failed): the rest is not read
    }
    if (!fin) {
        return 0;
    }
    struct mux_chan *ch = chan_find(m, sid);
    if (ch == NULL || ch->state == CHAN_CLOSING || ch->fin_recv) {
        return 0;
    }
    ch->fin_recv = true;
    if (ch->state == CHAN_PUMP) {
        if (chan_flush_plain(ch) != 0) {
            chan_finalize(ch, "write_error", true);
            return 0;
        }
        sc_stream_shutdown(ch->plain); // after the queued bytes
    } else {
        ch->shut_pending = true;
    }
    chan_maybe_done(ch);
    return 0;
}

static const struct sc_mux_frame_cbs frame_cbs = {
    .control = on_frame_control,
    .data = on_frame_data,
    .data_end = on_frame_data_end,
};

static void on_sess_read(struct sc_stream *s, ssize_t nread, const uv_buf_t *buf)
{
    struct sc_mux_sess *m = sc_stream_get_data(s);
    if (nread < 0) {
        sess_close(m, nread == UV_EOF ? "eof" : "read_error");
        return;
    }
    const char *err = NULL;
    m->rbuf = buf->base;
    int r = sc_mux_decode(&m->dec, (const uint8_t *)buf->base, (size_t)nread, &frame_cbs, m, &err);
    // The bytes of this read go on to each stream's socket in one write. A
    // stream closed meanwhile still has its memory (freed after its close
    // callback, later in the loop turn); chan_finalize released its wbuf.
    while (m->wlist != NULL) {
        struct mux_chan *ch = m->wlist;
        m->wlist = ch->wnext;
        ch->wnext = NULL;
        ch->wlisted = false;
        if (ch->state == CHAN_PUMP && chan_flush_plain(ch) != 0) {
            chan_finalize(ch, "write_error", true);
        }
    }
    m->rbuf = NULL;
    sc_buf_release(buf->base); // unless writes hold it
    if (r == SC_MUX_EPROTO) {
        proto_error(m, err, m->dec.sid);
    }
    if (r != 0) {
        sess_close(m, "protocol_error");
    }
}

// ---- sessions ------------------------------------------------------------------

static void on_sess_closed(struct sc_stream *s)
{
    struct sc_mux_sess *m = sc_stream_get_data(s);
    struct sc_worker *w = m->w;
    free(m->peer_id);
    free(m);
    sc_worker__conn_gone(w);
}

static struct sc_mux_sess *sess_new(struct sc_worker *w, bool client)
{
    struct sc_mux_sess *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        return NULL;
    }
    m->w = w;
    m->client = client;
    m->start_ms = m->idle_since_ms = uv_now(&w->loop);
    sc_mux_decoder_init(&m->dec);
    m->next = w->mux_sessions;
    if (w->mux_sessions != NULL) {
        w->mux_sessions->prev = m;
    }
    w->mux_sessions = m;
    atomic_fetch_add(&w->num_conns, 1);
    return m;
}

// sess_close ends a session and every stream on it (their sockets closed
// without an answer: the peer proxy is gone, as when a 1:1 mTLS connection
// breaks).
static void sess_close(struct sc_mux_sess *m, const char *reason)
{
    if (m->state == SESS_CLOSING) {
        return;
    }
    struct sc_worker *w = m->w;
    bool was_open = m->state == SESS_OPEN;
    if (was_open) {
        sess_write_now(m); // last frames (RSTs, FINs) before close_notify
    }
    m->state = SESS_CLOSING;
    flush_unlink(m);
    if (!was_open && m->spread && !w->draining) {
        // Opened beside busy sessions, it failed (connect, handshake): the
        // clients waiting on it go on one of those, and for a while no more
        // sessions are opened beside busy ones.
        w->mux_spread_off_ms = uv_now(&w->loop) + MUX_SPREAD_BACKOFF_MS;
        sc_info("mux.spread_failed", "dir=%s peer=%s reason=%s backoff_ms=%d", dir_name(w), m->peer,
                reason, MUX_SPREAD_BACKOFF_MS);
        struct mux_chan *ch = m->chans;
        while (ch != NULL) {
            struct mux_chan *next = ch->next;
            if (ch->state == CHAN_WAIT) {
                chan_unlink(ch);
                carry(w, ch, (const struct sockaddr *)&m->target, m->peer_id);
            }
            ch = next;
        }
    }
    if (was_open) {
        SC_STAT_ADD(w->stats.mux_closed[w->proxy->cfg.dir], 1);
        sc_info("mux.session_close",
                "dir=%s peer=%s streams=%llu open=%u duration_ms=%llu "
                "reason=%s",
                dir_name(w), m->peer, (unsigned long long)m->streams_total, m->nchans,
                (unsigned long long)(uv_now(&w->loop) - m->start_ms), reason);
    }
    while (m->chans != NULL) {
        struct mux_chan *ch = m->chans; // chan_finalize unlinks it
        if (ch->state == CHAN_WAIT) {
            SC_STAT_ADD(w->stats.conn_failed[w->proxy->cfg.dir][SC_MODE_MTLS], 1);
        }
        chan_finalize(ch, was_open ? "mux_session_closed" : reason, false);
    }
    sc_buf_release(m->out);
    m->out = NULL;
    m->out_len = m->out_cut = 0;
    release_holds(m);
    free(m->buckets);
    m->buckets = NULL;
    if (m->prev != NULL) {
        m->prev->next = m->next;
    } else {
        w->mux_sessions = m->next;
    }
    if (m->next != NULL) {
        m->next->prev = m->prev;
    }
    m->next = m->prev = NULL;
    sc_stream_close(m->s, on_sess_closed);
}

// mux_version: 2 or 1 for the seam-mux version |tls| negotiated, else 0.
static int mux_version(const struct sc_stream *tls)
{
    const uint8_t *p;
    size_t n;
    if (!sc_stream_alpn(tls, &p, &n)) {
        return 0;
    }
    if (n == sizeof(SC_MUX_ALPN2) - 1 && memcmp(p, SC_MUX_ALPN2, n) == 0) {
        return 2;
    }
    return n == sizeof(SC_MUX_ALPN) - 1 && memcmp(p, SC_MUX_ALPN, n) == 0 ? 1 : 0;
}

static void sess_opened(struct sc_mux_sess *m)
{
    struct sc_worker *w = m->w;
    m->state = SESS_OPEN;
    m->idle_since_ms = uv_now(&w->loop);
    // notAfter is inclusive (RFC 5280 §4.1.2.5): the chain holds through
    // that second. Loop time, so a stream pays no clock read for the check.
    int64_t until = sc_tls_peer_valid_until(sc_stream_get0_ssl(m->s));
    if (until > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t left = (until + 1) * 1000 - ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
        m->peer_until_ms = m->idle_since_ms + (uint64_t)(left > 1 ? left : 1);
    }
    SC_STAT_ADD(w->stats.mux_opened[w->proxy->cfg.dir], 1);
    // Unsent bytes stay in userspace where streams take turns (MUX_NOTSENT_LOWAT).
    sess_set_lowat(m, MUX_NOTSENT_LOWAT);
    m->dec.v2 = mux_version(m->s) == 2; // BLOCKED frames both ways
    SSL *ssl = sc_stream_get0_ssl(m->s);
    sc_info("mux.session_open", "dir=%s peer=%s peer_id=%s tls=%s proto=%s", dir_name(w), m->peer,
            sc_tls_peer_id(ssl), SSL_get_version(ssl), m->dec.v2 ? SC_MUX_ALPN2 : SC_MUX_ALPN);
    if (sc_stream_read_start(m->s, on_sess_read) != 0) {
        sess_close(m, "read_error");
    }
}

// chan_open sends OPEN for a waiting outbound stream and starts its pump.
static void chan_open(struct sc_mux_sess *m, struct mux_chan *ch)
{
    ch->sid = ++m->last_sid;
    hash_insert(m, ch);
    send_control(m, SC_MUX_OPEN, ch->sid, 0);
    ch->state = CHAN_PUMP;
    ch->last_active_ms = uv_now(&m->w->loop);
    if (sc_stream_read_start(ch->plain, on_chan_read) != 0) {
        chan_finalize(ch, "read_error", true);
    }
}

// sess_fall_back hands the clients waiting on |m| (its peer refused
// seam-mux) to the 1:1 path, each with an mTLS connection of its own. They
// have not been read from yet: nothing is lost.
static void sess_fall_back(struct sc_mux_sess *m)
{
    struct mux_chan *ch = m->chans;
    while (ch != NULL) {
        struct mux_chan *next = ch->next;
        if (ch->state == CHAN_WAIT) {
            chan_unlink(ch);
            if (sc_conn__adopt_outbound(m->w, ch->plain, ch->start_ms) == 0) {
                free(ch); // its stream, count and place in num_conns go on
            } else {
                SC_STAT_ADD(m->w->stats.conn_failed[SC_DIR_OUTBOUND][SC_MODE_MTLS], 1);
                chan_finalize(ch, "out_of_memory", false);
            }
        }
        ch = next;
    }
}

bool sc_mux__wanted(struct sc_worker *w, const struct sockaddr *target)
{
    uint64_t now = uv_now(&w->loop);
    if (w->proxy->cfg.router == NULL) {
        uint64_t until = atomic_load(&w->proxy->mux_off_until_ms);
        return until == 0 || now >= until;
    }
    for (unsigned i = 0; i < SC_MUX_OFF_SLOTS; i++) {
        const struct sc_mux_off *o = &w->mux_off[i];
        if (o->until_ms > now && sc_addr_equal((const struct sockaddr *)&o->addr, target)) {
            return false;
        }
    }
    return true;
}

// mux_off records that the peer of session |m| refused seam-mux: tunnel
// mode, for the whole proxy (one target); mesh mode, for that destination
// on this worker.
static void mux_off(struct sc_mux_sess *m)
{
    struct sc_worker *w = m->w;
    uint64_t until = uv_now(&w->loop) + SC_MUX_RETRY_MS;
    if (w->proxy->cfg.router == NULL) {
        // Every worker: they share the target (uv_now is one monotonic clock).
        atomic_store(&w->proxy->mux_off_until_ms, until);
        return;
    }
    struct sc_mux_off *o = &w->mux_off[w->mux_off_next];
    w->mux_off_next = (w->mux_off_next + 1) % SC_MUX_OFF_SLOTS;
    memset(&o->addr, 0, sizeof(o->addr));
    memcpy(&o->addr, &m->target, sc_addr_len((const struct sockaddr *)&m->target));
    o->until_ms = until;
}

static void on_sess_handshake(struct sc_stream *s, int status)
{
    struct sc_mux_sess *m = sc_stream_get_data(s);
    struct sc_worker *w = m->w;
    if (m->state == SESS_CLOSING) {
        return;
    }
    if (status != 0) {
        // Counted per waiting client (sess_close), not for the session itself.
        sc_proxy__handshake_failed(w, s, m->peer, SC_MODE_MTLS, false);
        sess_close(m, "handshake_failed");
        return;
    }
    sc_stats_observe_handshake(&w->stats, sc_stream_handshake_us(s));
    if (!sc_mux__negotiated(s)) {
        sc_warn("mux.not_supported", "dir=outbound peer=%s fallback=1:1 retry_s=%d detail=%s",
                m->peer, SC_MUX_RETRY_MS / 1000,
                "the peer accepted neither ALPN " SC_MUX_ALPN2 " nor " SC_MUX_ALPN
                " (an older seam, or not seam)");
        mux_off(m);
        sess_fall_back(m);
        sess_close(m, "mux_not_supported");
        return;
    }
    sess_opened(m);
    // Oldest first: the list has the newest at its head.
    struct mux_chan *last = m->chans;
    while (last != NULL && last->next != NULL) {
        last = last->next;
    }
    for (struct mux_chan *ch = last; ch != NULL && m->state == SESS_OPEN;) {
        struct mux_chan *prev = ch->prev;
        if (ch->state == CHAN_WAIT) {
            chan_open(m, ch);
        }
        ch = prev;
    }
}

// The session offers seam-mux/2, seam-mux/1 and, after them, what a 1:1
// connection offers (a seam-mux/1 peer chooses seam-mux/1):
// a peer that knows only the latter chooses it, and the waiting clients go
// on 1:1 (sess_fall_back) wherever a 1:1 connection would have worked.
static const uint8_t mux_alpn_wire[] = SC_MUX_ALPN_WIRE "\x04" SC_TLS_ALPN_DATA;
_Static_assert(sizeof(SC_TLS_ALPN_DATA) - 1 == 0x04, "ALPN wire length");

static void on_sess_connect(struct sc_stream *s, int status)
{
    struct sc_mux_sess *m = sc_stream_get_data(s);
    struct sc_worker *w = m->w;
    if (m->state == SESS_CLOSING) {
        return;
    }
    if (status != 0) {
        sc_warn("conn.upstream_failed", "dir=outbound target=%s error=%s", m->peer,
                status == UV_ETIMEDOUT ? "connect timeout" : uv_strerror(status));
        sess_close(m, "upstream_connect_failed");
        return;
    }
    sc_proxy__set_loopback_cc(w, (const struct sockaddr *)&m->target, s);
    m->state = SESS_HANDSHAKE;
    int r = sc_stream_start_tls(s, w->ctx, false, w->proxy->cfg.sni,
                                w->proxy->cfg.handshake_timeout_ms, on_sess_handshake);
    if (r == 0 &&
        SSL_set_alpn_protos(sc_stream_get0_ssl(s), mux_alpn_wire, sizeof(mux_alpn_wire) - 1) != 0) {
        r = SC_ETLS;
    }
    if (r == 0 && m->peer_id != NULL) {
        // Secure naming, as for a 1:1 connection: the destination's own identity.
        r = sc_tls_set_expected_peer_id(sc_stream_get0_ssl(s), m->peer_id);
    }
    if (r != 0) {
        sc_warn("tls.start_failed", "dir=outbound error=%s", sc_strerror(r));
        sess_close(m, "tls_start_failed");
    }
}

static bool same_id(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

// out_session returns the outbound session a new stream to |target| (whose
// server must be |peer_id|) goes on: the newest open or opening one with
// room that carries no bulk stream; when every one does, a new one while the
// destination has fewer than cfg.mux_sessions, else the one with the fewest
// streams (|*fresh|: new, not connecting yet). Tunnel mode has one target;
// mesh mode sessions per destination address and identity.
static struct sc_mux_sess *out_session(struct sc_worker *w, const struct sockaddr *target,
                                       const char *peer_id, bool *fresh)
{
    *fresh = false;
    uint64_t now = uv_now(&w->loop);
    uint32_t max =
        w->proxy->cfg.mux_sessions > 0 ? w->proxy->cfg.mux_sessions : SC_MUX_SESSIONS_DEFAULT;
    if (now < w->mux_spread_off_ms) {
        max = 1; // one opened beside busy sessions failed lately (sess_close)
    }
    uint32_t n = 0; // sessions with room carrying bulk
    struct sc_mux_sess *newest = NULL, *least = NULL;
    for (struct sc_mux_sess *m = w->mux_sessions; m != NULL; m = m->next) {
        if (!m->client || m->retired || m->state == SESS_CLOSING ||
            m->nchans >= SC_MUX_MAX_STREAMS || m->last_sid >= INT32_MAX ||
            !sc_addr_equal((const struct sockaddr *)&m->target, target) ||
            !same_id(m->peer_id, peer_id)) {
            continue;
        }
        if (peer_expired(m, now)) {
            m->retired = true; // the sweep closes it once empty
            continue;
        }
        if (now >= m->bulk_until_ms) {
            if (n > 0) { // kept off the newest, which carries bulk
                SC_STAT_ADD(w->stats.mux_detours, 1);
            }
            return m;
        }
        if (n++ == 0) {
            newest = m;
        }
        if (least == NULL || m->nchans < least->nchans) {
            least = m;
        }
    }
    if (n >= max) {
        if (least != newest) {
            SC_STAT_ADD(w->stats.mux_detours, 1); // an older one with fewer streams
        }
        return least;
    }
    char *id = NULL;
    if (peer_id != NULL && (id = strdup(peer_id)) == NULL) {
        return NULL;
    }
    struct sc_mux_sess *m = sess_new(w, true);
    if (m == NULL) {
        free(id);
        return NULL;
    }
    m->peer_id = id;
    if (n > 0) { // beside sessions carrying bulk
        m->spread = true;
        SC_STAT_ADD(w->stats.mux_detours, 1);
    }
    memcpy(&m->target, target, sc_addr_len(target));
    m->state = SESS_CONNECTING;
    m->s = sc_stream_new(&w->loop, &w->pool);
    sc_stream_set_data(m->s, m);
    sc_format_addr(target, m->peer, sizeof(m->peer));
    *fresh = true;
    return m;
}

// carry puts the outbound stream |ch| on a session to |target|.
static void carry(struct sc_worker *w, struct mux_chan *ch, const struct sockaddr *target,
                  const char *peer_id)
{
    bool fresh;
    struct sc_mux_sess *m = out_session(w, target, peer_id, &fresh);
    if (m == NULL) {
        SC_STAT_ADD(w->stats.conn_failed[SC_DIR_OUTBOUND][SC_MODE_MTLS], 1);
        chan_finalize(ch, "out_of_memory", false);
        return;
    }
    chan_link(m, ch);
    if (m->state == SESS_OPEN) {
        chan_open(m, ch);
    }
    if (fresh) {
        int r = sc_stream_connect(m->s, target, w->proxy->cfg.connect_timeout_ms, on_sess_connect);
        if (r != 0) {
            on_sess_connect(m->s, r);
        }
    }
}

void sc_mux__accept(struct sc_worker *w)
{
    struct mux_chan *ch = chan_new(w, NULL);
    if (ch == NULL) {
        SC_STAT_ADD(w->stats.accept_errors, 1);
        return;
    }
    int r = sc_stream_accept_inherited(ch->plain, (uv_stream_t *)&w->listener);
    if (r != 0 || sc_limits_admit_conn(w, ch->plain) != 0) {
        if (r != 0) {
            SC_STAT_ADD(w->stats.accept_errors, 1);
        }
        ch->state = CHAN_CLOSING;
        sc_stream_close(ch->plain, on_chan_closed);
        return;
    }
    SC_STAT_ADD(w->stats.conn_opened[SC_DIR_OUTBOUND][SC_MODE_MTLS], 1);
    carry(w, ch, (const struct sockaddr *)&w->proxy->cfg.target, NULL);
}

int sc_mux__carry(struct sc_worker *w, struct sc_stream *down, const struct sockaddr *target,
                  const char *peer_id, uint64_t start_ms)
{
    struct mux_chan *ch = chan_new(w, down);
    if (ch == NULL) {
        return SC_ENOMEM;
    }
    ch->start_ms = start_ms;
    carry(w, ch, target, peer_id);
    return 0;
}

void sc_mux__serve(struct sc_worker *w, struct sc_stream *tls, const char *peer)
{
    struct sc_mux_sess *m = sess_new(w, false);
    if (m == NULL) {
        sc_stream_set_data(tls, NULL);
        sc_stream_close(tls, NULL);
        return;
    }
    m->s = tls;
    m->target = w->proxy->cfg.target; // mesh mode: routed per stream (route_stream)
    sc_stream_set_data(tls, m);
    snprintf(m->peer, sizeof(m->peer), "%s", peer);
    sess_opened(m);
}

bool sc_mux__negotiated(const struct sc_stream *tls)
{
    return mux_version(tls) != 0;
}

// send_goaway tells the outbound (once) to open new streams elsewhere.
static void send_goaway(struct sc_mux_sess *m)
{
    if (!m->goaway_sent && m->state == SESS_OPEN) {
        m->goaway_sent = true;
        m->goaway_ms = uv_now(&m->w->loop);
        send_control(m, SC_MUX_GOAWAY, 0, m->last_sid);
    }
}

// chan_sweep applies the idle timeout and max_connection_age to a stream,
// like forward.c to a connection: an old one stops taking bytes from its
// downstream and sends FIN, and is closed SC_MAX_AGE_GRACE_MS later.
static void chan_sweep(struct mux_chan *ch, uint64_t now)
{
    const struct sc_proxy_config *cfg = &ch->w->proxy->cfg;
    if (ch->state != CHAN_PUMP) {
        return;
    }
    if (cfg->idle_timeout_ms > 0 && now - ch->last_active_ms >= cfg->idle_timeout_ms) {
        chan_finalize(ch, "idle_timeout", true);
    } else if (ch->aged && now - ch->aged_ms >= SC_MAX_AGE_GRACE_MS) {
        chan_finalize(ch, "max_connection_age", true);
    } else if (!ch->aged && cfg->max_connection_age_ms > 0 &&
               now - ch->start_ms >= cfg->max_connection_age_ms) {
        ch->aged = true;
        ch->aged_ms = now;
        bool from_client = cfg->dir == SC_DIR_OUTBOUND;
        if (from_client && !ch->fin_sent) {
            ch->fin_sent = true;
            sc_stream_read_stop(ch->plain);
            send_data(ch->sess, ch->sid, NULL, 0, true);
        } else if (!from_client && !ch->fin_recv) {
            // Inbound: the downstream is the peer's stream. As forward.c does,
            // take no more of it (later DATA is dropped), FIN the app, and
            // let the app's answer drain back.
            ch->drop_in = true;
            ch->fin_recv = true;
            sc_stream_shutdown(ch->plain);
        }
        chan_maybe_done(ch);
    }
}

void sc_mux__sweep(struct sc_worker *w, bool force)
{
    uint64_t now = uv_now(&w->loop);
    const struct sc_proxy_config *cfg = &w->proxy->cfg;
    // A session without streams is kept for new ones at most
    // SC_MUX_SESS_IDLE_MS (or the idle timeout, if shorter): in mesh mode
    // there is one per destination, each holding a socket and a place
    // under --max-connections on both sides.
    uint64_t sess_idle = cfg->idle_timeout_ms > 0 && cfg->idle_timeout_ms < SC_MUX_SESS_IDLE_MS
                             ? cfg->idle_timeout_ms
                             : SC_MUX_SESS_IDLE_MS;
    struct sc_mux_sess *m = w->mux_sessions;
    while (m != NULL) {
        struct sc_mux_sess *next = m->next;
        if (force) {
            sess_close(m, "drain_timeout");
            m = next;
            continue;
        }
        bool aged =
            (cfg->max_connection_age_ms > 0 && now - m->start_ms >= cfg->max_connection_age_ms) ||
            peer_expired(m, now);
        if (m->client) {
            m->retired |= w->draining || aged;
        } else if (w->draining || aged) {
            send_goaway(m);
            // Draining, the inbound takes no new stream and closes the session
            // once empty; otherwise GOAWAY is advice and the outbound closes it.
            m->retired |= w->draining;
        }
        struct mux_chan *ch = m->chans;
        while (ch != NULL) {
            struct mux_chan *cn = ch->next;
            chan_sweep(ch, now);
            ch = cn;
        }
        // The outbound closes a session without streams after the idle time;
        // the inbound, later, only if its client vanished without closing.
        if (m->state == SESS_OPEN && m->nchans == 0 &&
            (m->retired || now - m->idle_since_ms >= (m->client ? sess_idle : 2 * sess_idle))) {
            sess_close(m, w->draining ? "drain" : m->retired ? "retired" : "idle_timeout");
        }
        m = next;
    }
}

void sc_mux__retire(struct sc_worker *w)
{
    // Either side's new certificate ends its sessions' intake: the outbound
    // opens a new session (with its new certificate, or to see the peer's),
    // so no session outlives a rotation of either certificate for longer
    // than its streams do. The inbound only advises (GOAWAY) and still
    // takes the streams the outbound opened before it heard: a rotation
    // refuses no connection. The outbound closes the old session once empty.
    for (struct sc_mux_sess *m = w->mux_sessions; m != NULL; m = m->next) {
        if (!m->client) {
            send_goaway(m);
            continue;
        }
        m->retired = true;
        if (m->nchans == 0 && m->state == SESS_OPEN) {
            sess_close(m, "retired");
        }
    }
}

void sc_mux__worker_init(struct sc_worker *w)
{
    uv_check_init(&w->loop, &w->mux_check);
    w->mux_check.data = w;
    uv_check_start(&w->mux_check, on_mux_check);
    uv_unref((uv_handle_t *)&w->mux_check);
    uv_prepare_init(&w->loop, &w->mux_prepare);
    w->mux_prepare.data = w;
    uv_prepare_start(&w->mux_prepare, on_mux_prepare);
    uv_unref((uv_handle_t *)&w->mux_prepare);
}

void sc_mux__worker_close(struct sc_worker *w)
{
    uv_close((uv_handle_t *)&w->mux_check, NULL);
    uv_close((uv_handle_t *)&w->mux_prepare, NULL);
}
