// sc/parse.h — parsing of flag values: durations, sizes, addresses. Pure, fuzzed.
#ifndef SC_PARSE_H
#define SC_PARSE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

// sc_parse_duration_ms parses "1500ms", "10s", "5m", "1h", "2h30m", "1.5s" or a
// bare integer of seconds into milliseconds. Rejects negatives, empty input,
// unknown units and overflow. Returns 0 on success, -1 on error (|*out_err| static).
int sc_parse_duration_ms(const char *s, uint64_t *out_ms, const char **out_err);

// sc_parse_size parses "4096", "64k", "64KiB", "16m", "16MiB", "1g" (powers of 1024). 0/-1 as
// above.
int sc_parse_size(const char *s, uint64_t *out_bytes, const char **out_err);

// sc_parse_hostport parses "HOST:PORT", "[V6]:PORT" or ":PORT" (any address)
// with a numeric IPv4/IPv6 host or "localhost", into |out| (a sockaddr_in or
// sockaddr_in6). Port 0 is allowed only if |allow_port0|. 0/-1 as above.
int sc_parse_hostport(const char *s, bool allow_port0, struct sockaddr_storage *out,
                      const char **out_err);

// sc_parse_hostport_name splits "name:port" where name may be a DNS name (for
// --control-plane). |host| gets the name without brackets. 0/-1 as above.
int sc_parse_hostport_name(const char *s, char *host, size_t host_cap, uint16_t *out_port,
                           const char **out_err);

// sc_format_addr writes "1.2.3.4:80" or "[::1]:80" for |sa| into |out|; returns |out|.
char *sc_format_addr(const struct sockaddr *sa, char *out, size_t cap);

// sc_addr_is_loopback reports whether |sa| is in 127.0.0.0/8, is ::1 or is a
// v4-mapped ::ffff:127.x.y.z (a dual-stack socket's view of an IPv4 loopback
// peer). Anything else, and families other than AF_INET/AF_INET6: false.
bool sc_addr_is_loopback(const struct sockaddr *sa);

// sc_addr_len is the length of |sa|, an AF_INET6 or AF_INET address.
socklen_t sc_addr_len(const struct sockaddr *sa);

// sc_addr_equal compares address and port, a v4-mapped address equal to its
// IPv4 form; families other than AF_INET/AF_INET6 are never equal.
bool sc_addr_equal(const struct sockaddr *a, const struct sockaddr *b);

#endif
