// test_accept_pause.c — sc_accept_pause on a real loopback listener: which
// accept errors pause it (no fd: EMFILE/ENFILE; no kernel memory:
// ENOBUFS/ENOMEM), that a paused socket keeps its backlog and accepts the
// waiting connection once it resumes, and that other errors change nothing.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sc/accept_pause.h"

struct fixture {
    uv_loop_t loop;
    uv_tcp_t tcp;
    struct sc_accept_pause ap;
    int port;
    int accepted; // connections the callback took
    int errors;   // error statuses the callback saw
    bool closed;
};

static void on_client_closed(uv_handle_t *h)
{
    free(h);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct fixture *f = server->data;
    if (sc_accept_pause_on_status(&f->ap, status) || status < 0) {
        f->errors++;
        return;
    }
    uv_tcp_t *c = malloc(sizeof(*c));
    assert_non_null(c);
    uv_tcp_init(&f->loop, c);
    assert_int_equal(uv_accept(server, (uv_stream_t *)c), 0);
    f->accepted++;
    uv_close((uv_handle_t *)c, on_client_closed);
}

static void start(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(sc_accept_pause_init(&f->ap, &f->loop, &f->tcp), 0);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    assert_int_equal(uv_tcp_bind(&f->tcp, (const struct sockaddr *)&sa, 0), 0);
    struct sockaddr_storage bound;
    int len = sizeof(bound);
    assert_int_equal(uv_tcp_getsockname(&f->tcp, (struct sockaddr *)&bound, &len), 0);
    f->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    f->tcp.data = f;
    assert_int_equal(sc_accept_pause_listen(&f->ap, 16, on_connection, "test", "unit=1"), 0);
    assert_int_equal(f->ap.state, SC_AP_LISTENING);
}

static void on_closed(struct sc_accept_pause *ap, void *arg)
{
    (void)ap;
    ((struct fixture *)arg)->closed = true;
}

static void stop(struct fixture *f)
{
    sc_accept_pause_close(&f->ap, on_closed, f);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_true(f->closed);
    assert_int_equal(uv_loop_close(&f->loop), 0);
}

// connect_blocking opens a client connection to the listener; the kernel
// completes it from the backlog whether or not the loop accepts.
static int connect_blocking(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", port, &sa);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

// run_until runs the loop until |*count| reaches |want| or 5 s pass.
static void run_until(struct fixture *f, const int *count, int want)
{
    uint64_t deadline = uv_hrtime() + 5000000000ull;
    while (*count < want && uv_hrtime() < deadline) {
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    assert_int_equal(*count, want);
}

static void pauses_and_resumes_on(int status)
{
    struct fixture f;
    start(&f);
    assert_true(sc_accept_pause_on_status(&f.ap, status));
    uv_run(&f.loop, UV_RUN_NOWAIT); // the handle's close completes; the timer starts
    assert_int_equal(f.ap.state, SC_AP_PAUSED);
    // The socket still listens (the spare fd): a client connects meanwhile
    // and is accepted once the pause ends, about 100 ms later.
    int c = connect_blocking(f.port);
    uint64_t t0 = uv_hrtime();
    run_until(&f, &f.accepted, 1);
    assert_true(uv_hrtime() - t0 >= 50000000ull); // not before the pause ended
    assert_int_equal(f.ap.state, SC_AP_LISTENING);
    assert_int_equal(f.errors, 0);
    close(c);
    stop(&f);
}

static void test_no_fds_pauses(void **state)
{
    (void)state;
    pauses_and_resumes_on(UV_EMFILE);
    pauses_and_resumes_on(UV_ENFILE);
}

static void test_no_kernel_memory_pauses(void **state)
{
    (void)state;
    pauses_and_resumes_on(UV_ENOBUFS);
    pauses_and_resumes_on(UV_ENOMEM);
}

static void test_other_errors_do_not_pause(void **state)
{
    (void)state;
    struct fixture f;
    start(&f);
    const int others[] = {UV_ECONNABORTED, UV_EINVAL, UV_EPERM, UV_EPROTO};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        assert_false(sc_accept_pause_on_status(&f.ap, others[i]));
        assert_int_equal(f.ap.state, SC_AP_LISTENING);
    }
    int c = connect_blocking(f.port);
    run_until(&f, &f.accepted, 1); // accepted at once, no pause
    close(c);
    stop(&f);
}

static void test_pause_while_paused_is_ignored(void **state)
{
    (void)state;
    struct fixture f;
    start(&f);
    assert_true(sc_accept_pause_on_status(&f.ap, UV_ENOMEM));
    // A second error status before the handle finished closing (libuv's
    // accept loop may report once more) does not close it twice.
    assert_false(sc_accept_pause_on_status(&f.ap, UV_ENOBUFS));
    uv_run(&f.loop, UV_RUN_NOWAIT);
    assert_int_equal(f.ap.state, SC_AP_PAUSED);
    stop(&f); // closing while paused frees everything
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_fds_pauses),
        cmocka_unit_test(test_no_kernel_memory_pauses),
        cmocka_unit_test(test_other_errors_do_not_pause),
        cmocka_unit_test(test_pause_while_paused_is_ignored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
