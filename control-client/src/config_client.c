// config_client.c — StreamConfig client: node identity, ACK/NACK, reconnect
// with backoff. The previous snapshot stays in force on a NACK simply because
// the apply callback is not called (or refused it).
#include "cc/config_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc/log.h"

struct cc_config_client {
    struct cc_channel *ch;
    struct cc_call *call; // open stream, NULL while waiting to retry
    char *node_id;
    char *cluster;
    cc_config_apply_cb apply;
    cc_config_event_cb event;
    void *arg;
    char version[256]; // version in force
    struct cc_backoff backoff;
    uv_timer_t retry;
    bool got_response; // this stream delivered a response (resets backoff)
    bool closing;
};

static void open_stream(struct cc_config_client *c);

static void emit(struct cc_config_client *c, const char *ev, const char *version, int status,
                 const char *detail)
{
    if (c->event != NULL && !c->closing) {
        c->event(ev, version, status, detail, c->arg);
    }
}

// send_request sends the node identity (first request of a stream) or an
// ACK/NACK for |nonce|.
static void send_request(struct cc_config_client *c, bool with_node, const char *nonce,
                         const char *error)
{
    Seam__V1__ConfigRequest req = SEAM__V1__CONFIG_REQUEST__INIT;
    Seam__V1__Node node = SEAM__V1__NODE__INIT;
    Seam__V1__ErrorDetail detail = SEAM__V1__ERROR_DETAIL__INIT;
    if (with_node) {
        node.id = c->node_id;
        node.cluster = c->cluster;
        node.user_agent = (char *)"seam/0.1";
        req.node = &node;
    }
    req.version_info = c->version;
    req.response_nonce = (char *)nonce;
    if (error != NULL) {
        detail.code = CC_GRPC_INVALID_ARGUMENT;
        detail.message = (char *)error;
        req.error_detail = &detail;
    }
    cc_call_send(c->call, &req.base);
}

static int on_response(struct cc_call *call, const uint8_t *msg, size_t len, void *arg)
{
    struct cc_config_client *c = arg;
    char err[512];
    char nonce[256];
    c->got_response = true;
    Seam__V1__ConfigResponse *r =
        cc_snapshot_decode(msg, len, err, sizeof(err), nonce, sizeof(nonce));
    if (r == NULL) {
        sc_warn("config.nack", "version=%s nonce=%s error=%s", c->version, nonce, err);
        send_request(c, false, nonce, err);
        emit(c, "nack", "", CC_GRPC_INVALID_ARGUMENT, err);
        return 0;
    }
    err[0] = '\0';
    int rc =
        c->apply != NULL ? c->apply(r->snapshot, r->version_info, err, sizeof(err), c->arg) : 0;
    if (rc != 0) {
        if (err[0] == '\0') {
            snprintf(err, sizeof(err), "snapshot refused by the sidecar");
        }
        sc_warn("config.nack", "version=%s nonce=%s error=%s", r->version_info, r->nonce, err);
        send_request(c, false, r->nonce, err);
        emit(c, "nack", r->version_info, CC_GRPC_INVALID_ARGUMENT, err);
    } else {
        snprintf(c->version, sizeof(c->version), "%s", r->version_info);
        sc_info("config.ack", "version=%s nonce=%s", c->version, r->nonce);
        send_request(c, false, r->nonce, NULL);
        emit(c, "ack", c->version, CC_GRPC_OK, "");
    }
    seam__v1__config_response__free_unpacked(r, NULL);
    return 0;
}

static void on_retry(uv_timer_t *t)
{
    open_stream(t->data);
}

static void on_stream_end(struct cc_call *call, int status, const char *message, void *arg)
{
    struct cc_config_client *c = arg;
    c->call = NULL;
    if (c->closing) {
        return;
    }
    if (c->got_response) {
        cc_backoff_reset(&c->backoff);
    }
    uint64_t delay = cc_backoff_next(&c->backoff);
    sc_warn("config.stream_end", "status=%s message=%s retry_ms=%llu", cc_grpc_status_name(status),
            message, (unsigned long long)delay);
    emit(c, "stream_end", c->version, status, message);
    char d[32];
    snprintf(d, sizeof(d), "%llu", (unsigned long long)delay);
    emit(c, "retry", c->version, status, d);
    uv_timer_start(&c->retry, on_retry, delay, 0);
}

static void open_stream(struct cc_config_client *c)
{
    c->got_response = false;
    c->call = cc_call_start(c->ch, CC_CONFIG_PATH, 0, on_response, on_stream_end, c);
    send_request(c, true, "", NULL);
}

struct cc_config_client *cc_config_client_new(struct cc_channel *ch,
                                              const struct cc_config_opts *opts,
                                              cc_config_apply_cb apply, cc_config_event_cb event,
                                              void *arg)
{
    struct cc_config_client *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        abort();
    }
    c->ch = ch;
    c->node_id = strdup(opts->node_id != NULL ? opts->node_id : "");
    c->cluster = strdup(opts->cluster != NULL ? opts->cluster : "");
    if (c->node_id == NULL || c->cluster == NULL) {
        abort();
    }
    c->apply = apply;
    c->event = event;
    c->arg = arg;
    cc_backoff_init(&c->backoff, opts->backoff_initial_ms ? opts->backoff_initial_ms : 1000,
                    opts->backoff_max_ms ? opts->backoff_max_ms : 30000, 1.6, 0.2, 0);
    uv_timer_init(cc_channel_get0_loop(ch), &c->retry);
    c->retry.data = c;
    open_stream(c);
    return c;
}

static void on_retry_closed(uv_handle_t *h)
{
    struct cc_config_client *c = h->data;
    free(c->node_id);
    free(c->cluster);
    free(c);
}

void cc_config_client_free(struct cc_config_client *c)
{
    if (c == NULL || c->closing) {
        return;
    }
    c->closing = true;
    if (c->call != NULL) {
        cc_call_abandon(c->call);
        c->call = NULL;
    }
    uv_timer_stop(&c->retry);
    uv_close((uv_handle_t *)&c->retry, on_retry_closed);
}

const char *cc_config_client_version(const struct cc_config_client *c)
{
    return c->version;
}
