// sc/accept_pause.h — a listening TCP handle that pauses accepting, instead
// of spinning, when accept() runs out of file descriptors or kernel memory.
//
// libuv 1.44 (src/unix/stream.c uv__server_io) answers EMFILE/ENFILE with its
// reserve-fd trick; when that fails too it calls the connection callback with
// the error and calls accept() again at once, for as long as connections are
// pending: the loop never returns. The only way out from the callback is to
// close the listening handle. sc_accept_pause closes the handle but keeps the
// socket open through a spare dup() of its fd, so the socket stays in LISTEN
// with its backlog (and in its SO_REUSEPORT group), and listens again on the
// same socket after a pause: 100 ms, doubling to 1 s while accept keeps
// failing, back to 100 ms after a connection is accepted.
//
// Use: sc_accept_pause_init, then bind or open the handle (uv_tcp_bind,
// uv_tcp_open), set its data, sc_accept_pause_listen; call
// sc_accept_pause_on_status first in the connection callback; close with
// sc_accept_pause_close (never uv_close the handle directly).
#ifndef SC_ACCEPT_PAUSE_H
#define SC_ACCEPT_PAUSE_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

enum sc_accept_pause_state {
    SC_AP_UNUSED = 0, // zeroed memory: sc_accept_pause_close does nothing
    SC_AP_IDLE,       // handle initialized, not listening yet
    SC_AP_LISTENING,  // listening, with a spare dup of the fd
    SC_AP_PAUSING,    // handle closing; the pause timer starts in its close callback
    SC_AP_PAUSED,     // handle closed, the socket kept in |fd|, timer running
    SC_AP_CLOSING,
    SC_AP_CLOSED,
};

struct sc_accept_pause;

// sc_accept_pause_close_cb is called once both handles are closed.
typedef void (*sc_accept_pause_close_cb)(struct sc_accept_pause *ap, void *arg);

// struct sc_accept_pause is embedded in its owner next to the uv_tcp_t it
// guards. All members are private.
struct sc_accept_pause {
    enum sc_accept_pause_state state;
    uv_tcp_t *tcp;    // the owner's listening handle
    uv_timer_t timer; // the pause
    uv_loop_t *loop;
    void *data;          // tcp->data, restored when the handle is made again
    uv_connection_cb cb; // the owner's connection callback
    int backlog;
    int fd;                // spare dup while listening, the socket itself while paused
    uint64_t delay_ms;     // the next pause
    uint64_t paused_at;    // uv_now when this run of pauses began
    uint64_t num_failed;   // accepts failed for lack of fds in this run (0: not paused)
    const char *component; // log event prefix ("proxy")
    char label[32];        // first log field ("worker=0")
    int pending_closes;    // while closing
    sc_accept_pause_close_cb close_cb;
    void *close_arg;
};

// sc_accept_pause_init initializes |tcp| on |loop| (uv_tcp_init) and the
// pause timer. Returns 0 or a UV_E* code; after any return the caller closes
// with sc_accept_pause_close.
int sc_accept_pause_init(struct sc_accept_pause *ap, uv_loop_t *loop, uv_tcp_t *tcp);

// sc_accept_pause_listen keeps a spare dup of the bound handle's fd and calls
// uv_listen(|backlog|, |cb|). Log lines start with event |component|.accept_*
// (a string literal) and the field |label|. Returns 0 or a UV_E* code (then
// nothing listens).
int sc_accept_pause_listen(struct sc_accept_pause *ap, int backlog, uv_connection_cb cb,
                           const char *component, const char *label);

// sc_accept_pause_on_status takes the connection callback's |status| before
// the owner acts on it. A 0 ends a run of pauses (logged) and resets the
// back-off. UV_EMFILE, UV_ENFILE (no fd), UV_ENOBUFS and UV_ENOMEM (no
// kernel memory for the socket) close the handle and start a pause (the
// first of a run is logged as a warning); it returns true then, and the
// owner must not use the handle. Other statuses return false.
bool sc_accept_pause_on_status(struct sc_accept_pause *ap, int status);

// sc_accept_pause_close stops the timer, closes both handles (unless the
// listening one is closed already, as during a pause) and the spare fd, and
// calls |cb| (may be NULL) once they are closed. It does nothing after the
// first call, or on zeroed memory that sc_accept_pause_init never saw.
void sc_accept_pause_close(struct sc_accept_pause *ap, sc_accept_pause_close_cb cb, void *arg);

#endif
