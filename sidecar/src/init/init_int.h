// init_int.h — internals of seam-init (traffic capture rules, ECOSYSTEM.md §1).
#ifndef SC_INIT_INT_H
#define SC_INIT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SC_INIT_MAX_LIST 64

enum sc_init_tristate { SC_INIT_AUTO, SC_INIT_ON, SC_INIT_OFF };
enum sc_init_backend { SC_INIT_BACKEND_AUTO, SC_INIT_BACKEND_NFT, SC_INIT_BACKEND_LEGACY };

struct sc_init_cidr {
    int family; // 4 or 6
    uint8_t addr[16];
    unsigned prefix;
};

struct sc_init_config {
    bool install; // false: uninstall
    bool dry_run;
    uint32_t proxy_uid;
    uint32_t proxy_gid;
    uint16_t inbound_port;
    uint16_t outbound_port;
    size_t num_excl_in;
    uint16_t excl_in[SC_INIT_MAX_LIST];
    size_t num_excl_out;
    uint16_t excl_out[SC_INIT_MAX_LIST];
    size_t num_cidrs;
    struct sc_init_cidr cidrs[SC_INIT_MAX_LIST];
    enum sc_init_tristate ipv6;
    enum sc_init_backend backend;
};

// struct sc_init_text is a growable list of lines (iptables-restore input).
struct sc_init_text {
    size_t num_lines;
    size_t cap;
    char **lines;
};

void sc_init_text_init(struct sc_init_text *t);
void sc_init_text_cleanup(struct sc_init_text *t);
// sc_init_text_add appends a printf-formatted line. Returns 0 or -1 (ENOMEM).
int sc_init_text_add(struct sc_init_text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
// sc_init_text_join returns all lines joined by "\n" (with a final newline),
// malloc'ed, or NULL.
char *sc_init_text_join(const struct sc_init_text *t);

// The chains seam-init owns, all in the nat table.
extern const char *const sc_init_chains[4];

// sc_init_parse_ports parses "15020,15021" (empty allowed) into |out|,
// appending to |*num| and skipping duplicates. 0 / -1 with |*out_err|.
int sc_init_parse_ports(const char *s, uint16_t *out, size_t *num, const char **out_err);
// sc_init_parse_cidrs parses "10.0.0.0/8,fd00::/8,1.2.3.4" (a bare address is
// a host route); host bits are cleared. 0 / -1 with |*out_err|.
int sc_init_parse_cidrs(const char *s, struct sc_init_cidr *out, size_t *num, const char **out_err);
// sc_init_format_cidr writes "10.0.0.0/8" / "fd00::/8" into |out|.
void sc_init_format_cidr(const struct sc_init_cidr *c, char *out, size_t cap);

// sc_init_build_install writes the iptables-restore --noflush input that
// installs the rules for |family| (4 or 6). |current_save| is the output of
// `iptables-save -t nat` (or NULL): jumps into our chains found there are
// deleted first, so a re-run leaves no duplicates. Returns 0 or -1.
int sc_init_build_install(const struct sc_init_config *cfg, int family, const char *current_save,
                          struct sc_init_text *out);

// sc_init_build_uninstall writes the input that removes our chains and every
// jump into them found in |current_save|. |*out_found| reports whether
// anything of ours exists. With |current_save| NULL (dry run) it lists the
// removal of all chains. Returns 0 or -1.
int sc_init_build_uninstall(const char *current_save, struct sc_init_text *out, bool *out_found);

// sc_init_run runs |argv| (argv[0] an absolute path) without a shell, feeds
// |input| (may be NULL) to its stdin and captures stdout/stderr (malloc'ed,
// NUL-terminated, may be NULL on ENOMEM). Returns the exit status (0..255),
// 128+signal, or -1 if it could not be started (|*out_err| has why).
int sc_init_run(const char *const argv[], const char *input, char **out_stdout, char **out_stderr);

// sc_init_which finds |name| in $PATH and the sbin directories; writes the
// path into |out|. Returns 0 or -1.
int sc_init_which(const char *name, char *out, size_t cap);

#endif
