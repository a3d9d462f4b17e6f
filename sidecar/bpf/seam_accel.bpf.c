// seam_accel.bpf.c — sockmap acceleration of the plain-text hops between an
// application and its seam sidecar on the same host (seam-accel, docs/ACCEL.md).
//
// A sock_ops program, attached to a cgroup v2 directory, puts every TCP socket
// of that cgroup whose local or remote port is a selected port (the sidecar's
// plain-text listeners, the application ports it connects to) into a sockhash
// keyed by its own 4-tuple and network namespace. An sk_msg program on that
// sockhash looks up the other end of the same connection; when it is there,
// the bytes of sendmsg() go straight into the peer socket's receive queue
// (BPF_F_INGRESS) without the TCP/IP stack. Nothing else changes: the TCP
// handshake, FIN and RST still cross the stack, so connect/accept/close/
// shutdown behave as before.
//
// Ordering. The two ends enter the map at different moments (the connecting
// side on SYN-ACK, the accepting side on the final ACK). A byte sent the
// ordinary way and a later one redirected could be read in the wrong order
// (the receiver drains redirected data first). So a socket whose send once
// found no peer is marked "tcp only" and never redirects afterwards:
// redirected-then-ordinary is safe (read in order), ordinary-then-redirected
// cannot happen.
// linux/bpf.h first: libbpf's helper headers use its types.
#include <linux/bpf.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define AF_INET 2
#define AF_INET6 10

struct sock_key {
    __u32 family;
    __u32 lport; // host byte order
    __u32 rport; // host byte order
    __u32 pad;
    __u32 lip[4];
    __u32 rip[4];
    __u64 netns;
};

// seam_socks: the sockets that may take the short cut.
struct {
    __uint(type, BPF_MAP_TYPE_SOCKHASH);
    __uint(max_entries, 65536);
    __type(key, struct sock_key);
    __type(value, __u32);
} seam_socks SEC(".maps");

// seam_ports: selected ports (key: port in host order; value unused).
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 256);
    __type(key, __u32);
    __type(value, __u32);
} seam_ports SEC(".maps");

// seam_tcp_only: per-socket storage, present on a socket that once sent
// without its peer in the map. It lives and dies with the socket: nothing to
// evict, nothing to clean up, no stale entry for a reused 4-tuple.
struct {
    __uint(type, BPF_MAP_TYPE_SK_STORAGE);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, int);
    __type(value, __u32);
} seam_tcp_only SEC(".maps");

// seam_unanswered: per sending socket (its own key), the bytes it redirected
// since its peer last sent anything back. The kernel gives a redirected hop
// no backpressure: a receiver that stops reading does not block the sender,
// its queue just grows (bench: iperf3 through the pair, until the sender got
// ENOMEM). A receive hook could count what is read, but tracing programs are
// refused on the machines seam is tested on. So the bound is on the sender:
// past max_unanswered bytes without a byte coming back, the socket leaves the
// short cut for good and TCP's flow control takes over. Request/response
// traffic stays accelerated; a one-way bulk transfer moves to TCP after the
// first max_unanswered bytes. Reset when a connection is established; LRU so
// a closed socket's entry ages out.
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, struct sock_key);
    __type(value, __u64);
} seam_unanswered SEC(".maps");

// Set by seam-accel (--max-unanswered) before the programs are loaded.
const volatile __u64 max_unanswered = 4 << 20;

enum {
    STAT_SOCKETS, // sockets put into seam_socks
    STAT_MSGS_REDIRECTED,
    STAT_BYTES_REDIRECTED,
    STAT_MSGS_PASSED, // sent the ordinary way (no peer, or tcp only)
    STAT_FALLBACKS,   // sockets moved to the ordinary path by max_unanswered
    STAT_MAX,
};

// seam_stats: per-CPU counters, summed by seam-accel.
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, STAT_MAX);
    __type(key, __u32);
    __type(value, __u64);
} seam_stats SEC(".maps");

static __always_inline void stat_add(__u32 which, __u64 n)
{
    __u64 *v = bpf_map_lookup_elem(&seam_stats, &which);
    if (v) {
        *v += n;
    }
}

static __always_inline int selected(__u32 port)
{
    return bpf_map_lookup_elem(&seam_ports, &port) != 0;
}

// The context's ports: local in host order, remote in network order (upper
// 16 bits on little-endian) — both as host-order numbers.
#define PORT_local(ctx) ((ctx)->local_port)
#define PORT_remote(ctx) bpf_ntohl((ctx)->remote_port)

