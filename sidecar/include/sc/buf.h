// sc/buf.h — fixed-size I/O buffers from a per-loop freelist.
//
// A connection holds a buffer only while bytes are in flight: reads allocate
// one when the socket is readable and the buffer is released once its bytes
// are written on. An idle connection holds none. A pool belongs to one loop
// thread and is never touched from another thread.
#ifndef SC_BUF_H
#define SC_BUF_H

#include <stddef.h>

// SC_BUF_SIZE is the usable size of every buffer: two full TLS records.
#define SC_BUF_SIZE (32 * 1024)

// SC_BUF_READ_SIZE is how much a read puts into one buffer: a little less
// than SC_BUF_SIZE so that the bytes of one read, once encrypted (two TLS
// 1.3 records of 16 KiB plus 22 bytes each), still fit one buffer and go out
// in one write.
#define SC_BUF_READ_SIZE (SC_BUF_SIZE - 256)

struct sc_bufpool {
    void *free_list;   // singly linked list of free buffers (private)
    size_t num_free;   // buffers on free_list
    size_t max_free;   // cap on free_list; beyond it buffers go back to malloc
    size_t num_out;    // buffers handed out and not yet released (stats, leak checks)
};

// sc_bufpool_init initialises an empty pool that keeps at most |max_free|
// released buffers for reuse.
void sc_bufpool_init(struct sc_bufpool *pool, size_t max_free);

// sc_bufpool_cleanup frees the buffers on the freelist. Buffers still out
// remain valid and are freed by sc_buf_release.
void sc_bufpool_cleanup(struct sc_bufpool *pool);

// sc_buf_get returns a buffer of SC_BUF_SIZE bytes from |pool|, or from
// malloc if |pool| is NULL. It aborts on OOM. Release it with sc_buf_release.
char *sc_buf_get(struct sc_bufpool *pool);

// sc_buf_release gives |buf| (from sc_buf_get) back to the pool it came
// from, on that pool's thread. NULL is ignored.
void sc_buf_release(char *buf);

#endif
