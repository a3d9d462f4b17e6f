// sc/tcp_cc.h — the TCP congestion control of seam's on-host sockets
// (--loopback-cc).
//
// A connection between seam and a process on the same host (the app on
// 127.0.0.1, or the app's connection redirected to the outbound listener)
// crosses no link and no queue, yet BBR, when it is the system default, paces
// every flow with a per-socket hrtimer: on this project's bench machine that
// timer work cost seam a quarter of its kernel time in bulk transfers
// (bench/NOTES.md §10). seam therefore gives its loopback sockets a congestion
// control that does not pace ("reno", which every process may select), and
// leaves the sockets to other hosts — where pacing is what the operator chose
// BBR for — on the system default.
#ifndef SC_TCP_CC_H
#define SC_TCP_CC_H

#include <stdbool.h>
#include <stddef.h>

#define SC_TCP_CC_MAX 16 // the kernel's TCP_CA_NAME_MAX, NUL included

// sc_tcp_cc_resolve turns the --loopback-cc value |flag| into the algorithm
// to set on loopback sockets, written to |out| (out[0] == '\0': leave them on
// the system default):
//   "auto"  "reno" when |system_cc| (the system default, NULL when unknown)
//           paces every flow (its name starts with "bbr"), else nothing;
//   "off"   nothing;
//   NAME    NAME (letters, digits, '_' or '-', at most 15).
// |*why| is a static token for the startup log (system_default_paces,
// system_default_does_not_pace, system_default_unknown, off, flag). Returns
// 0, or -1 with |*why| a sentence naming the problem of a malformed value.
int sc_tcp_cc_resolve(const char *flag, const char *system_cc, char out[SC_TCP_CC_MAX],
                      const char **why);

// sc_tcp_cc_system reads this network namespace's default
// (/proc/sys/net/ipv4/tcp_congestion_control) into |out|. 0, or -1 if it
// cannot be read.
int sc_tcp_cc_system(char out[SC_TCP_CC_MAX]);

// sc_tcp_cc_probe checks on a throwaway socket that this process may select
// |name|. 0, or a negative UV error code (UV_ENOENT: no such algorithm in
// this kernel; UV_EPERM: not in net.ipv4.tcp_allowed_congestion_control and
// no CAP_NET_ADMIN).
int sc_tcp_cc_probe(const char *name);

// sc_tcp_cc_probe_error writes a one-line explanation of a probe failure.
const char *sc_tcp_cc_probe_error(int err);

// sc_tcp_cc_choice is what a process start decided (sc_tcp_cc_choose).
struct sc_tcp_cc_choice {
    char cc[SC_TCP_CC_MAX];     // for loopback sockets; "" = the system default
    char system[SC_TCP_CC_MAX]; // this namespace's default; "" = unknown
    const char *why;            // static token for the log (sc_tcp_cc_resolve; probe_failed)
};

// sc_tcp_cc_choose resolves --loopback-cc |flag| against this namespace's
// default and probes the result. An explicit NAME that this process may not
// select is an error (-1, |err| says why); "auto" whose probe fails falls
// back to the system default (logged by the caller through |out->why|).
int sc_tcp_cc_choose(const char *flag, struct sc_tcp_cc_choice *out, char *err, size_t err_cap);

// sc_tcp_cc_log writes the startup event "tcp.loopback_cc cc=… system=… reason=…".
void sc_tcp_cc_log(const struct sc_tcp_cc_choice *choice);

// sc_tcp_cc_set selects |name| on the TCP socket |fd|. 0 or a negative UV
// error code.
int sc_tcp_cc_set(int fd, const char *name);

#endif