// KEY_FROM fills |k| from a socket context (struct bpf_sock_ops or struct
// sk_msg_md: same field names) with side L as the key's local side: L=local,
// R=remote gives the socket's own key; L=remote, R=local gives its peer's.
// Evaluates to 0 for a family other than IPv4/IPv6.
#define KEY_FROM(k, ctx, L, R)                                                                     \
    ({                                                                                             \
        int ok_ = 1;                                                                               \
        (k)->family = (ctx)->family;                                                               \
        (k)->lport = PORT_##L(ctx);                                                                \
        (k)->rport = PORT_##R(ctx);                                                                \
        if ((ctx)->family == AF_INET) {                                                            \
            (k)->lip[0] = (ctx)->L##_ip4;                                                          \
            (k)->rip[0] = (ctx)->R##_ip4;                                                          \
        } else if ((ctx)->family == AF_INET6) {                                                    \
            for (int i_ = 0; i_ < 4; i_++) {                                                       \
                (k)->lip[i_] = (ctx)->L##_ip6[i_];                                                 \
                (k)->rip[i_] = (ctx)->R##_ip6[i_];                                                 \
            }                                                                                      \
        } else {                                                                                   \
            ok_ = 0;                                                                               \
        }                                                                                          \
        (k)->netns = bpf_get_netns_cookie(ctx);                                                    \
        ok_;                                                                                       \
    })

SEC("sockops")
int seam_sockops(struct bpf_sock_ops *skops)
{
    __u32 op = skops->op;
    if (op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB) {
        return 1;
    }
    struct sock_key k = {};
    if (!KEY_FROM(&k, skops, local, remote)) {
        return 1;
    }
    if (!selected(k.lport) && !selected(k.rport)) {
        return 1;
    }
    bpf_map_delete_elem(&seam_unanswered, &k); // a reused 4-tuple starts afresh
    if (bpf_sock_hash_update(skops, &seam_socks, &k, BPF_ANY) == 0) {
        stat_add(STAT_SOCKETS, 1);
    }
    return 1;
}

SEC("sk_msg")
int seam_msg(struct sk_msg_md *msg)
{
    // The other end of this connection: our 4-tuple reversed, same netns.
    struct sock_key peer = {};
    if (!KEY_FROM(&peer, msg, remote, local)) {
        return SK_PASS;
    }
    __u64 size = msg->size;
    struct bpf_sock *sk = msg->sk;
    if (sk == 0) {
        return SK_PASS;
    }
    if (bpf_sk_storage_get(&seam_tcp_only, sk, 0, 0) == 0) {
        // Our own key is the peer's reversed (same netns): no second pass over the context.
        struct sock_key self = peer;
        self.lport = peer.rport;
        self.rport = peer.lport;
        __builtin_memcpy(self.lip, peer.rip, sizeof(self.lip));
        __builtin_memcpy(self.rip, peer.lip, sizeof(self.rip));
        __u64 *mine = bpf_map_lookup_elem(&seam_unanswered, &self);
        if (mine == 0) { // the socket's first send: one insert, not one per message
            __u64 zero = 0;
            bpf_map_update_elem(&seam_unanswered, &self, &zero, BPF_NOEXIST);
            mine = bpf_map_lookup_elem(&seam_unanswered, &self);
        }
        if (mine != 0 && *mine + size > max_unanswered) {
            stat_add(STAT_FALLBACKS, 1);
        } else if (mine != 0 &&
                   bpf_msg_redirect_hash(msg, &seam_socks, &peer, BPF_F_INGRESS) == SK_PASS) {
            __sync_fetch_and_add(mine, size);
            // We answered: what the peer sent us has been read.
            __u64 *theirs = bpf_map_lookup_elem(&seam_unanswered, &peer);
            if (theirs != 0) {
                *theirs = 0;
            }
            stat_add(STAT_MSGS_REDIRECTED, 1);
            stat_add(STAT_BYTES_REDIRECTED, size);
            return SK_PASS;
        }
    }
    // From now on this socket stays on the ordinary path (see the top).
    bpf_sk_storage_get(&seam_tcp_only, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
    stat_add(STAT_MSGS_PASSED, 1);
    return SK_PASS; // no peer here: the ordinary TCP path
}

char LICENSE[] SEC("license") = "GPL"; // sockmap helpers are GPL-only
