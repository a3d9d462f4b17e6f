// cc/config_client.h — the seam.v1.ConfigDiscovery/StreamConfig client.
//
// xDS state-of-the-world semantics (DESIGN.md §6): the client opens the
// stream, sends its node identity, and answers every response with an ACK
// (version_info = the new version, response_nonce = its nonce) or a NACK
// (version_info = the version still in force, error_detail set). A snapshot
// is NACKed when it fails validation (cc_snapshot_validate) or when the
// apply callback refuses it; the previous snapshot stays in force. The stream
// is re-opened with capped exponential backoff and jitter whenever it ends.
#ifndef CC_CONFIG_CLIENT_H
#define CC_CONFIG_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "cc/backoff.h"
#include "cc/grpc_client.h"
#include "seam/v1/config.pb-c.h"

#define CC_CONFIG_PATH "/seam.v1.ConfigDiscovery/StreamConfig"

struct cc_config_client;

// cc_config_apply_cb offers a validated snapshot of |version|. Return 0 to
// accept (ACK), or non-zero with a reason in |err| to refuse (NACK). The
// snapshot is only valid during the call: copy what you keep.
typedef int (*cc_config_apply_cb)(const Seam__V1__Snapshot *snap, const char *version, char *err,
                                  size_t err_len, void *arg);

// cc_config_event_cb (optional) reports stream events for logs and tests:
// "ack", "nack", "stream_end" (with the gRPC status and message), "retry"
// (|detail| holds the delay in ms).
typedef void (*cc_config_event_cb)(const char *event, const char *version, int status,
                                   const char *detail, void *arg);

struct cc_config_opts {
    const char *node_id;         // our SPIFFE ID
    const char *cluster;         // may be NULL
    uint64_t backoff_initial_ms; // 0 = 1 s
    uint64_t backoff_max_ms;     // 0 = 30 s
};

// cc_config_client_new starts the stream on |ch| (borrowed; it must outlive
// the client). Returns the client.
struct cc_config_client *cc_config_client_new(struct cc_channel *ch,
                                              const struct cc_config_opts *opts,
                                              cc_config_apply_cb apply, cc_config_event_cb event,
                                              void *arg);

// cc_config_client_free cancels the stream and frees the client once its
// timer has closed. No callbacks run after this returns. NULL is ignored.
void cc_config_client_free(struct cc_config_client *c);

// cc_config_client_version returns the version in force ("" before the first).
const char *cc_config_client_version(const struct cc_config_client *c);

// cc_snapshot_validate checks a decoded snapshot: every trust root parses as a
// PEM certificate (at least one root), inbound ports are 1..65535 and unique,
// allow patterns and endpoint SPIFFE IDs are valid, services have a name and
// endpoints with an address and a port, enums are known and the TTL is not
// negative. Returns 0, or -1 with a reason in |err|.
int cc_snapshot_validate(const Seam__V1__Snapshot *snap, char *err, size_t err_len);

// cc_snapshot_decode unpacks a ConfigResponse of |len| bytes and validates its
// snapshot. On success returns the message (free with
// seam__v1__config_response__free_unpacked(msg, NULL)); on failure returns
// NULL with a reason in |err| and, if the message parsed, its nonce copied to
// |nonce| (capacity |nonce_cap|, "" otherwise).
Seam__V1__ConfigResponse *cc_snapshot_decode(const uint8_t *buf, size_t len, char *err,
                                             size_t err_len, char *nonce, size_t nonce_cap);

#endif
