// sc/buf.h — I/O buffers of two sizes from a per-loop freelist.
//
// A connection holds a buffer only while bytes are in flight: reads allocate
// one when the socket is readable and the buffer is released once its bytes
// are written on. An idle connection holds none. A pool belongs to one loop
// thread and is never touched from another thread.
//
// Small buffers serve request/response traffic. A stream whose reads fill
// whole buffers (a bulk transfer) switches to large ones: each read and write
// syscall then moves 8x the bytes (bench/NOTES.md §6: -35 % kernel CPU per GB
// through the sidecar pair), while a connection with small messages never
// holds more than a small buffer.
#ifndef SC_BUF_H
#define SC_BUF_H

#include <stdbool.h>
#include <stddef.h>

// SC_BUF_SIZE is the usable size of a small buffer: two full TLS records.
#define SC_BUF_SIZE (32 * 1024)

// SC_BUF_LARGE_SIZE is the usable size of a large buffer: sixteen TLS records.
#define SC_BUF_LARGE_SIZE (256 * 1024)

// SC_BUF_READ_RESERVE is what a read leaves free at the end of a buffer so
// that the bytes of one read, once encrypted (16 KiB TLS 1.3 records plus 22
// bytes each), still fit one buffer of the same size and go out in one write.
// (Decrypted plaintext fills whole buffers: it is never encrypted again.)
#define SC_BUF_READ_RESERVE 512

// SC_BUF_READ_SIZE is how much a read puts into a small buffer.
#define SC_BUF_READ_SIZE (SC_BUF_SIZE - SC_BUF_READ_RESERVE)

struct sc_bufpool {
    void *free_list;       // singly linked list of free small buffers (private)
    void *free_large;      // the same for large buffers
    size_t num_free;       // small buffers on free_list
    size_t num_free_large; // large buffers on free_large
    size_t max_free;       // cap on free_list; beyond it buffers go back to malloc
    size_t max_free_large; // cap on free_large (max_free / 8, at least 2)
    size_t num_out;        // buffers handed out and not yet released (leak checks)
    size_t bytes_out;      // their usable bytes (the buffer-memory limit)
    size_t large_budget;   // large buffers only while bytes_out stays within it (0 = no cap)
};

// sc_bufpool_init initialises an empty pool that keeps at most |max_free|
// released small buffers (and max_free / 8 large ones) for reuse.
void sc_bufpool_init(struct sc_bufpool *pool, size_t max_free);

// sc_bufpool_cleanup frees the buffers on the freelists. Buffers still out
// remain valid and are freed by sc_buf_release.
void sc_bufpool_cleanup(struct sc_bufpool *pool);

// sc_buf_get returns a small buffer (SC_BUF_SIZE bytes) from |pool|, or from
// malloc if |pool| is NULL. It aborts on OOM. Release it with sc_buf_release.
char *sc_buf_get(struct sc_bufpool *pool);

// sc_buf_get_sized returns a large buffer (SC_BUF_LARGE_SIZE) if |large|
// and the pool's large_budget allows it (bytes_out + SC_BUF_LARGE_SIZE <=
// large_budget, or no budget set), else a small one: check sc_buf_size.
char *sc_buf_get_sized(struct sc_bufpool *pool, bool large);

// sc_buf_size returns the usable size of |buf| (from sc_buf_get*).
size_t sc_buf_size(const char *buf);

// sc_buf_release gives |buf| (from sc_buf_get*) back to the pool it came
// from, on that pool's thread, once every holder released it (sc_buf_ref).
// NULL is ignored.
void sc_buf_release(char *buf);

// sc_buf_ref adds a holder to |buf| and returns it: each holder calls
// sc_buf_release once. Lets one read buffer be written from in place by
// several writes (mux.c writes the slices of a session read to each stream's
// socket without copying them), all on the pool's thread.
char *sc_buf_ref(char *buf);

#endif
