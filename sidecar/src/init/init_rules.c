// init_rules.c — the nat rule set of seam-init, as iptables-restore input.
//
// Chains (nat table), modelled on istio-iptables (ECOSYSTEM.md §1.1):
//   SEAM_IN_REDIRECT  -p tcp -j REDIRECT --to-ports <inbound>
//   SEAM_REDIRECT     -p tcp -j REDIRECT --to-ports <outbound>
//   SEAM_INBOUND      RETURN for excluded ports, else SEAM_IN_REDIRECT
//   SEAM_OUTPUT       RETURN for excluded ports, the proxy's uid/gid,
//                     loopback and excluded CIDRs, else SEAM_REDIRECT
//   PREROUTING -p tcp -j SEAM_INBOUND ; OUTPUT -p tcp -j SEAM_OUTPUT
// Loopback is left alone entirely (-o lo covers 127.0.0.0/8, ::1 and the
// pod's own IP): the proxy reaches the app from a loopback address.
#include "init_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const sc_init_chains[4] = {"SEAM_INBOUND", "SEAM_IN_REDIRECT", "SEAM_OUTPUT",
                                       "SEAM_REDIRECT"};

void sc_init_text_init(struct sc_init_text *t)
{
    memset(t, 0, sizeof(*t));
}

void sc_init_text_cleanup(struct sc_init_text *t)
{
    for (size_t i = 0; i < t->num_lines; i++) {
        free(t->lines[i]);
    }
    free(t->lines);
    memset(t, 0, sizeof(*t));
}

int sc_init_text_add(struct sc_init_text *t, const char *fmt, ...)
{
    if (t->num_lines == t->cap) {
        size_t cap = t->cap == 0 ? 32 : t->cap * 2;
        char **lines = realloc(t->lines, cap * sizeof(*lines));
        if (lines == NULL) {
            return -1;
        }
        t->lines = lines;
        t->cap = cap;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return -1;
    }
    char *line = malloc((size_t)n + 1);
    if (line == NULL) {
        return -1;
    }
    va_start(ap, fmt);
    vsnprintf(line, (size_t)n + 1, fmt, ap);
    va_end(ap);
    t->lines[t->num_lines++] = line;
    return 0;
}

char *sc_init_text_join(const struct sc_init_text *t)
{
    size_t len = 1;
    for (size_t i = 0; i < t->num_lines; i++) {
        len += strlen(t->lines[i]) + 1;
    }
    char *s = malloc(len);
    if (s == NULL) {
        return NULL;
    }
    size_t off = 0;
    for (size_t i = 0; i < t->num_lines; i++) {
        size_t n = strlen(t->lines[i]);
        memcpy(s + off, t->lines[i], n);
        off += n;
        s[off++] = '\n';
    }
    s[off] = '\0';
    return s;
}

int sc_init_parse_ports(const char *s, uint16_t *out, size_t *num, const char **out_err)
{
    const char *p = s;
    while (*p != '\0') {
        uint32_t v = 0;
        size_t digits = 0;
        while (*p >= '0' && *p <= '9') {
            if (++digits > 5) {
                *out_err = "port must be 1..65535";
                return -1;
            }
            v = v * 10 + (uint32_t)(*p++ - '0');
        }
        if (digits == 0 || (*p != ',' && *p != '\0')) {
            *out_err = "expected a comma-separated list of port numbers";
            return -1;
        }
        if (v == 0 || v > 65535) {
            *out_err = "port must be 1..65535";
            return -1;
        }
        bool dup = false;
        for (size_t i = 0; i < *num; i++) {
            dup = dup || out[i] == v;
        }
        if (!dup) {
            if (*num == SC_INIT_MAX_LIST) {
                *out_err = "too many ports (at most 64)";
                return -1;
            }
            out[(*num)++] = (uint16_t)v;
        }
        if (*p == ',') {
            p++;
            if (*p == '\0') {
                *out_err = "trailing ',' in port list";
                return -1;
            }
        }
    }
    return 0;
}

