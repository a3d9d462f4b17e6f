// sc/tunnel.h — the `tunnel` subcommand of seam-sidecar.
#ifndef SC_TUNNEL_H
#define SC_TUNNEL_H

// sc_cmd_tunnel runs `seam-sidecar tunnel inbound|outbound FLAGS...` (|argv|
// starts at the mode). It returns the process exit code: 0 after a drain, 2
// for bad flags (message on stderr), 1 for other start-up failures.
int sc_cmd_tunnel(int argc, char **argv);

#endif
