// sc/tcp_path.h: TCP_INFO read with the kernel's own struct tcp_info (glibc's
// <netinet/tcp.h> copy stops before tcpi_min_rtt), so this file does not
// include <netinet/tcp.h>.
#include "sc/tcp_path.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>

int sc_tcp_min_rtt_us(int fd, uint32_t *out)
{
    struct tcp_info ti;
    memset(&ti, 0, sizeof(ti));
    socklen_t len = sizeof(ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) {
        return -1;
    }
    // An older kernel fills less of the struct (len says how much).
    if (len < offsetof(struct tcp_info, tcpi_min_rtt) + sizeof(ti.tcpi_min_rtt)) {
        errno = ENOTSUP;
        return -1;
    }
    *out = ti.tcpi_min_rtt == UINT32_MAX ? 0 : ti.tcpi_min_rtt;
    return 0;
}