static int parse_one_cidr(const char *item, struct sc_init_cidr *c, const char **out_err)
{
    char addr[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(item, '/');
    size_t alen = slash != NULL ? (size_t)(slash - item) : strlen(item);
    if (alen == 0 || alen >= sizeof(addr)) {
        *out_err = "invalid CIDR (expected ADDR/PREFIX)";
        return -1;
    }
    memcpy(addr, item, alen);
    addr[alen] = '\0';
    memset(c, 0, sizeof(*c));
    unsigned max;
    if (inet_pton(AF_INET, addr, c->addr) == 1) {
        c->family = 4;
        max = 32;
    } else if (inet_pton(AF_INET6, addr, c->addr) == 1) {
        c->family = 6;
        max = 128;
    } else {
        *out_err = "invalid address in CIDR";
        return -1;
    }
    c->prefix = max;
    if (slash != NULL) {
        const char *p = slash + 1;
        unsigned v = 0;
        size_t digits = 0;
        for (; *p >= '0' && *p <= '9' && digits < 4; p++, digits++) {
            v = v * 10 + (unsigned)(*p - '0');
        }
        if (digits == 0 || *p != '\0' || v > max) {
            *out_err = "invalid CIDR prefix length";
            return -1;
        }
        c->prefix = v;
    }
    // Clear host bits so the rule reads back from iptables-save unchanged.
    for (unsigned bit = c->prefix; bit < max; bit++) {
        c->addr[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
    }
    return 0;
}

int sc_init_parse_cidrs(const char *s, struct sc_init_cidr *out, size_t *num, const char **out_err)
{
    const char *p = s;
    while (*p != '\0') {
        const char *end = strchr(p, ',');
        size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
        char item[80];
        if (n == 0 || n >= sizeof(item)) {
            *out_err = n == 0 ? "empty entry in CIDR list" : "invalid CIDR (too long)";
            return -1;
        }
        memcpy(item, p, n);
        item[n] = '\0';
        struct sc_init_cidr c;
        if (parse_one_cidr(item, &c, out_err) != 0) {
            return -1;
        }
        bool dup = false;
        for (size_t i = 0; i < *num; i++) {
            dup = dup || memcmp(&out[i], &c, sizeof(c)) == 0;
        }
        if (!dup) {
            if (*num == SC_INIT_MAX_LIST) {
                *out_err = "too many CIDRs (at most 64)";
                return -1;
            }
            out[(*num)++] = c;
        }
        p += n;
        if (*p == ',') {
            p++;
            if (*p == '\0') {
                *out_err = "trailing ',' in CIDR list";
                return -1;
            }
        }
    }
    return 0;
}

void sc_init_format_cidr(const struct sc_init_cidr *c, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN];
    inet_ntop(c->family == 4 ? AF_INET : AF_INET6, c->addr, ip, sizeof(ip));
    snprintf(out, cap, "%s/%u", ip, c->prefix);
}

// jumps_into_ours reports whether a save line "-A CHAIN ... -j SEAM_X" of
// |len| bytes, in a chain that is not ours, jumps into one of our chains.
static bool jumps_into_ours(const char *line, size_t len)
{
    char buf[1024];
    if (len < 3 || len >= sizeof(buf) || strncmp(line, "-A ", 3) != 0) {
        return false;
    }
    memcpy(buf, line, len);
    buf[len] = '\0';
    for (size_t i = 0; i < 4; i++) {
        size_t cl = strlen(sc_init_chains[i]);
        if (strncmp(buf + 3, sc_init_chains[i], cl) == 0 && buf[3 + cl] == ' ') {
            return false; // a rule inside one of our chains
        }
    }
    for (size_t i = 0; i < 4; i++) {
        char target[32];
        size_t tl = (size_t)snprintf(target, sizeof(target), "-j %s", sc_init_chains[i]);
        for (const char *p = strstr(buf, target); p != NULL; p = strstr(p + 1, target)) {
            if (p[tl] == ' ' || p[tl] == '\0') {
                return true;
            }
        }
    }
    return false;
}

// add_deletions appends "-D ..." for every jump into our chains found in
// |save| (restricted to its *nat section). Sets |*out_found| when one of our
// chains or jumps exists.
static int add_deletions(const char *save, struct sc_init_text *out, bool *out_found)
{
    bool in_nat = false;
    const char *p = save;
    while (p != NULL && *p != '\0') {
        const char *nl = strchr(p, '\n');
        size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);
        if (len > 0 && p[0] == '*') {
            in_nat = len == 4 && strncmp(p, "*nat", 4) == 0;
        } else if (in_nat && len > 0 && p[0] == ':') {
            for (size_t i = 0; i < 4; i++) {
                size_t cl = strlen(sc_init_chains[i]);
                if (len > cl + 1 && strncmp(p + 1, sc_init_chains[i], cl) == 0 &&
                    p[1 + cl] == ' ') {
                    *out_found = true;
                }
            }
        } else if (in_nat && jumps_into_ours(p, len)) {
            *out_found = true;
            if (sc_init_text_add(out, "-D%.*s", (int)(len - 2), p + 2) != 0) {
                return -1;
            }
        }
        p = nl != NULL ? nl + 1 : NULL;
    }
    return 0;
}

