// log.c — see sc/log.h. Text lines look like
//   2026-11-27T08:00:00.123Z INFO tls.handshake_failed reason=expired peer=127.0.0.1:5555
// and JSON lines like
//   {"ts":"...","level":"info","event":"tls.handshake_failed","msg":"reason=expired ..."}
#include "sc/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static enum sc_log_level g_level = SC_LOG_INFO;
static enum sc_log_format g_format = SC_LOG_TEXT;
static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
static const char *const level_json[] = {"debug", "info", "warn", "error"};

void sc_log_setup(enum sc_log_level level, enum sc_log_format format)
{
    g_level = level;
    g_format = format;
}

int sc_log_parse_level(const char *s)
{
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, level_json[i]) == 0) {
            return i;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        return SC_LOG_WARN;
    }
    return -1;
}

bool sc_log_enabled(enum sc_log_level level)
{
    return level >= g_level;
}

// json_escape appends |s| to |out| (capacity |cap|, current length |*len|) as
// the inside of a JSON string, truncating rather than overflowing.
static void json_escape(char *out, size_t cap, size_t *len, const char *s)
{
    for (; *s != '\0' && *len + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[(*len)++] = '\\';
            out[(*len)++] = (char)c;
        } else if (c < 0x20) {
            *len += (size_t)snprintf(out + *len, cap - *len, "\\u%04x", c);
        } else {
            out[(*len)++] = (char)c;
        }
    }
}

void sc_log(enum sc_log_level level, const char *event, const char *fmt, ...)
{
    if (level < g_level) {
        return;
    }
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[32];
    size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03ldZ", (long)(tv.tv_usec / 1000));

    char line[4096];
    size_t len;
    if (g_format == SC_LOG_JSON) {
        len = (size_t)snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",\"event\":\"",
                               ts, level_json[level]);
        json_escape(line, sizeof(line), &len, event);
        len += (size_t)snprintf(line + len, sizeof(line) - len, "\",\"msg\":\"");
        json_escape(line, sizeof(line), &len, msg);
        len += (size_t)snprintf(line + len, sizeof(line) - len, "\"}\n");
    } else {
        len = (size_t)snprintf(line, sizeof(line), "%s %s %s %s\n", ts, level_names[level], event,
                               msg);
    }
    if (len >= sizeof(line)) {
        len = sizeof(line) - 1;
        line[len - 1] = '\n';
    }
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
