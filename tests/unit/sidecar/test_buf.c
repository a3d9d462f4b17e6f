// test_buf.c — the two-size buffer pool (sc/buf.h): sizes, byte accounting
// for the buffer-memory limit, reuse from the freelists and their caps.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sc/buf.h"

static void test_sizes_and_accounting(void **state)
{
    struct sc_bufpool pool;
    sc_bufpool_init(&pool, 16);
    char *small = sc_buf_get(&pool);
    char *large = sc_buf_get_sized(&pool, true);
    assert_int_equal(sc_buf_size(small), SC_BUF_SIZE);
    assert_int_equal(sc_buf_size(large), SC_BUF_LARGE_SIZE);
    assert_true(SC_BUF_LARGE_SIZE > SC_BUF_SIZE);
    // Every byte is usable and 16-byte aligned.
    memset(small, 0xa5, SC_BUF_SIZE);
    memset(large, 0x5a, SC_BUF_LARGE_SIZE);
    assert_int_equal((uintptr_t)small % 16, 0);
    assert_int_equal((uintptr_t)large % 16, 0);
    assert_int_equal(pool.num_out, 2);
    assert_int_equal(pool.bytes_out, SC_BUF_SIZE + SC_BUF_LARGE_SIZE);
    sc_buf_release(large);
    assert_int_equal(pool.bytes_out, SC_BUF_SIZE);
    sc_buf_release(small);
    assert_int_equal(pool.num_out, 0);
    assert_int_equal(pool.bytes_out, 0);
    sc_buf_release(NULL); // ignored
    sc_bufpool_cleanup(&pool);
}

static void test_reuse_by_size(void **state)
{
    struct sc_bufpool pool;
    sc_bufpool_init(&pool, 16);
    char *large = sc_buf_get_sized(&pool, true);
    char *small = sc_buf_get_sized(&pool, false);
    sc_buf_release(large);
    sc_buf_release(small);
    assert_int_equal(pool.num_free, 1);
    assert_int_equal(pool.num_free_large, 1);
    // Each size comes back from its own list: a small request never gets
    // the large buffer and the other way round.
    assert_ptr_equal(sc_buf_get_sized(&pool, false), small);
    assert_ptr_equal(sc_buf_get_sized(&pool, true), large);
    assert_int_equal(sc_buf_size(small), SC_BUF_SIZE);
    assert_int_equal(sc_buf_size(large), SC_BUF_LARGE_SIZE);
    sc_buf_release(small);
    sc_buf_release(large);
    sc_bufpool_cleanup(&pool);
    assert_int_equal(pool.num_free, 0);
    assert_int_equal(pool.num_free_large, 0);
}

static void test_freelist_caps(void **state)
{
    struct sc_bufpool pool;
    sc_bufpool_init(&pool, 16); // 16 small, 16 / 8 = 2 large kept
    char *s[20], *l[5];
    for (int i = 0; i < 20; i++) {
        s[i] = sc_buf_get(&pool);
    }
    for (int i = 0; i < 5; i++) {
        l[i] = sc_buf_get_sized(&pool, true);
    }
    for (int i = 0; i < 20; i++) {
        sc_buf_release(s[i]);
    }
    for (int i = 0; i < 5; i++) {
        sc_buf_release(l[i]);
    }
    assert_int_equal(pool.num_free, 16);
    assert_int_equal(pool.num_free_large, 2);
    assert_int_equal(pool.num_out, 0);
    assert_int_equal(pool.bytes_out, 0);
    sc_bufpool_cleanup(&pool);
}

static void test_large_budget(void **state)
{
    struct sc_bufpool pool;
    sc_bufpool_init(&pool, 16);
    pool.large_budget = SC_BUF_LARGE_SIZE + SC_BUF_SIZE;
    char *a = sc_buf_get_sized(&pool, true);
    assert_int_equal(sc_buf_size(a), SC_BUF_LARGE_SIZE);
    char *b = sc_buf_get_sized(&pool, true); // would exceed the budget: small
    assert_int_equal(sc_buf_size(b), SC_BUF_SIZE);
    char *c = sc_buf_get_sized(&pool, true); // over it already: small
    assert_int_equal(sc_buf_size(c), SC_BUF_SIZE);
    sc_buf_release(a);
    sc_buf_release(c);
    char *d = sc_buf_get_sized(&pool, true); // room again
    assert_int_equal(sc_buf_size(d), SC_BUF_LARGE_SIZE);
    sc_buf_release(b);
    sc_buf_release(d);
    pool.large_budget = 0; // no cap
    char *e = sc_buf_get_sized(&pool, true);
    char *f = sc_buf_get_sized(&pool, true);
    assert_int_equal(sc_buf_size(e) + sc_buf_size(f), 2 * SC_BUF_LARGE_SIZE);
    sc_buf_release(e);
    sc_buf_release(f);
    assert_int_equal(pool.bytes_out, 0);
    sc_bufpool_cleanup(&pool);
}

// A buffer with extra holders goes back to the pool only when the last one
// releases it; until then it stays counted and is not handed out again.
static void test_refs(void **state)
{
    struct sc_bufpool pool;
    sc_bufpool_init(&pool, 16);
    char *b = sc_buf_get_sized(&pool, true);
    assert_ptr_equal(sc_buf_ref(b), b);
    assert_ptr_equal(sc_buf_ref(b), b);
    sc_buf_release(b);
    sc_buf_release(b);
    assert_int_equal(pool.num_out, 1);
    assert_int_equal(pool.bytes_out, SC_BUF_LARGE_SIZE);
    assert_int_equal(pool.num_free_large, 0);
    char *other = sc_buf_get_sized(&pool, true);
    assert_ptr_not_equal(other, b);
    sc_buf_release(b); // the last holder
    assert_int_equal(pool.num_out, 1);
    assert_int_equal(pool.num_free_large, 1);
    // Reused from the freelist, it starts with one holder again.
    assert_ptr_equal(sc_buf_get_sized(&pool, true), b);
    sc_buf_release(b);
    sc_buf_release(other);
    assert_int_equal(pool.num_out, 0);
    assert_int_equal(pool.num_free_large, 2);
    sc_bufpool_cleanup(&pool);
}

static void test_no_pool(void **state)
{
    // Without a pool a buffer comes from malloc and goes back to free.
    char *b = sc_buf_get_sized(NULL, true);
    assert_int_equal(sc_buf_size(b), SC_BUF_LARGE_SIZE);
    b[SC_BUF_LARGE_SIZE - 1] = 1;
    sc_buf_release(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes_and_accounting),
        cmocka_unit_test(test_reuse_by_size),
        cmocka_unit_test(test_freelist_caps),
        cmocka_unit_test(test_large_budget),
        cmocka_unit_test(test_refs),
        cmocka_unit_test(test_no_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
