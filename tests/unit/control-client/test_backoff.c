// Unit tests for control-client/src/backoff.c.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cc/backoff.h"

static void test_grows_and_caps(void **state)
{
    struct cc_backoff b;
    cc_backoff_init(&b, 100, 1000, 2.0, 0.0, 42);
    uint64_t want[] = {100, 200, 400, 800, 1000, 1000, 1000};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        assert_int_equal(cc_backoff_next(&b), want[i]);
    }
    cc_backoff_reset(&b);
    assert_int_equal(cc_backoff_next(&b), 100);
}

static void test_jitter_bounds_and_spread(void **state)
{
    struct cc_backoff b;
    cc_backoff_init(&b, 1000, 1000, 1.6, 0.2, 7);
    uint64_t lo = UINT64_MAX, hi = 0;
    for (int i = 0; i < 2000; i++) {
        uint64_t d = cc_backoff_next(&b);
        assert_true(d >= 800 && d <= 1200);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    // Jitter really spreads the delays (not a constant).
    assert_true(lo < 850);
    assert_true(hi > 1150);
}

static void test_defaults_and_seeds(void **state)
{
    struct cc_backoff a, b;
    cc_backoff_init(&a, 0, 0, 0, -1, 1);
    assert_int_equal(a.initial_ms, 1000);
    assert_int_equal(a.max_ms, 120000);
    uint64_t d = 0;
    for (int i = 0; i < 50; i++) {
        d = cc_backoff_next(&a);
        assert_true(d >= 1 && d <= 144000);
    }
    assert_int_equal(a.current_ms, 120000);
    // Different seeds give different sequences (no thundering herd).
    cc_backoff_init(&a, 1000, 60000, 1.6, 0.2, 1);
    cc_backoff_init(&b, 1000, 60000, 1.6, 0.2, 2);
    int same = 0;
    for (int i = 0; i < 10; i++) {
        same += cc_backoff_next(&a) == cc_backoff_next(&b);
    }
    assert_true(same < 10);
    // max below initial is raised to initial; a delay is never 0.
    cc_backoff_init(&a, 5, 1, 1.0, 1.0, 3);
    for (int i = 0; i < 100; i++) {
        assert_true(cc_backoff_next(&a) >= 1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grows_and_caps),
        cmocka_unit_test(test_jitter_bounds_and_spread),
        cmocka_unit_test(test_defaults_and_seeds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
