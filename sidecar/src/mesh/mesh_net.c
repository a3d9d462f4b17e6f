// mesh_net.c — what the kernel and the first bytes tell about an
// intercepted connection: its original destination (conntrack, after the
// nat REDIRECT of seam-init) and whether the client starts with a TLS
// ClientHello (PERMISSIVE ports).
#include "sc/mesh.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80 // <linux/netfilter_ipv4.h>
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80 // <linux/netfilter_ipv6/ip6_tables.h>
#endif

int sc_mesh_original_dst(int fd, struct sockaddr_storage *out)
{
    struct sockaddr_storage peer;
    socklen_t plen = sizeof(peer);
    memset(out, 0, sizeof(*out));
    if (getpeername(fd, (struct sockaddr *)&peer, &plen) != 0) {
        return -errno;
    }
    // An IPv4 client of a dual-stack [::] socket is v4-mapped; conntrack has
    // it as IPv4, so only the IPv4 option answers (SOL_IPV6 says ENOENT).
    bool v4 = peer.ss_family == AF_INET ||
              (peer.ss_family == AF_INET6 &&
               IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *)&peer)->sin6_addr));
    if (v4) {
        struct sockaddr_in in;
        socklen_t len = sizeof(in);
        if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &in, &len) != 0) {
            return -errno;
        }
        in.sin_family = AF_INET;
        memcpy(out, &in, sizeof(in));
        return 0;
    }
    struct sockaddr_in6 in6;
    socklen_t len = sizeof(in6);
    if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &in6, &len) != 0) {
        return -errno;
    }
    in6.sin6_family = AF_INET6;
    memcpy(out, &in6, sizeof(in6));
    return 0;
}

enum sc_mesh_detect sc_mesh_detect_client_hello(const uint8_t *data, size_t len)
{
    // TLSPlaintext: type(1) = 22 handshake, legacy_record_version(2) = 3.x,
    // length(2); then Handshake: msg_type(1) = 1 client_hello.
    if (len == 0) {
        return SC_DETECT_NEED_MORE;
    }
    if (data[0] != 0x16) {
        return SC_DETECT_PLAIN;
    }
    if (len < 2) {
        return SC_DETECT_NEED_MORE;
    }
    if (data[1] != 0x03) {
        return SC_DETECT_PLAIN;
    }
    if (len < 3) {
        return SC_DETECT_NEED_MORE;
    }
    if (data[2] > 0x04) {
        return SC_DETECT_PLAIN;
    }
    if (len < 5) {
        return SC_DETECT_NEED_MORE;
    }
    size_t rec_len = ((size_t)data[3] << 8) | data[4];
    if (rec_len == 0 || rec_len > 16384 + 2048) {
        return SC_DETECT_PLAIN;
    }
    if (len < 6) {
        return SC_DETECT_NEED_MORE;
    }
    return data[5] == 0x01 ? SC_DETECT_TLS : SC_DETECT_PLAIN;
}
