// sc/flags.h — a small command-line flag parser with SEAM_* environment
// fallback, shared by every seam-sidecar subcommand.
//
// Flags are "--name value" or "--name=value"; booleans are "--name" or
// "--name=true|false". Each flag may also come from the environment as
// SEAM_<NAME> (upper case, '-' -> '_': --peer-id <-> SEAM_PEER_ID). A flag on
// the command line wins over the environment. List flags may repeat
// ("--allow a --allow b"); from the environment they are comma-separated.
// Parsed values point into argv/environ (strings) or are converted in place;
// lists are allocated (sc_strlist_cleanup).
#ifndef SC_FLAGS_H
#define SC_FLAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum sc_flag_type {
    SC_FLAG_STRING,   // out: const char **
    SC_FLAG_LIST,     // out: struct sc_strlist *
    SC_FLAG_INT,      // out: int64_t *   (decimal; min/max checked)
    SC_FLAG_DURATION, // out: uint64_t *  milliseconds (sc_parse_duration_ms)
    SC_FLAG_SIZE,     // out: uint64_t *  bytes (sc_parse_size)
    SC_FLAG_BOOL,     // out: bool *
};

struct sc_strlist {
    size_t num;
    char **items; // each item and the array are heap-allocated
};

struct sc_flag {
    const char *name; // without "--", e.g. "peer-id"
    enum sc_flag_type type;
    void *out;        // see enum sc_flag_type; keeps its default if not given
    const char *help; // one line for the usage text
    bool required;    // missing from both argv and env is an error
    int64_t min, max; // SC_FLAG_INT bounds (both 0: no bounds)
    bool seen;        // set by the parser: given on argv or in env
};

// sc_flags_parse parses |argv[0..argc)| (no program/subcommand name: pass the
// arguments after it) against |flags|, then fills flags not given on the
// command line from SEAM_* variables. Returns 0 on success, 1 if -h/--help
// was given (nothing else checked), or -1 with a one-line message in |err|
// (unknown flag, missing value, bad value, missing required flag, stray
// positional argument).
int sc_flags_parse(struct sc_flag *flags, size_t num_flags, int argc, char **argv, char *err,
                   size_t err_cap);

// sc_flags_usage prints "  --name VALUE   help (env SEAM_NAME)" lines.
void sc_flags_usage(FILE *f, const struct sc_flag *flags, size_t num_flags);

// sc_flags_env_name writes the environment variable name of flag |name|.
char *sc_flags_env_name(const char *name, char *out, size_t cap);

// sc_strlist_cleanup frees the items of |l| and empties it.
void sc_strlist_cleanup(struct sc_strlist *l);

#endif
