// tcp_cc.c — congestion control for seam's loopback sockets (sc/tcp_cc.h).
#include "sc/tcp_cc.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <uv.h>

#include "sc/log.h"

#define SYSTEM_CC_PATH "/proc/sys/net/ipv4/tcp_congestion_control"

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= SC_TCP_CC_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-';
        if (!ok) {
            return false;
        }
    }
    return true;
}

int sc_tcp_cc_resolve(const char *flag, const char *system_cc, char out[SC_TCP_CC_MAX],
                      const char **why)
{
    out[0] = '\0';
    if (flag == NULL || strcmp(flag, "auto") == 0) {
        if (system_cc == NULL) {
            *why = "system_default_unknown";
        } else if (strncmp(system_cc, "bbr", 3) == 0) {
            // BBR sets the socket's pacing status on init and from then on
            // spaces every burst with an hrtimer; reno and cubic do not.
            memcpy(out, "reno", 5);
            *why = "system_default_paces";
        } else {
            *why = "system_default_does_not_pace";
        }
        return 0;
    }
    if (strcmp(flag, "off") == 0) {
        *why = "off";
        return 0;
    }
    if (!valid_name(flag)) {
        *why = "not auto, off or a congestion control name (letters, digits, '_' or '-', at "
               "most 15)";
        return -1;
    }
    memcpy(out, flag, strlen(flag) + 1);
    *why = "flag";
    return 0;
}

int sc_tcp_cc_system(char out[SC_TCP_CC_MAX])
{
    FILE *f = fopen(SYSTEM_CC_PATH, "re");
    if (f == NULL) {
        return -1;
    }
    char line[64];
    bool ok = fgets(line, sizeof(line), f) != NULL;
    fclose(f);
    if (!ok) {
        return -1;
    }
    line[strcspn(line, "\n")] = '\0';
    if (!valid_name(line)) {
        return -1;
    }
    memcpy(out, line, strlen(line) + 1);
    return 0;
}

int sc_tcp_cc_set(int fd, const char *name)
{
    if (setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name, (socklen_t)strlen(name)) != 0) {
        return -errno;
    }
    return 0;
}

int sc_tcp_cc_probe(const char *name)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    }
    if (fd < 0) {
        return -errno;
    }
    int r = sc_tcp_cc_set(fd, name);
    close(fd);
    return r;
}

const char *sc_tcp_cc_probe_error(int err)
{
    switch (err) {
    case UV_ENOENT:
        return "this kernel has no such congestion control "
               "(net.ipv4.tcp_available_congestion_control lists those it has)";
    case UV_EPERM:
        return "this process may not select it (not in "
               "net.ipv4.tcp_allowed_congestion_control, and no CAP_NET_ADMIN)";
    default:
        return uv_strerror(err);
    }
}

int sc_tcp_cc_choose(const char *flag, struct sc_tcp_cc_choice *out, char *err, size_t err_cap)
{
    memset(out, 0, sizeof(*out));
    bool known = sc_tcp_cc_system(out->system) == 0;
    if (sc_tcp_cc_resolve(flag, known ? out->system : NULL, out->cc, &out->why) != 0) {
        snprintf(err, err_cap, "%s", out->why);
        return -1;
    }
    if (out->cc[0] == '\0') {
        return 0;
    }
    int r = sc_tcp_cc_probe(out->cc);
    if (r == 0) {
        return 0;
    }
    if (flag != NULL && strcmp(flag, "auto") != 0) {
        snprintf(err, err_cap, "%s", sc_tcp_cc_probe_error(r));
        return -1;
    }
    out->cc[0] = '\0';
    out->why = "probe_failed";
    return 0;
}

void sc_tcp_cc_log(const struct sc_tcp_cc_choice *choice)
{
    sc_info("tcp.loopback_cc", "cc=%s system=%s reason=%s",
            choice->cc[0] != '\0' ? choice->cc : "-",
            choice->system[0] != '\0' ? choice->system : "-", choice->why);
}
