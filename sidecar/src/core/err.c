// err.c — descriptions of seam's error codes (sc/err.h).
#include "sc/err.h"

#include <uv.h>

const char *sc_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case SC_ETLS:
        return "TLS error";
    case SC_EPROTO:
        return "protocol error";
    case SC_ECONFIG:
        return "bad configuration";
    case SC_ESTATE:
        return "operation not allowed in this state";
    case SC_ENOMEM:
        return "out of memory";
    default:
        return uv_strerror(err);
    }
}
