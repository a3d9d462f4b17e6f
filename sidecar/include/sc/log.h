// sc/log.h — structured, one-line-per-event logging, safe from any thread.
#ifndef SC_LOG_H
#define SC_LOG_H

#include <stdbool.h>

enum sc_log_level { SC_LOG_DEBUG = 0, SC_LOG_INFO, SC_LOG_WARN, SC_LOG_ERROR };
enum sc_log_format { SC_LOG_TEXT = 0, SC_LOG_JSON };

// sc_log_setup sets the minimum level and the output format (default: info, text).
void sc_log_setup(enum sc_log_level level, enum sc_log_format format);

// sc_log_parse_level turns "debug|info|warn|error" into a level; returns -1 if unknown.
int sc_log_parse_level(const char *s);

// sc_log_enabled reports whether a message at |level| would be written.
bool sc_log_enabled(enum sc_log_level level);

// sc_log writes one line to stderr: a timestamp, the level, the event name and
// printf-style "key=value" fields. In JSON format the fields string is emitted
// as "msg". The line is written with a single write(2) so lines from several
// workers never interleave. Never pass key material here.
void sc_log(enum sc_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define sc_debug(ev, ...)                                                                          \
    (sc_log_enabled(SC_LOG_DEBUG) ? sc_log(SC_LOG_DEBUG, ev, __VA_ARGS__) : (void)0)
#define sc_info(ev, ...)                                                                           \
    (sc_log_enabled(SC_LOG_INFO) ? sc_log(SC_LOG_INFO, ev, __VA_ARGS__) : (void)0)
#define sc_warn(ev, ...) sc_log(SC_LOG_WARN, ev, __VA_ARGS__)
#define sc_error(ev, ...) sc_log(SC_LOG_ERROR, ev, __VA_ARGS__)

#endif
