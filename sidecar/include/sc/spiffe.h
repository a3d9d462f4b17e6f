// sc/spiffe.h — SPIFFE ID syntax (PROTOCOLS.md §3) and allow-list matching.
// Pure functions: no I/O, no allocation beyond what is documented. Fuzzed.
#ifndef SC_SPIFFE_H
#define SC_SPIFFE_H

#include <stdbool.h>
#include <stddef.h>

#define SC_SPIFFE_ID_MAX 2048

// sc_spiffe_id_valid reports whether |id| (|len| bytes, need not be NUL
// terminated) is a valid SPIFFE ID of a workload: scheme "spiffe" (any case),
// a trust domain of [a-z0-9.-_] (1..255 bytes), a non-empty path of segments
// [a-zA-Z0-9.-_] with no empty, "." or ".." segment and no trailing "/", no
// query, fragment, port, userinfo or percent-encoding, at most 2048 bytes.
// When |out_err| is not NULL it receives a static reason on failure.
// Upper-case letters in the trust domain are rejected (the spec requires
// lowercase); the scheme may be in any case.
bool sc_spiffe_id_valid(const char *id, size_t len, const char **out_err);

// sc_spiffe_td_id_valid reports whether |id| is the ID of a trust domain
// itself, "spiffe://td" with no path (allowed on signing certificates only).
bool sc_spiffe_td_id_valid(const char *id, size_t len, const char **out_err);

// sc_spiffe_trust_domain copies the trust domain of a valid ID into |out|
// (capacity |cap|, NUL-terminated, lowercased). Returns false if |id| is
// not valid or |out| is too small.
bool sc_spiffe_trust_domain(const char *id, char *out, size_t cap);

// sc_spiffe_id_equal compares two IDs: scheme and trust domain without
// regard to case, the path exactly. An invalid ID equals nothing.
bool sc_spiffe_id_equal(const char *a, const char *b);

// An allow-list pattern is one of:
//   spiffe://td/exact/path          exact ID (compared as sc_spiffe_id_equal)
//   spiffe://td/some/prefix/*       any valid ID whose path starts with
//                                   "/some/prefix/" (at least one more segment)
//   spiffe://td/ns/NS/*             the namespace wildcard is the same rule
//   spiffe://td/*                   any ID in trust domain td
// '*' is allowed only as the whole last segment; anything else (".../a*",
// ".../*/x", "*") is invalid. Invalid patterns never match.
// sc_spiffe_pattern_valid checks a pattern's syntax (for flags and config).
bool sc_spiffe_pattern_valid(const char *pattern, const char **out_err);

// sc_spiffe_pattern_match reports whether |id| matches |pattern|. It is false
// when |id| is not a valid SPIFFE ID or |pattern| is not a valid pattern.
bool sc_spiffe_pattern_match(const char *pattern, const char *id);

// struct sc_allowlist is an immutable list of patterns; empty means "allow
// none". NULL entries are skipped.
struct sc_allowlist {
    size_t num_patterns;
    char **patterns;
};

// sc_allowlist_match reports whether |id| matches any pattern of |al|.
bool sc_allowlist_match(const struct sc_allowlist *al, const char *id);

#endif