int sc_init_build_install(const struct sc_init_config *cfg, int family, const char *current_save,
                          struct sc_init_text *out)
{
    bool found = false;
    int rc = 0;
    rc |= sc_init_text_add(out, "*nat");
    for (size_t i = 0; i < 4; i++) {
        rc |= sc_init_text_add(out, ":%s - [0:0]", sc_init_chains[i]);
    }
    if (current_save != NULL && add_deletions(current_save, out, &found) != 0) {
        return -1;
    }
    rc |= sc_init_text_add(out, "-A SEAM_IN_REDIRECT -p tcp -j REDIRECT --to-ports %u",
                           cfg->inbound_port);
    rc |= sc_init_text_add(out, "-A SEAM_REDIRECT -p tcp -j REDIRECT --to-ports %u",
                           cfg->outbound_port);
    for (size_t i = 0; i < cfg->num_excl_in; i++) {
        rc |= sc_init_text_add(out, "-A SEAM_INBOUND -p tcp --dport %u -j RETURN", cfg->excl_in[i]);
    }
    rc |= sc_init_text_add(out, "-A SEAM_INBOUND -p tcp -j SEAM_IN_REDIRECT");
    for (size_t i = 0; i < cfg->num_excl_out; i++) {
        rc |= sc_init_text_add(out, "-A SEAM_OUTPUT -p tcp --dport %u -j RETURN", cfg->excl_out[i]);
    }
    rc |= sc_init_text_add(out, "-A SEAM_OUTPUT -m owner --uid-owner %u -j RETURN", cfg->proxy_uid);
    rc |= sc_init_text_add(out, "-A SEAM_OUTPUT -m owner --gid-owner %u -j RETURN", cfg->proxy_gid);
    rc |= sc_init_text_add(out, "-A SEAM_OUTPUT -o lo -j RETURN");
    rc |= sc_init_text_add(out, "-A SEAM_OUTPUT -d %s -j RETURN",
                           family == 4 ? "127.0.0.0/8" : "::1/128");
    for (size_t i = 0; i < cfg->num_cidrs; i++) {
        if (cfg->cidrs[i].family != family) {
            continue;
        }
        char cidr[64];
        sc_init_format_cidr(&cfg->cidrs[i], cidr, sizeof(cidr));
        rc |= sc_init_text_add(out, "-A SEAM_OUTPUT -d %s -j RETURN", cidr);
    }
    rc |= sc_init_text_add(out, "-A SEAM_OUTPUT -j SEAM_REDIRECT");
    rc |= sc_init_text_add(out, "-A PREROUTING -p tcp -j SEAM_INBOUND");
    rc |= sc_init_text_add(out, "-A OUTPUT -p tcp -j SEAM_OUTPUT");
    rc |= sc_init_text_add(out, "COMMIT");
    return rc == 0 ? 0 : -1;
}

int sc_init_build_uninstall(const char *current_save, struct sc_init_text *out, bool *out_found)
{
    int rc = 0;
    *out_found = current_save == NULL;
    rc |= sc_init_text_add(out, "*nat");
    // Declaring a chain in --noflush mode flushes it, so the -X below never
    // trips over a reference from one of our chains to another.
    for (size_t i = 0; i < 4; i++) {
        rc |= sc_init_text_add(out, ":%s - [0:0]", sc_init_chains[i]);
    }
    if (current_save != NULL && add_deletions(current_save, out, out_found) != 0) {
        return -1;
    }
    for (size_t i = 0; i < 4; i++) {
        rc |= sc_init_text_add(out, "-X %s", sc_init_chains[i]);
    }
    rc |= sc_init_text_add(out, "COMMIT");
    return rc == 0 ? 0 : -1;
}
