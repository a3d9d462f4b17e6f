// sc/certify.h — `seam-sidecar certify` (one-shot CA client, issue 3) and the
// hidden `seam-sidecar config-watch` debugging command (prints every config
// snapshot and its ACK/NACK). Both take the arguments after the program name;
// argv[0] may be the subcommand name itself (it is skipped if it does not
// start with '-'). Exit codes: 0 success, 1 failure, 2 bad flags.
#ifndef SC_CERTIFY_H
#define SC_CERTIFY_H

// sc_cmd_certify runs `certify`: gets a certificate from the control plane's
// CA, validates it, prints the SPIFFE ID, serial and not-after, and with
// --out-dir writes cert.pem (leaf + intermediates), chain.pem (as received),
// root.pem (last element) and key.pem, all mode 0600.
int sc_cmd_certify(int argc, char **argv);

// sc_cmd_config_watch runs `config-watch`: opens the config stream and prints
// one line per event (ACK/NACK/STREAM_END/RETRY) to stdout until SIGINT/SIGTERM
// or --exit-after events.
int sc_cmd_config_watch(int argc, char **argv);

#endif
