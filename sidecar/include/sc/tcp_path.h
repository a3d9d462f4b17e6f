// sc/tcp_path.h — what the kernel knows about a TCP connection's path.
//
// seam-mux sizes a stream's window and a session's unsent limit by the
// round trip of the session's connection (docs/MUX.md "Flow control per
// stream"). The round trip it takes is the kernel's minimum RTT over the
// last few minutes (tcpi_min_rtt, Linux 4.10+, the estimate BBR uses): the
// propagation delay of the path, without the queueing, the delayed ACKs and
// the receiver's scheduling the smoothed RTT also holds.
#ifndef SC_TCP_PATH_H
#define SC_TCP_PATH_H

#include <stdint.h>

// sc_tcp_min_rtt_us writes |fd|'s minimum RTT in microseconds to |*out|
// (0 when the kernel has no sample yet). 0, or -1 with errno set (not a TCP
// socket, or a kernel without the field: ENOTSUP).
int sc_tcp_min_rtt_us(int fd, uint32_t *out);

#endif
