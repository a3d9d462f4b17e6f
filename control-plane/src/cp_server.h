// cp_server.h — seam-control-plane's event loop: the gRPC server (HTTP/2 over
// TLS with ALPN h2, nghttp2 on sc_stream), the CA and config services, the
// mesh-file watcher and the admin HTTP endpoint.
#ifndef CP_SERVER_H
#define CP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "cp_auth.h"
#include "cp_ca.h"

struct cp_server_config {
    struct sockaddr_storage listen; // --listen
    bool have_admin;
    struct sockaddr_storage admin;   // --admin
    const char *mesh_path;           // --mesh
    const char *root_out;            // --root-out (may be NULL)
    const char *const *server_names; // DNS SANs of the serving certificate
    size_t num_server_names;
    struct cp_ca *ca;      // owned by the caller
    struct cp_auth *auth;  // owned by the caller; NULL = no auth configured
    size_t max_msg;        // gRPC receive cap per message
    uint32_t max_streams;  // SETTINGS_MAX_CONCURRENT_STREAMS per connection
    uint64_t mesh_poll_ms; // mesh/auth file poll interval
    uint64_t conn_idle_ms; // --idle-timeout: GOAWAY + close a connection with no
                           // open call and nothing read for this long (0 = never)
};

// cp_server_run loads the mesh, starts listening and runs until SIGTERM or
// SIGINT, then sends GOAWAY, ends open streams with UNAVAILABLE and returns 0.
// Returns 2 for configuration errors found at start (message on stderr) and 1
// for runtime failures to start (e.g. the port is taken).
int cp_server_run(const struct cp_server_config *cfg);

#endif
