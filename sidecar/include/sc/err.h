// sc/err.h — seam's own error codes. Functions return 0 on success and a
// negative code on failure; libuv's UV_E* codes pass through untouched, ours
// live in a reserved range far below them.
#ifndef SC_ERR_H
#define SC_ERR_H

#define SC_ERR_BASE (-30000)
#define SC_ETLS (SC_ERR_BASE - 1)    // a TLS operation failed (handshake, record, alert)
#define SC_EPROTO (SC_ERR_BASE - 2)  // the peer broke a protocol rule
#define SC_ECONFIG (SC_ERR_BASE - 3) // bad configuration (file, flag)
#define SC_ESTATE (SC_ERR_BASE - 4)  // call not allowed in the current state
#define SC_ENOMEM (SC_ERR_BASE - 5)  // allocation failed inside a library

// sc_strerror returns a static description of |err| (ours or libuv's).
const char *sc_strerror(int err);

#endif
