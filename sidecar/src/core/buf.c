// buf.c — I/O buffers of two sizes with per-loop freelists (sc/buf.h).
#include "sc/buf.h"

#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

// Every buffer is preceded by this header; data starts 16-byte aligned.
struct buf_hdr {
    struct sc_bufpool *pool;
    struct buf_hdr *next;
    size_t size;   // usable bytes: SC_BUF_SIZE or SC_BUF_LARGE_SIZE
    unsigned refs; // holders beyond the first (sc_buf_ref)
};

#define HDR_SIZE ((sizeof(struct buf_hdr) + 15) & ~(size_t)15)

void sc_bufpool_init(struct sc_bufpool *pool, size_t max_free)
{
    pool->free_list = NULL;
    pool->free_large = NULL;
    pool->num_free = 0;
    pool->num_free_large = 0;
    pool->max_free = max_free;
    pool->max_free_large = max_free / 8 > 2 ? max_free / 8 : 2;
    pool->num_out = 0;
    pool->bytes_out = 0;
    pool->large_budget = 0;
}

static void free_chain(struct buf_hdr *h)
{
    while (h != NULL) {
        struct buf_hdr *next = h->next;
        free(h);
        h = next;
    }
}

void sc_bufpool_cleanup(struct sc_bufpool *pool)
{
    free_chain(pool->free_list);
    free_chain(pool->free_large);
    pool->free_list = NULL;
    pool->free_large = NULL;
    pool->num_free = 0;
    pool->num_free_large = 0;
}

char *sc_buf_get_sized(struct sc_bufpool *pool, bool large)
{
    if (large && pool != NULL && pool->large_budget != 0 &&
        pool->bytes_out + SC_BUF_LARGE_SIZE > pool->large_budget) {
        large = false;
    }
    size_t size = large ? SC_BUF_LARGE_SIZE : SC_BUF_SIZE;
    struct buf_hdr *h = NULL;
    if (pool != NULL && large && pool->free_large != NULL) {
        h = pool->free_large;
        pool->free_large = h->next;
        pool->num_free_large--;
    } else if (pool != NULL && !large && pool->free_list != NULL) {
        h = pool->free_list;
        pool->free_list = h->next;
        pool->num_free--;
    } else {
        h = malloc(HDR_SIZE + size);
        if (h == NULL) {
            fprintf(stderr, "seam: out of memory\n");
            abort();
        }
        h->size = size;
    }
    h->pool = pool;
    h->next = NULL;
    h->refs = 0;
    if (pool != NULL) {
        pool->num_out++;
        pool->bytes_out += size;
    }
    return (char *)h + HDR_SIZE;
}

char *sc_buf_get(struct sc_bufpool *pool)
{
    return sc_buf_get_sized(pool, false);
}

size_t sc_buf_size(const char *buf)
{
    const struct buf_hdr *h = (const struct buf_hdr *)(buf - HDR_SIZE);
    return h->size;
}

void sc_buf_release(char *buf)
{
    if (buf == NULL) {
        return;
    }
    struct buf_hdr *h = (struct buf_hdr *)(buf - HDR_SIZE);
    if (h->refs > 0) {
        h->refs--;
        return;
    }
    struct sc_bufpool *pool = h->pool;
    if (pool == NULL) {
        free(h);
        return;
    }
    pool->num_out--;
    pool->bytes_out -= h->size;
    bool large = h->size == SC_BUF_LARGE_SIZE;
    if (large ? pool->num_free_large >= pool->max_free_large : pool->num_free >= pool->max_free) {
        free(h);
        return;
    }
    if (large) {
        h->next = pool->free_large;
        pool->free_large = h;
        pool->num_free_large++;
    } else {
        h->next = pool->free_list;
        pool->free_list = h;
        pool->num_free++;
    }
}

char *sc_buf_ref(char *buf)
{
    assert(buf != NULL);
    struct buf_hdr *h = (struct buf_hdr *)(buf - HDR_SIZE);
    h->refs++;
    return buf;
}
