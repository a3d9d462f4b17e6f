// buf.c — fixed-size I/O buffers with a per-loop freelist (sc/buf.h).
#include "sc/buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

// Every buffer is preceded by this header; data starts 16-byte aligned.
struct buf_hdr {
    struct sc_bufpool *pool;
    struct buf_hdr *next;
};

#define HDR_SIZE ((sizeof(struct buf_hdr) + 15) & ~(size_t)15)

void sc_bufpool_init(struct sc_bufpool *pool, size_t max_free)
{
    pool->free_list = NULL;
    pool->num_free = 0;
    pool->max_free = max_free;
    pool->num_out = 0;
}

void sc_bufpool_cleanup(struct sc_bufpool *pool)
{
    struct buf_hdr *h = pool->free_list;
    while (h != NULL) {
        struct buf_hdr *next = h->next;
        free(h);
        h = next;
    }
    pool->free_list = NULL;
    pool->num_free = 0;
}

char *sc_buf_get(struct sc_bufpool *pool)
{
    struct buf_hdr *h = NULL;
    if (pool != NULL && pool->free_list != NULL) {
        h = pool->free_list;
        pool->free_list = h->next;
        pool->num_free--;
    } else {
        h = malloc(HDR_SIZE + SC_BUF_SIZE);
        if (h == NULL) {
            fprintf(stderr, "seam: out of memory\n");
            abort();
        }
    }
    h->pool = pool;
    h->next = NULL;
    if (pool != NULL) {
        pool->num_out++;
    }
    return (char *)h + HDR_SIZE;
}

void sc_buf_release(char *buf)
{
    if (buf == NULL) {
        return;
    }
    struct buf_hdr *h = (struct buf_hdr *)(buf - HDR_SIZE);
    struct sc_bufpool *pool = h->pool;
    if (pool == NULL) {
        free(h);
        return;
    }
    pool->num_out--;
    if (pool->num_free >= pool->max_free) {
        free(h);
        return;
    }
    h->next = pool->free_list;
    pool->free_list = h;
    pool->num_free++;
}
