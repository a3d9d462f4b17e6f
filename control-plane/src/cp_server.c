// cp_server.c — gRPC over HTTP/2 + TLS for seam-control-plane.
//
// One libuv loop, one thread. Each connection is an sc_stream (TLS, ALPN h2)
// feeding an nghttp2 server session through mem_recv/mem_send. Two methods:
//   /istio.v1.auth.IstioCertificateService/CreateCertificate  (unary)
//   /seam.v1.ConfigDiscovery/StreamConfig                      (bidi stream)
// anything else is answered Trailers-Only UNIMPLEMENTED.
//
// Config fan-out: each mesh/bundle version is encoded ONCE into a
// reference-counted, gRPC-framed buffer (struct cp_snap) that every stream
// sends from. A stream holds at most the snapshot it is sending plus the
// newest one waiting, so a slow reader costs one snapshot, not a queue.
// Output to a connection stops being generated while more than
// CP_CONN_WBUF_HIGH bytes wait in its socket (backpressure).
#include "cp_server.h"

#include <errno.h>
#include <inttypes.h>
#include <nghttp2/nghttp2.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <uv.h>

#include "cc/grpc.h"
#include "cp_mesh.h"
#include "istio/v1/auth/ca.pb-c.h"
#include "sc/accept_pause.h"
#include "sc/log.h"
#include "sc/parse.h"
#include "sc/spiffe.h"
#include "sc/stream.h"
#include "seam/v1/config.pb-c.h"
#include "ytree.h"

#define CP_PATH_CA "/istio.v1.auth.IstioCertificateService/CreateCertificate"
#define CP_PATH_CONFIG "/seam.v1.ConfigDiscovery/StreamConfig"
#define CP_CONN_WBUF_HIGH (256 * 1024)
#define CP_AUTH_HDR_MAX 16384
#define CP_MESH_FILE_MAX (16u << 20)
#define CP_HANDSHAKE_TIMEOUT_MS 10000
#define CP_SHUTDOWN_GRACE_MS 3000
// CP_CONN_HELD_MAX bounds the bytes of partial request messages one
// connection may make us hold (the per-message cap alone would allow
// max_streams * max_msg).
#define CP_CONN_HELD_MAX (32u << 20)

// struct cp_snap is one encoded config version, shared by all streams.
struct cp_snap {
    unsigned refs;
    uint64_t seq;     // 1, 2, ... (the seam_cp_config_version gauge)
    char version[64]; // version_info and nonce
    uint8_t *data;    // gRPC-framed ConfigResponse
    size_t len;
};

enum cp_method { CP_M_UNKNOWN = 0, CP_M_CA, CP_M_CONFIG };

struct cp_conn;

struct cp_call {
    struct cp_conn *conn;
    int32_t id;
    enum cp_method method;
    struct cp_call *next;                // conn->calls list
    struct cp_call *cfg_prev, *cfg_next; // server config-stream list
    bool in_cfg_list;
    bool responded;      // response HEADERS submitted
    bool finished;       // trailers submitted (or trailers-only)
    bool peer_ended;     // client sent END_STREAM
    bool rst_after_send; // RST_STREAM(NO_ERROR) once our END_STREAM is out
    bool ct_ok;
    bool auth_seen;
    char *auth; // authorization header value
    char identity[SC_SPIFFE_ID_MAX + 1];
    struct cc_grpc_reasm reasm;
    // unary
    uint8_t *req; // the one request message
    size_t req_len;
    bool have_req;
    uint8_t *out; // framed response
    size_t out_len, out_off;
    int end_status; // trailers to send after the body (-1: none yet)
    char end_msg[256];
    // config stream
    struct cp_snap *cur; // being sent
    size_t cur_off;
    struct cp_snap *next_snap; // newest waiting
    bool started;              // got the first request
    bool deferred;             // data provider returned DEFERRED
    char node[256];
    char acked[64];
    char nacked[64];
    char sent[64];
};

struct cp_conn {
    struct cp_server *srv;
    struct sc_stream *s;
    nghttp2_session *h2;
    struct cp_call *calls;
    struct cp_conn *prev, *next;
    bool closing;
    bool goaway_sent;
    size_t held;             // bytes reserved by partial messages of all calls
    uint64_t last_active_ms; // loop time of the last read or call end (idle timeout)
    char peer[64];
};

struct cp_admin_conn {
    uv_tcp_t tcp;
    uv_timer_t timer; // request + response deadline
    int open_handles; // freed when both handles closed
    bool closing;
    struct cp_server *srv;
    struct cp_admin_conn *prev, *next; // srv->admins
    char buf[8192];
    size_t len;
    bool responded;
    char *resp;
};

struct cp_server {
    const struct cp_server_config *cfg;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_tcp_t admin;
    struct sc_accept_pause listener_pause; // close and reopen the listeners on fd/memory shortage
    struct sc_accept_pause admin_pause;
    uv_timer_t poll;
    uv_timer_t grace;
    uv_timer_t idle; // sweeps connections idle past cfg->conn_idle_ms
    uv_signal_t sig_term, sig_int, sig_hup;
    SSL_CTX *ssl_ctx;
    struct cp_conn *conns;
    struct cp_admin_conn *admins;
    struct cp_call *cfg_streams;
    Seam__V1__Snapshot *mesh;
    struct stat mesh_st;
    uint64_t bundle_gen;
    struct cp_snap *snap;
    uint64_t seq;
    bool shutting_down;
    // metrics
    uint64_t certs[17]; // by gRPC status
    uint64_t acks, nacks, pushes;
    uint64_t num_cfg_streams;
    uint64_t num_conns;
    uint64_t grpc_calls[17];
    uint64_t mesh_reload_fail;
};

static void conn_flush(struct cp_conn *c);
static void conn_close(struct cp_conn *c);

// ---- snapshots --------------------------------------------------------------

static void snap_unref(struct cp_snap *s)
{
    if (s != NULL && --s->refs == 0) {
        free(s->data);
        free(s);
    }
}

static struct cp_snap *snap_ref(struct cp_snap *s)
{
    s->refs++;
    return s;
}

// build_snap encodes the current mesh plus the CA's trust bundle once.
static struct cp_snap *build_snap(struct cp_server *srv)
{
    const char *const *pems;
    size_t num_roots = cp_ca_bundle(srv->cfg->ca, &pems);
    Seam__V1__TrustBundle tb = SEAM__V1__TRUST_BUNDLE__INIT;
    tb.n_roots = num_roots;
    tb.roots = (char **)pems;
    tb.trust_domain = (char *)cp_ca_trust_domain(srv->cfg->ca);
    Seam__V1__Snapshot snap = *srv->mesh;
    snap.trust_bundle = &tb;
    // The version names the content: a counter plus a digest of the snapshot.
    size_t slen = seam__v1__snapshot__get_packed_size(&snap);
    uint8_t *sbuf = malloc(slen + 1);
    if (sbuf == NULL) {
        abort();
    }
    seam__v1__snapshot__pack(&snap, sbuf);
    uint8_t digest[SHA256_DIGEST_LENGTH];
    SHA256(sbuf, slen, digest);
    free(sbuf);
    struct cp_snap *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        abort();
    }
    s->refs = 1;
    s->seq = ++srv->seq;
    snprintf(s->version, sizeof(s->version), "%" PRIu64 "-%02x%02x%02x%02x", s->seq, digest[0],
             digest[1], digest[2], digest[3]);
    Seam__V1__ConfigResponse resp = SEAM__V1__CONFIG_RESPONSE__INIT;
    resp.version_info = s->version;
    resp.nonce = s->version;
    resp.snapshot = &snap;
    s->data = cc_grpc_pack(&s->len, &resp.base);
    if (s->data == NULL) {
        abort();
    }
    return s;
}

// publish makes a new version current and hands it to every open stream.
static void publish(struct cp_server *srv)
{
    struct cp_snap *s = build_snap(srv);
    snap_unref(srv->snap);
    srv->snap = s;
    sc_info("cp.config_version", "version=%s bytes=%zu streams=%" PRIu64, s->version, s->len,
            srv->num_cfg_streams);
    for (struct cp_call *call = srv->cfg_streams; call != NULL; call = call->cfg_next) {
        if (!call->started || call->finished) {
            continue;
        }
        snap_unref(call->next_snap);
        call->next_snap = snap_ref(s);
        srv->pushes++;
        if (call->deferred) {
            call->deferred = false;
            nghttp2_session_resume_data(call->conn->h2, call->id);
        }
    }
    for (struct cp_conn *c = srv->conns; c != NULL; c = c->next) {
        conn_flush(c);
    }
}

static int load_mesh(struct cp_server *srv, char *err, size_t err_cap)
{
    uint8_t *data;
    size_t len;
    struct stat st;
    if (stat(srv->cfg->mesh_path, &st) != 0) {
        snprintf(err, err_cap, "%s: %s", srv->cfg->mesh_path, strerror(errno));
        return -1;
    }
    int rc = cp_ytree_read_file(srv->cfg->mesh_path, CP_MESH_FILE_MAX, &data, &len);
    if (rc < 0) {
        snprintf(err, err_cap, "%s: %s", srv->cfg->mesh_path, strerror(-rc));
        return -1;
    }
    Seam__V1__Snapshot *m;
    rc = cp_mesh_parse(data, len, srv->cfg->mesh_path, &m, err, err_cap);
    free(data);
    srv->mesh_st = st; // a bad file is reported once, not every poll
    if (rc != 0) {
        return -1;
    }
    cp_mesh_free(srv->mesh);
    srv->mesh = m;
    return 0;
}

// ---- gRPC call plumbing -------------------------------------------------

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE             \
    }

static void call_cfg_unlink(struct cp_call *call)
{
    struct cp_server *srv = call->conn->srv;
    if (!call->in_cfg_list) {
        return;
    }
    if (call->cfg_prev != NULL) {
        call->cfg_prev->cfg_next = call->cfg_next;
    } else {
        srv->cfg_streams = call->cfg_next;
    }
    if (call->cfg_next != NULL) {
        call->cfg_next->cfg_prev = call->cfg_prev;
    }
    call->in_cfg_list = false;
    srv->num_cfg_streams--;
}

static size_t reasm_held(const struct cc_grpc_reasm *r)
{
    return r->buf != NULL ? r->msg_len : 0;
}

static void call_free(struct cp_call *call)
{
    call->conn->last_active_ms = uv_now(&call->conn->srv->loop);
    call_cfg_unlink(call);
    call->conn->held -= reasm_held(&call->reasm);
    cc_grpc_reasm_cleanup(&call->reasm);
    free(call->auth);
    free(call->req);
    free(call->out);
    snap_unref(call->cur);
    snap_unref(call->next_snap);
    free(call);
}

// trailers_only answers a call with one HEADERS frame carrying the status
// (PROTOCOLS.md §1.3) and, if the client is still sending, RST_STREAM
// NO_ERROR so it stops (early close).
static void trailers_only(struct cp_call *call, int status, const char *msg)
{
    if (call->responded || call->finished) {
        return;
    }
    char code[16];
    snprintf(code, sizeof(code), "%d", status);
    char *enc = cc_grpc_message_encode(msg, strlen(msg));
    nghttp2_nv nva[] = {NV(":status", "200"), NV("content-type", "application/grpc"),
                        NV("grpc-status", code), NV("grpc-message", enc ? enc : "")};
    nghttp2_submit_response(call->conn->h2, call->id, nva, msg[0] ? 4 : 3, NULL);
    free(enc);
    call->responded = true;
    call->finished = true;
    call->rst_after_send = !call->peer_ended;
    if (status >= 0 && status <= 16) {
        call->conn->srv->grpc_calls[status]++;
    }
    if (call->method == CP_M_CA) {
        call->conn->srv->certs[status >= 0 && status <= 16 ? status : 2]++;
    }
    sc_debug("cp.grpc_error", "peer=%s stream=%d status=%s msg=\"%s\"", call->conn->peer, call->id,
             cc_grpc_status_name(status), msg);
}

// end_call ends a call whose response HEADERS went out: the data provider
// sends the trailers once the pending body is written.
static void end_call(struct cp_call *call, int status, const char *msg)
{
    if (!call->responded) {
        trailers_only(call, status, msg);
        return;
    }
    if (call->finished || call->end_status >= 0) {
        return;
    }
    call->end_status = status;
    snprintf(call->end_msg, sizeof(call->end_msg), "%s", msg);
    if (call->deferred) {
        call->deferred = false;
        nghttp2_session_resume_data(call->conn->h2, call->id);
    }
}

static int submit_trailers(nghttp2_session *h2, struct cp_call *call)
{
    char code[16];
    snprintf(code, sizeof(code), "%d", call->end_status);
    char *enc = cc_grpc_message_encode(call->end_msg, strlen(call->end_msg));
    nghttp2_nv nva[] = {NV("grpc-status", code), NV("grpc-message", enc ? enc : "")};
    int rv = nghttp2_submit_trailer(h2, call->id, nva, call->end_msg[0] ? 2 : 1);
    free(enc);
    call->finished = true;
    if (call->end_status >= 0 && call->end_status <= 16) {
        call->conn->srv->grpc_calls[call->end_status]++;
    }
    call->rst_after_send = rv == 0 && !call->peer_ended;
    return rv;
}

// on_body is the data provider of every response: the unary body, or the
// stream of config snapshots; trailers follow when end_status is set.
static ssize_t on_body(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                       nghttp2_data_source *src, void *ud)
{
    struct cp_call *call = src->ptr;
    size_t n = 0;
    if (call->method == CP_M_CA) {
        n = call->out_len - call->out_off;
        if (n > len) {
            n = len;
        }
        memcpy(buf, call->out + call->out_off, n);
        call->out_off += n;
        if (call->out_off == call->out_len) {
            *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
            if (call->end_status < 0) {
                call->end_status = CC_GRPC_OK;
            }
            if (submit_trailers(h2, call) != 0) {
                return NGHTTP2_ERR_CALLBACK_FAILURE;
            }
        }
        return (ssize_t)n;
    }
    while (n < len) {
        if (call->cur == NULL && call->next_snap != NULL && call->end_status < 0) {
            call->cur = call->next_snap;
            call->next_snap = NULL;
            call->cur_off = 0;
            snprintf(call->sent, sizeof(call->sent), "%s", call->cur->version);
        }
        if (call->cur == NULL) {
            break;
        }
        size_t k = call->cur->len - call->cur_off;
        if (k > len - n) {
            k = len - n;
        }
        memcpy(buf + n, call->cur->data + call->cur_off, k);
        n += k;
        call->cur_off += k;
        if (call->cur_off == call->cur->len) {
            snap_unref(call->cur);
            call->cur = NULL;
        }
    }
    if (n > 0) {
        return (ssize_t)n;
    }
    if (call->end_status >= 0) {
        *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        if (submit_trailers(h2, call) != 0) {
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        return 0;
    }
    call->deferred = true;
    return NGHTTP2_ERR_DEFERRED;
}

static int respond_headers(struct cp_call *call)
{
    nghttp2_nv nva[] = {NV(":status", "200"), NV("content-type", "application/grpc")};
    nghttp2_data_provider dp = {.source.ptr = call, .read_callback = on_body};
    call->responded = true;
    return nghttp2_submit_response(call->conn->h2, call->id, nva, 2, &dp);
}

// authenticate sets call->identity from "authorization: Bearer <token>".
// Returns 0, or -1 after answering UNAUTHENTICATED.
static int authenticate(struct cp_call *call, bool required)
{
    struct cp_server *srv = call->conn->srv;
    char why[128] = "missing bearer token";
    if (call->auth == NULL && !required) {
        return 0;
    }
    if (srv->cfg->auth == NULL) {
        trailers_only(call, CC_GRPC_UNAUTHENTICATED, "no authentication configured");
        return -1;
    }
    if (call->auth != NULL && strncasecmp(call->auth, "Bearer ", 7) == 0) {
        const char *tok = call->auth + 7;
        while (*tok == ' ') {
            tok++;
        }
        cp_auth_maybe_reload(srv->cfg->auth);
        if (cp_auth_check(srv->cfg->auth, tok, strlen(tok), (uint64_t)time(NULL), call->identity,
                          sizeof(call->identity), why, sizeof(why)) == 0) {
            return 0;
        }
    }
    sc_warn("cp.auth_failed", "peer=%s method=%s reason=\"%s\"", call->conn->peer,
            call->method == CP_M_CA ? "CreateCertificate" : "StreamConfig", why);
    trailers_only(call, CC_GRPC_UNAUTHENTICATED, "request authenticate failure");
    return -1;
}

// copy_printable copies |src| into |dst| replacing every byte outside
// printable ASCII (and '"' / '\\') with '?': peer-supplied strings (node IDs,
// nonces, NACK messages, CSR names) end up in log lines and metric labels and
// must not break or forge them.
static void copy_printable(char *dst, size_t cap, const char *src)
{
    size_t i = 0;
    for (; src[i] != '\0' && i + 1 < cap; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[i] = (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\') ? '?' : (char)ch;
    }
    dst[i] = '\0';
}

static void handle_ca(struct cp_call *call)
{
    struct cp_server *srv = call->conn->srv;
    if (!call->have_req) {
        trailers_only(call, CC_GRPC_INVALID_ARGUMENT, "missing request message");
        return;
    }
    Istio__V1__Auth__IstioCertificateRequest *req =
        istio__v1__auth__istio_certificate_request__unpack(NULL, call->req_len, call->req);
    if (req == NULL) {
        trailers_only(call, CC_GRPC_INVALID_ARGUMENT, "request does not parse");
        return;
    }
    char msg[512];
    char **chain = NULL;
    size_t num = 0;
    int st = cp_ca_sign_csr(srv->cfg->ca, req->csr, strlen(req->csr), call->identity,
                            req->validity_duration, &chain, &num, msg, sizeof(msg));
    int64_t want = req->validity_duration;
    istio__v1__auth__istio_certificate_request__free_unpacked(req, NULL);
    if (st != CC_GRPC_OK) {
        char safe[512];
        copy_printable(safe, sizeof(safe), msg);
        snprintf(msg, sizeof(msg), "%s", safe);
        sc_warn("cp.csr_refused", "peer=%s identity=%s status=%s reason=\"%s\"", call->conn->peer,
                call->identity, cc_grpc_status_name(st), msg);
        trailers_only(call, st, msg);
        return;
    }
    const char *const *pems;
    size_t num_roots = cp_ca_bundle(srv->cfg->ca, &pems);
    Istio__V1__Auth__Roots roots = ISTIO__V1__AUTH__ROOTS__INIT;
    roots.n_ca_cert = num_roots;
    roots.ca_cert = (char **)pems;
    Istio__V1__Auth__IstioCertificateResponse resp =
        ISTIO__V1__AUTH__ISTIO_CERTIFICATE_RESPONSE__INIT;
    resp.n_cert_chain = num;
    resp.cert_chain = chain;
    resp.root_cert = &roots;
    call->out = cc_grpc_pack(&call->out_len, &resp.base);
    cp_ca_chain_free(chain, num);
    if (call->out == NULL) {
        trailers_only(call, CC_GRPC_INTERNAL, "encoding failed");
        return;
    }
    srv->certs[CC_GRPC_OK]++;
    sc_info("cp.cert_issued", "peer=%s identity=%s ttl_s=%" PRIu64, call->conn->peer,
            call->identity, cp_ca_clamp_ttl(srv->cfg->ca, want));
    respond_headers(call);
}

// on_config_msg handles one ConfigRequest: the first names the node and
// starts the stream; later ones ACK or NACK a version (xDS semantics).
static int on_config_msg(struct cp_call *call, const uint8_t *msg, size_t len)
{
    struct cp_server *srv = call->conn->srv;
    Seam__V1__ConfigRequest *req = seam__v1__config_request__unpack(NULL, len, msg);
    if (req == NULL) {
        end_call(call, CC_GRPC_INVALID_ARGUMENT, "request does not parse");
        return -1;
    }
    if (!call->started) {
        call->started = true;
        const char *node = call->identity[0]                         ? call->identity
                           : (req->node != NULL && req->node->id[0]) ? req->node->id
                                                                     : call->conn->peer;
        copy_printable(call->node, sizeof(call->node), node);
        char ver[64];
        copy_printable(ver, sizeof(ver), req->version_info);
        sc_info("cp.stream_open", "peer=%s node=%s version=%s", call->conn->peer, call->node, ver);
        call->next_snap = snap_ref(srv->snap);
        srv->pushes++;
    } else if (req->error_detail != NULL) {
        srv->nacks++;
        char detail[301];
        copy_printable(call->nacked, sizeof(call->nacked), req->response_nonce);
        copy_printable(detail, sizeof(detail), req->error_detail->message);
        sc_warn("cp.config_nack", "node=%s nonce=%s code=%d error=\"%s\"", call->node, call->nacked,
                req->error_detail->code, detail);
    } else if (req->response_nonce[0] != '\0') {
        srv->acks++;
        copy_printable(call->acked, sizeof(call->acked), req->version_info);
        sc_debug("cp.config_ack", "node=%s version=%s", call->node, call->acked);
    }
    seam__v1__config_request__free_unpacked(req, NULL);
    if (call->deferred) {
        call->deferred = false;
        nghttp2_session_resume_data(call->conn->h2, call->id);
    }
    return 0;
}

static int on_msg(void *arg, const uint8_t *msg, size_t len, bool compressed)
{
    struct cp_call *call = arg;
    if (compressed) {
        cc_grpc_reasm_fail(&call->reasm, CC_GRPC_UNIMPLEMENTED, "compression not supported");
        return -1;
    }
    if (call->method == CP_M_CA) {
        if (call->have_req) {
            cc_grpc_reasm_fail(&call->reasm, CC_GRPC_INVALID_ARGUMENT,
                               "more than one request message in a unary call");
            return -1;
        }
        call->req = malloc(len + 1);
        if (call->req == NULL) {
            abort();
        }
        memcpy(call->req, msg, len);
        call->req_len = len;
        call->have_req = true;
        return 0;
    }
    if (on_config_msg(call, msg, len) != 0) {
        cc_grpc_reasm_fail(&call->reasm, CC_GRPC_INVALID_ARGUMENT, "request does not parse");
        return -1;
    }
    return 0;
}

// ---- nghttp2 callbacks --------------------------------------------------

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *f, void *ud)
{
    struct cp_conn *c = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) {
        return 0;
    }
    struct cp_call *call = calloc(1, sizeof(*call));
    if (call == NULL) {
        abort();
    }
    call->conn = c;
    call->id = f->hd.stream_id;
    call->end_status = -1;
    cc_grpc_reasm_init(&call->reasm, c->srv->cfg->max_msg);
    call->next = c->calls;
    c->calls = call;
    nghttp2_session_set_stream_user_data(h2, f->hd.stream_id, call);
    return 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) {
        return 0;
    }
    struct cp_call *call = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
    if (call == NULL) {
        return 0;
    }
    if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
        if (valuelen == strlen(CP_PATH_CA) && memcmp(value, CP_PATH_CA, valuelen) == 0) {
            call->method = CP_M_CA;
        } else if (valuelen == strlen(CP_PATH_CONFIG) &&
                   memcmp(value, CP_PATH_CONFIG, valuelen) == 0) {
            call->method = CP_M_CONFIG;
        }
    } else if (namelen == 12 && memcmp(name, "content-type", 12) == 0) {
        call->ct_ok = cc_grpc_content_type_ok((const char *)value, valuelen);
    } else if (namelen == 13 && memcmp(name, "authorization", 13) == 0 &&
               valuelen < CP_AUTH_HDR_MAX && call->auth == NULL) {
        call->auth = malloc(valuelen + 1);
        if (call->auth == NULL) {
            abort();
        }
        memcpy(call->auth, value, valuelen);
        call->auth[valuelen] = '\0';
    }
    return 0;
}

// on_invalid_header drops a header field that breaks HTTP/2 field rules
// (e.g. "authorization: Bearer " with trailing whitespace from a client with
// an empty token) instead of resetting the stream: the call then fails with a
// proper gRPC status (UNAUTHENTICATED) rather than a protocol error.
static int on_invalid_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name,
                             size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                             void *ud)
{
    return 0;
}

static void on_request_headers(struct cp_call *call)
{
    struct cp_server *srv = call->conn->srv;
    if (srv->shutting_down) {
        trailers_only(call, CC_GRPC_UNAVAILABLE, "server shutting down");
        return;
    }
    if (!call->ct_ok) {
        // A non-gRPC request: HTTP 415 as PROTOCOLS.md §1.1 suggests.
        nghttp2_nv nva[] = {NV(":status", "415")};
        nghttp2_submit_response(call->conn->h2, call->id, nva, 1, NULL);
        call->responded = call->finished = true;
        return;
    }
    if (call->method == CP_M_UNKNOWN) {
        trailers_only(call, CC_GRPC_UNIMPLEMENTED, "unknown method");
        return;
    }
    if (call->method == CP_M_CA) {
        authenticate(call, true);
        return;
    }
    // Config streams: a token is optional, but a bad one is refused.
    if (authenticate(call, false) != 0) {
        return;
    }
    call->cfg_next = srv->cfg_streams;
    if (srv->cfg_streams != NULL) {
        srv->cfg_streams->cfg_prev = call;
    }
    srv->cfg_streams = call;
    call->in_cfg_list = true;
    srv->num_cfg_streams++;
    respond_headers(call);
}

static void on_request_end(struct cp_call *call)
{
    call->peer_ended = true;
    if (call->finished) {
        return;
    }
    if (cc_grpc_reasm_partial(&call->reasm)) {
        end_call(call, CC_GRPC_INTERNAL, "truncated message");
        return;
    }
    if (call->method == CP_M_CA && !call->responded) {
        handle_ca(call);
    } else if (call->method == CP_M_CONFIG) {
        end_call(call, CC_GRPC_OK, "");
    }
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *f, void *ud)
{
    struct cp_call *call = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
    if (call == NULL) {
        return 0;
    }
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        on_request_headers(call);
    }
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        on_request_end(call);
    }
    return 0;
}

static int on_data(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                   void *ud)
{
    struct cp_call *call = nghttp2_session_get_stream_user_data(h2, id);
    if (call == NULL || call->finished || call->end_status >= 0) {
        return 0; // after an early answer the rest of the body is dropped
    }
    if (call->method == CP_M_CA && !call->identity[0]) {
        return 0;
    }
    // The reassembler checks each announced length against the cap before
    // buffering anything: an oversized message costs nothing.
    struct cp_conn *c = call->conn;
    size_t before = reasm_held(&call->reasm);
    int rc = cc_grpc_reasm_feed(&call->reasm, data, len, on_msg, call);
    size_t after = reasm_held(&call->reasm);
    c->held = c->held - before + after;
    if (rc == 0 && after > 0 && c->held > CP_CONN_HELD_MAX) {
        sc_warn("cp.conn_buffer_limit", "peer=%s stream=%d held=%zu", c->peer, id, c->held);
        c->held -= after;
        cc_grpc_reasm_cleanup(&call->reasm);
        cc_grpc_reasm_init(&call->reasm, c->srv->cfg->max_msg);
        end_call(call, CC_GRPC_RESOURCE_EXHAUSTED, "too much buffered on this connection");
        return 0;
    }
    if (rc != 0) {
        const char *why = call->reasm.error ? call->reasm.error : "bad message";
        char msg[160];
        if (call->reasm.status == CC_GRPC_RESOURCE_EXHAUSTED) {
            snprintf(msg, sizeof(msg), "message larger than max (%zu bytes)",
                     call->conn->srv->cfg->max_msg);
            why = msg;
            sc_warn("cp.message_too_large", "peer=%s stream=%d max=%zu", call->conn->peer, id,
                    call->conn->srv->cfg->max_msg);
        }
        end_call(call, call->reasm.status, why);
    }
    return 0;
}

// on_frame_send implements the early close of PROTOCOLS.md §1.3: when our
// END_STREAM went out before the client finished sending, RST_STREAM
// NO_ERROR follows it (submitted only now so it can never overtake the
// trailers).
static int on_frame_send(nghttp2_session *h2, const nghttp2_frame *f, void *ud)
{
    if (f->hd.type != NGHTTP2_HEADERS || !(f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        return 0;
    }
    struct cp_call *call = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
    if (call != NULL && call->rst_after_send && !call->peer_ended) {
        call->rst_after_send = false;
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, call->id, NGHTTP2_NO_ERROR);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t id, uint32_t error_code, void *ud)
{
    struct cp_conn *c = ud;
    struct cp_call *call = nghttp2_session_get_stream_user_data(h2, id);
    if (call == NULL) {
        return 0;
    }
    for (struct cp_call **pp = &c->calls; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == call) {
            *pp = call->next;
            break;
        }
    }
    if (call->method == CP_M_CONFIG && call->started) {
        sc_info("cp.stream_close", "peer=%s node=%s acked=%s h2_error=%u", c->peer, call->node,
                call->acked[0] ? call->acked : "-", error_code);
    }
    nghttp2_session_set_stream_user_data(h2, id, NULL);
    call_free(call);
    return 0;
}

// ---- connections --------------------------------------------------------

static void on_conn_write(struct sc_stream *s, int status, void *arg)
{
    free(arg);
    struct cp_conn *c = sc_stream_get_data(s);
    if (status == 0 && c != NULL && !c->closing) {
        conn_flush(c);
    }
}

// conn_flush moves nghttp2 output to the socket while the socket keeps up.
static void conn_flush(struct cp_conn *c)
{
    if (c->closing) {
        return;
    }
    while (sc_stream_write_queue_size(c->s) < CP_CONN_WBUF_HIGH) {
        uint8_t *buf = NULL;
        size_t len = 0, cap = 0;
        const uint8_t *p;
        ssize_t n;
        while (len < 64 * 1024 && (n = nghttp2_session_mem_send(c->h2, &p)) > 0) {
            if (len + (size_t)n > cap) {
                cap = (len + (size_t)n) * 2;
                uint8_t *nb = realloc(buf, cap);
                if (nb == NULL) {
                    abort();
                }
                buf = nb;
            }
            memcpy(buf + len, p, (size_t)n);
            len += (size_t)n;
        }
        if (len == 0) {
            free(buf);
            break;
        }
        uv_buf_t b = uv_buf_init((char *)buf, (unsigned)len);
        if (sc_stream_write(c->s, &b, 1, on_conn_write, buf) != 0) {
            free(buf);
            conn_close(c);
            return;
        }
    }
    if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2) &&
        sc_stream_write_queue_size(c->s) == 0) {
        conn_close(c);
    }
}

static void on_conn_closed(struct sc_stream *s)
{
    struct cp_conn *c = sc_stream_get_data(s);
    struct cp_server *srv = c->srv;
    // nghttp2_session_del does not call on_stream_close: free calls here.
    struct cp_call *call = c->calls;
    while (call != NULL) {
        struct cp_call *next = call->next;
        call_free(call);
        call = next;
    }
    nghttp2_session_del(c->h2);
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        srv->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    srv->num_conns--;
    free(c);
    if (srv->shutting_down && srv->conns == NULL) {
        uv_stop(&srv->loop);
    }
}

static void conn_close(struct cp_conn *c)
{
    if (c->closing) {
        return;
    }
    c->closing = true;
    sc_stream_close(c->s, on_conn_closed);
}

static void on_conn_read(struct sc_stream *s, ssize_t nread, const uv_buf_t *buf)
{
    struct cp_conn *c = sc_stream_get_data(s);
    if (nread < 0) {
        conn_close(c);
        return;
    }
    c->last_active_ms = uv_now(&c->srv->loop);
    ssize_t rv = nghttp2_session_mem_recv(c->h2, (const uint8_t *)buf->base, (size_t)nread);
    sc_buf_release(buf->base);
    if (rv < 0) {
        sc_debug("cp.h2_error", "peer=%s error=%s", c->peer, nghttp2_strerror((int)rv));
        // Let nghttp2 send its GOAWAY, then close.
        conn_flush(c);
        conn_close(c);
        return;
    }
    conn_flush(c);
}

static void on_conn_handshake(struct sc_stream *s, int status)
{
    struct cp_conn *c = sc_stream_get_data(s);
    if (status != 0) {
        const char *detail = NULL;
        enum sc_tls_fail why = sc_stream_tls_fail(s, &detail);
        sc_warn("tls.handshake_failed", "dir=inbound reason=%s peer=%s peer_id=- detail=%s",
                sc_tls_fail_name(why), c->peer, detail ? detail : "-");
        conn_close(c);
        return;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, c->srv->cfg->max_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 32 * 1024},
    };
    nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 3);
    if (sc_stream_read_start(s, on_conn_read) != 0) {
        conn_close(c);
        return;
    }
    conn_flush(c);
}

static nghttp2_session_callbacks *g_h2_callbacks;

static void on_connection(uv_stream_t *server, int status)
{
    struct cp_server *srv = server->data;
    // Out of fds, listener_pause stops libuv's accept loop from spinning
    // (and logs cp.accept_paused).
    sc_accept_pause_on_status(&srv->listener_pause, status);
    if (status < 0) {
        return;
    }
    struct sc_stream *s = sc_stream_new(&srv->loop, NULL);
    struct cp_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        abort();
    }
    c->srv = srv;
    c->s = s;
    c->last_active_ms = uv_now(&srv->loop);
    sc_stream_set_data(s, c);
    c->next = srv->conns;
    if (srv->conns != NULL) {
        srv->conns->prev = c;
    }
    srv->conns = c;
    srv->num_conns++;
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    // Bound per-connection state: headers and buffered frames.
    nghttp2_option_set_max_send_header_block_length(opt, 64 * 1024);
    if (nghttp2_session_server_new2(&c->h2, g_h2_callbacks, c, opt) != 0) {
        abort();
    }
    nghttp2_option_del(opt);
    if (sc_stream_accept(s, server) != 0) {
        conn_close(c);
        return;
    }
    sc_stream_peer_name(s, c->peer, sizeof(c->peer));
    if (srv->shutting_down ||
        sc_stream_start_tls(s, srv->ssl_ctx, true, NULL, CP_HANDSHAKE_TIMEOUT_MS,
                            on_conn_handshake) != 0) {
        conn_close(c);
    }
}

// ---- TLS ------------------------------------------------------------------

static int on_alpn(SSL *ssl, const uint8_t **out, uint8_t *out_len, const uint8_t *in,
                   unsigned in_len, void *arg)
{
    static const uint8_t h2[] = {2, 'h', '2'};
    uint8_t *sel;
    if (SSL_select_next_proto(&sel, out_len, h2, sizeof(h2), in, in_len) !=
        OPENSSL_NPN_NEGOTIATED) {
        return SSL_TLSEXT_ERR_ALERT_FATAL; // gRPC needs h2
    }
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *make_ssl_ctx(struct cp_server *srv)
{
    char *chain_pem = NULL;
    EVP_PKEY *key = NULL;
    SSL_CTX *ctx = NULL;
    BIO *bio = NULL;
    if (cp_ca_issue_server(srv->cfg->ca, srv->cfg->server_names, srv->cfg->num_server_names,
                           &chain_pem, &key) != 0) {
        return NULL;
    }
    ctx = SSL_CTX_new(TLS_method());
    bio = BIO_new_mem_buf(chain_pem, strlen(chain_pem));
    if (ctx == NULL || bio == NULL) {
        goto out_fail;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    X509 *leaf = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    if (leaf == NULL || !SSL_CTX_use_certificate(ctx, leaf)) {
        X509_free(leaf);
        goto out_fail;
    }
    X509_free(leaf);
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (!SSL_CTX_add0_chain_cert(ctx, x)) {
            X509_free(x);
            goto out_fail;
        }
    }
    ERR_clear_error();
    if (!SSL_CTX_use_PrivateKey(ctx, key) || !SSL_CTX_check_private_key(ctx)) {
        goto out_fail;
    }
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
    BIO_free(bio);
    EVP_PKEY_free(key);
    free(chain_pem);
    return ctx;

out_fail:
    ERR_clear_error();
    BIO_free(bio);
    SSL_CTX_free(ctx);
    EVP_PKEY_free(key);
    free(chain_pem);
    return NULL;
}

// ---- admin HTTP -----------------------------------------------------------

static void prom_escape(char *out, size_t cap, const char *in)
{
    size_t o = 0;
    for (; *in != '\0' && o + 3 < cap; in++) {
        if (*in == '\\' || *in == '"') {
            out[o++] = '\\';
            out[o++] = *in;
        } else if (*in == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = *in;
        }
    }
    out[o] = '\0';
}

struct sbuf {
    char *p;
    size_t len, cap;
};

__attribute__((format(printf, 2, 3))) static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap = b->cap * 2 + (size_t)(n > 0 ? n : 0) + 256;
        b->p = realloc(b->p, b->cap);
        if (b->p == NULL) {
            abort();
        }
    }
}

static char *metrics_text(struct cp_server *srv)
{
    struct sbuf b = {.p = malloc(4096), .cap = 4096};
    if (b.p == NULL) {
        abort();
    }
    b.p[0] = '\0';
    sb_printf(&b, "# HELP seam_cp_certificates_issued_total CreateCertificate calls by result.\n"
                  "# TYPE seam_cp_certificates_issued_total counter\n");
    static const int shown[] = {0, 3, 7, 8, 13, 16};
    for (size_t i = 0; i < sizeof(shown) / sizeof(shown[0]); i++) {
        sb_printf(&b, "seam_cp_certificates_issued_total{result=\"%s\"} %" PRIu64 "\n",
                  cc_grpc_status_name(shown[i]), srv->certs[shown[i]]);
    }
    sb_printf(&b, "# HELP seam_cp_grpc_calls_total Finished gRPC calls by status.\n"
                  "# TYPE seam_cp_grpc_calls_total counter\n");
    for (int i = 0; i <= 16; i++) {
        if (srv->grpc_calls[i] > 0) {
            sb_printf(&b, "seam_cp_grpc_calls_total{code=\"%s\"} %" PRIu64 "\n",
                      cc_grpc_status_name(i), srv->grpc_calls[i]);
        }
    }
    sb_printf(&b,
              "# HELP seam_cp_connections Open client connections.\n"
              "# TYPE seam_cp_connections gauge\nseam_cp_connections %" PRIu64 "\n"
              "# HELP seam_cp_config_streams Connected config streams.\n"
              "# TYPE seam_cp_config_streams gauge\nseam_cp_config_streams %" PRIu64 "\n"
              "# HELP seam_cp_config_version Sequence number of the current config version.\n"
              "# TYPE seam_cp_config_version gauge\nseam_cp_config_version %" PRIu64 "\n"
              "# HELP seam_cp_config_acks_total Config versions ACKed by clients.\n"
              "# TYPE seam_cp_config_acks_total counter\nseam_cp_config_acks_total %" PRIu64 "\n"
              "# HELP seam_cp_config_nacks_total Config versions NACKed by clients.\n"
              "# TYPE seam_cp_config_nacks_total counter\nseam_cp_config_nacks_total %" PRIu64 "\n"
              "# HELP seam_cp_config_pushes_total Snapshots queued to streams.\n"
              "# TYPE seam_cp_config_pushes_total counter\nseam_cp_config_pushes_total %" PRIu64
              "\n"
              "# HELP seam_cp_mesh_reload_failures_total Mesh file changes refused as invalid.\n"
              "# TYPE seam_cp_mesh_reload_failures_total counter\n"
              "seam_cp_mesh_reload_failures_total %" PRIu64 "\n",
              srv->num_conns, srv->num_cfg_streams, srv->snap ? srv->snap->seq : 0, srv->acks,
              srv->nacks, srv->pushes, srv->mesh_reload_fail);
    const char *const *pems;
    sb_printf(&b,
              "# HELP seam_cp_trust_bundle_roots Roots in the trust bundle.\n"
              "# TYPE seam_cp_trust_bundle_roots gauge\nseam_cp_trust_bundle_roots %zu\n",
              cp_ca_bundle(srv->cfg->ca, &pems));
    sb_printf(&b, "# HELP seam_cp_config_client Per open stream: the versions the client last "
                  "ACKed and NACKed.\n# TYPE seam_cp_config_client gauge\n");
    for (struct cp_call *c = srv->cfg_streams; c != NULL; c = c->cfg_next) {
        if (!c->started) {
            continue;
        }
        char node[600];
        prom_escape(node, sizeof(node), c->node);
        sb_printf(&b,
                  "seam_cp_config_client{node=\"%s\",stream=\"%s/%d\",acked=\"%s\",nacked=\"%s\"} "
                  "1\n",
                  node, c->conn->peer, c->id, c->acked, c->nacked);
    }
    return b.p;
}

#define CP_ADMIN_TIMEOUT_MS 10000

static void on_admin_closed(uv_handle_t *h)
{
    struct cp_admin_conn *a = h->data;
    if (--a->open_handles > 0) {
        return;
    }
    if (a->prev != NULL) {
        a->prev->next = a->next;
    } else {
        a->srv->admins = a->next;
    }
    if (a->next != NULL) {
        a->next->prev = a->prev;
    }
    free(a->resp);
    free(a);
}

// admin_close closes both handles once; the memory goes in the last callback.
static void admin_close(struct cp_admin_conn *a)
{
    if (a->closing) {
        return;
    }
    a->closing = true;
    uv_close((uv_handle_t *)&a->timer, on_admin_closed);
    uv_close((uv_handle_t *)&a->tcp, on_admin_closed);
}

static void on_admin_timeout(uv_timer_t *t)
{
    admin_close(t->data); // slow or silent client
}

static void on_admin_written(uv_write_t *req, int status)
{
    struct cp_admin_conn *a = req->data;
    free(req);
    admin_close(a);
}

static void admin_respond(struct cp_admin_conn *a, int code, const char *ctype, const char *body)
{
    const char *reason = code == 200   ? "OK"
                         : code == 404 ? "Not Found"
                         : code == 403 ? "Forbidden"
                         : code == 405 ? "Method Not Allowed"
                                       : "Error";
    size_t blen = strlen(body);
    size_t cap = blen + 256;
    a->resp = malloc(cap);
    if (a->resp == NULL) {
        abort();
    }
    int n = snprintf(a->resp, cap,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     code, reason, ctype, blen);
    memcpy(a->resp + n, body, blen);
    uv_write_t *req = malloc(sizeof(*req));
    if (req == NULL) {
        abort();
    }
    req->data = a;
    uv_buf_t b = uv_buf_init(a->resp, (unsigned)(n + (int)blen));
    a->responded = true;
    uv_read_stop((uv_stream_t *)&a->tcp);
    if (uv_write(req, (uv_stream_t *)&a->tcp, &b, 1, on_admin_written) != 0) {
        free(req);
        admin_close(a);
    }
}

static bool peer_is_loopback(uv_tcp_t *tcp)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len) != 0) {
        return false;
    }
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        static const uint8_t lo[16] = {[15] = 1};
        return memcmp(&in6->sin6_addr, lo, 16) == 0 ||
               (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127);
    }
    return false;
}

static void root_bundle_changed(struct cp_server *srv)
{
    if (srv->cfg->root_out != NULL) {
        int rc = cp_ca_write_roots(srv->cfg->ca, srv->cfg->root_out);
        if (rc != 0) {
            sc_error("cp.root_out_failed", "file=%s error=%s", srv->cfg->root_out, uv_strerror(rc));
        }
    }
    srv->bundle_gen = cp_ca_generation(srv->cfg->ca);
    publish(srv);
}

static void admin_handle(struct cp_admin_conn *a)
{
    struct cp_server *srv = a->srv;
    char method[8] = "", path[256] = "";
    if (sscanf(a->buf, "%7s %255s", method, path) != 2) {
        admin_respond(a, 400, "text/plain", "bad request\n");
        return;
    }
    char *q = strchr(path, '?');
    if (q != NULL) {
        *q = '\0';
    }
    if (strcmp(path, "/metrics") == 0 && strcmp(method, "GET") == 0) {
        char *m = metrics_text(srv);
        admin_respond(a, 200, "text/plain; version=0.0.4; charset=utf-8", m);
        free(m);
    } else if ((strcmp(path, "/healthz") == 0 || strcmp(path, "/healthz/ready") == 0 ||
                strcmp(path, "/healthz/live") == 0) &&
               strcmp(method, "GET") == 0) {
        admin_respond(a, srv->shutting_down ? 503 : 200, "text/plain",
                      srv->shutting_down ? "draining\n" : "ok\n");
    } else if (strcmp(path, "/ca/rotate") == 0 || strcmp(path, "/ca/retire") == 0) {
        if (strcmp(method, "POST") != 0) {
            admin_respond(a, 405, "text/plain", "use POST\n");
            return;
        }
        if (!peer_is_loopback(&a->tcp)) {
            admin_respond(a, 403, "text/plain", "loopback only\n");
            return;
        }
        char body[128];
        if (strcmp(path, "/ca/rotate") == 0) {
            if (cp_ca_rotate(srv->cfg->ca) != 0) {
                admin_respond(a, 500, "text/plain", "rotation failed\n");
                return;
            }
            const char *const *pems;
            snprintf(body, sizeof(body), "rotated: issuing from a new root; roots=%zu\n",
                     cp_ca_bundle(srv->cfg->ca, &pems));
        } else {
            int n = cp_ca_retire(srv->cfg->ca);
            snprintf(body, sizeof(body), "retired %d root(s)\n", n);
        }
        sc_info("cp.ca_bundle", "action=%s", path + 4);
        root_bundle_changed(srv);
        admin_respond(a, 200, "text/plain", body);
    } else {
        admin_respond(a, 404, "text/plain", "not found\n");
    }
}

static void on_admin_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct cp_admin_conn *a = h->data;
    buf->base = a->buf + a->len;
    buf->len = sizeof(a->buf) - 1 - a->len;
}

static void on_admin_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct cp_admin_conn *a = st->data;
    if (a->responded) {
        return;
    }
    if (nread < 0) {
        admin_close(a);
        return;
    }
    a->len += (size_t)nread;
    a->buf[a->len] = '\0';
    if (strstr(a->buf, "\r\n\r\n") != NULL || strstr(a->buf, "\n\n") != NULL) {
        admin_handle(a);
    } else if (a->len >= sizeof(a->buf) - 1) {
        admin_respond(a, 400, "text/plain", "request too large\n");
    }
}

static void on_admin_connection(uv_stream_t *server, int status)
{
    struct cp_server *srv = server->data;
    sc_accept_pause_on_status(&srv->admin_pause, status);
    if (status < 0) {
        return;
    }
    struct cp_admin_conn *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        abort();
    }
    a->srv = srv;
    uv_tcp_init(&srv->loop, &a->tcp);
    uv_timer_init(&srv->loop, &a->timer);
    a->tcp.data = a;
    a->timer.data = a;
    a->open_handles = 2;
    a->next = srv->admins;
    if (srv->admins != NULL) {
        srv->admins->prev = a;
    }
    srv->admins = a;
    uv_timer_start(&a->timer, on_admin_timeout, CP_ADMIN_TIMEOUT_MS, 0);
    if (uv_accept(server, (uv_stream_t *)&a->tcp) != 0 ||
        uv_read_start((uv_stream_t *)&a->tcp, on_admin_alloc, on_admin_read) != 0) {
        admin_close(a);
    }
}

// ---- watch, signals, lifecycle ----------------------------------------------

static void check_mesh(struct cp_server *srv, bool force)
{
    struct stat st;
    char err[1024];
    if (stat(srv->cfg->mesh_path, &st) != 0) {
        return; // a file being replaced; keep the current version
    }
    if (!force && st.st_mtim.tv_sec == srv->mesh_st.st_mtim.tv_sec &&
        st.st_mtim.tv_nsec == srv->mesh_st.st_mtim.tv_nsec && st.st_size == srv->mesh_st.st_size &&
        st.st_ino == srv->mesh_st.st_ino) {
        return;
    }
    if (load_mesh(srv, err, sizeof(err)) != 0) {
        srv->mesh_reload_fail++;
        sc_error("cp.mesh_invalid", "error=\"%s\" kept_version=%s", err,
                 srv->snap ? srv->snap->version : "-");
        return;
    }
    sc_info("cp.mesh_reloaded", "file=%s", srv->cfg->mesh_path);
    publish(srv);
}

static void on_poll(uv_timer_t *t)
{
    struct cp_server *srv = t->data;
    check_mesh(srv, false);
    if (srv->cfg->auth != NULL) {
        cp_auth_maybe_reload(srv->cfg->auth);
    }
    if (cp_ca_generation(srv->cfg->ca) != srv->bundle_gen) {
        root_bundle_changed(srv);
    }
}

// conn_goaway queues GOAWAY(NO_ERROR) on |c| once: no new streams; the ones
// already started finish. conn_flush sends it (before the handshake the write
// fails and the connection is just closed).
static void conn_goaway(struct cp_conn *c)
{
    if (c->goaway_sent) {
        return;
    }
    nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->h2),
                          NGHTTP2_NO_ERROR, NULL, 0);
    c->goaway_sent = true;
}

// on_idle_sweep ends connections that have had no open call and no bytes
// from the client for conn_idle_ms: GOAWAY(NO_ERROR), then close. A client
// with a config stream open is never idle; one between CA calls reconnects.
static void on_idle_sweep(uv_timer_t *t)
{
    struct cp_server *srv = t->data;
    uint64_t now = uv_now(&srv->loop);
    struct cp_conn *c = srv->conns;
    while (c != NULL) {
        struct cp_conn *next = c->next;
        if (!c->closing && c->calls == NULL && now - c->last_active_ms >= srv->cfg->conn_idle_ms) {
            sc_debug("cp.conn_idle", "peer=%s idle_ms=%" PRIu64, c->peer, now - c->last_active_ms);
            conn_goaway(c);
            conn_flush(c);
            conn_close(c);
        }
        c = next;
    }
}

static void on_grace(uv_timer_t *t)
{
    struct cp_server *srv = t->data;
    sc_warn("cp.shutdown_forced", "open_connections=%" PRIu64, srv->num_conns);
    uv_stop(&srv->loop);
}

static void start_shutdown(struct cp_server *srv)
{
    if (srv->shutting_down) {
        return;
    }
    srv->shutting_down = true;
    sc_info("cp.shutdown", "connections=%" PRIu64 " streams=%" PRIu64, srv->num_conns,
            srv->num_cfg_streams);
    sc_accept_pause_close(&srv->listener_pause, NULL, NULL);
    uv_timer_stop(&srv->poll);
    uv_timer_stop(&srv->idle);
    for (struct cp_call *call = srv->cfg_streams; call != NULL; call = call->cfg_next) {
        end_call(call, CC_GRPC_UNAVAILABLE, "server shutting down");
    }
    for (struct cp_conn *c = srv->conns; c != NULL; c = c->next) {
        conn_goaway(c);
    }
    struct cp_conn *c = srv->conns;
    while (c != NULL) {
        struct cp_conn *next = c->next;
        conn_flush(c);
        c = next;
    }
    if (srv->conns == NULL) {
        uv_stop(&srv->loop);
        return;
    }
    uv_timer_start(&srv->grace, on_grace, CP_SHUTDOWN_GRACE_MS, 0);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct cp_server *srv = h->data;
    if (signum == SIGHUP) {
        sc_info("cp.reload", "signal=SIGHUP");
        check_mesh(srv, true);
        return;
    }
    start_shutdown(srv);
}

static void on_walk_close(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h)) {
        uv_close(h, NULL);
    }
}

// bind_on binds |tcp| to |ss| without listening yet (a taken port fails
// here, before any file is written). |ap| guards it from then on.
static int bind_on(struct cp_server *srv, uv_tcp_t *tcp, struct sc_accept_pause *ap,
                   const struct sockaddr_storage *ss, const char *what)
{
    char name[64];
    sc_accept_pause_init(ap, &srv->loop, tcp);
    tcp->data = srv;
    int rc = uv_tcp_bind(tcp, (const struct sockaddr *)ss, 0);
    if (rc == 0) {
        // libuv reports some bind errors (EADDRINUSE) only at listen time:
        // probe by asking for the bound address.
        struct sockaddr_storage got;
        int len = sizeof(got);
        rc = uv_tcp_getsockname(tcp, (struct sockaddr *)&got, &len);
    }
    if (rc != 0) {
        sc_error("cp.listen_failed", "what=%s addr=%s error=%s", what,
                 sc_format_addr((const struct sockaddr *)ss, name, sizeof(name)), uv_strerror(rc));
    }
    return rc;
}

static int listen_now(struct sc_accept_pause *ap, uv_connection_cb cb, const char *what)
{
    char label[32];
    snprintf(label, sizeof(label), "listener=%s", what);
    int rc = sc_accept_pause_listen(ap, 1024, cb, "cp", label);
    if (rc != 0) {
        sc_error("cp.listen_failed", "what=%s error=%s", what, uv_strerror(rc));
    }
    return rc;
}

int cp_server_run(const struct cp_server_config *cfg)
{
    struct cp_server *srv = calloc(1, sizeof(*srv));
    char err[1024];
    int ret = 1;
    if (srv == NULL) {
        abort();
    }
    srv->cfg = cfg;
    signal(SIGPIPE, SIG_IGN);
    if (load_mesh(srv, err, sizeof(err)) != 0) {
        fprintf(stderr, "seam-control-plane: %s\n", err);
        free(srv);
        return 2;
    }
    srv->ssl_ctx = make_ssl_ctx(srv);
    if (srv->ssl_ctx == NULL) {
        fprintf(stderr, "seam-control-plane: cannot create the serving certificate\n");
        cp_mesh_free(srv->mesh);
        free(srv);
        return 1;
    }
    srv->bundle_gen = cp_ca_generation(cfg->ca);
    srv->snap = build_snap(srv);

    nghttp2_session_callbacks_new(&g_h2_callbacks);
    nghttp2_session_callbacks_set_on_begin_headers_callback(g_h2_callbacks, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(g_h2_callbacks, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(g_h2_callbacks, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(g_h2_callbacks, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(g_h2_callbacks, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(g_h2_callbacks, on_frame_send);
    nghttp2_session_callbacks_set_on_invalid_header_callback(g_h2_callbacks, on_invalid_header);

    uv_loop_init(&srv->loop);
    uv_timer_init(&srv->loop, &srv->poll);
    uv_timer_init(&srv->loop, &srv->grace);
    uv_timer_init(&srv->loop, &srv->idle);
    srv->poll.data = srv->grace.data = srv->idle.data = srv;
    uv_signal_init(&srv->loop, &srv->sig_term);
    uv_signal_init(&srv->loop, &srv->sig_int);
    uv_signal_init(&srv->loop, &srv->sig_hup);
    srv->sig_term.data = srv->sig_int.data = srv->sig_hup.data = srv;
    uv_signal_start(&srv->sig_term, on_signal, SIGTERM);
    uv_signal_start(&srv->sig_int, on_signal, SIGINT);
    uv_signal_start(&srv->sig_hup, on_signal, SIGHUP);

    if (bind_on(srv, &srv->listener, &srv->listener_pause, &cfg->listen, "grpc") != 0 ||
        (cfg->have_admin &&
         bind_on(srv, &srv->admin, &srv->admin_pause, &cfg->admin, "admin") != 0)) {
        goto out;
    }
    // --root-out is written after the ports are bound and before they
    // listen: once a client can connect, the file it verifies with exists.
    if (cfg->root_out != NULL) {
        int rc = cp_ca_write_roots(cfg->ca, cfg->root_out);
        if (rc != 0) {
            fprintf(stderr, "seam-control-plane: --root-out %s: %s\n", cfg->root_out,
                    uv_strerror(rc));
            ret = 2;
            goto out;
        }
    }
    if (listen_now(&srv->listener_pause, on_connection, "grpc") != 0 ||
        (cfg->have_admin && listen_now(&srv->admin_pause, on_admin_connection, "admin") != 0)) {
        goto out;
    }
    uv_timer_start(&srv->poll, on_poll, cfg->mesh_poll_ms, cfg->mesh_poll_ms);
    if (cfg->conn_idle_ms > 0) {
        // Checked a few times per timeout, at most once a second.
        uint64_t every = cfg->conn_idle_ms / 4;
        every = every < 50 ? 50 : every > 1000 ? 1000 : every;
        uv_timer_start(&srv->idle, on_idle_sweep, every, every);
    }
    // Log the bound addresses (port 0 picks a free one).
    char lname[64], aname[64];
    struct sockaddr_storage bound;
    int blen = sizeof(bound);
    if (uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &blen) != 0) {
        bound = cfg->listen;
    }
    sc_format_addr((const struct sockaddr *)&bound, lname, sizeof(lname));
    blen = sizeof(bound);
    if (cfg->have_admin && uv_tcp_getsockname(&srv->admin, (struct sockaddr *)&bound, &blen) == 0) {
        sc_format_addr((const struct sockaddr *)&bound, aname, sizeof(aname));
    } else {
        snprintf(aname, sizeof(aname), "-");
    }
    sc_info("cp.ready", "listen=%s admin=%s version=%s trust_domain=%s", lname, aname,
            srv->snap->version, cp_ca_trust_domain(cfg->ca));
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    ret = 0;
    sc_info("cp.stopped", "status=0");

out:
    // Close whatever is left (connections past the grace period included)
    // and let their close callbacks run.
    srv->shutting_down = true;
    for (struct cp_conn *c = srv->conns; c != NULL; c = c->next) {
        conn_close(c);
    }
    for (struct cp_admin_conn *a = srv->admins; a != NULL; a = a->next) {
        admin_close(a);
    }
    // Before the walk: a paused listener's handle is not in the loop, but
    // its kept fd must be closed (and the pause timer with it).
    sc_accept_pause_close(&srv->listener_pause, NULL, NULL);
    sc_accept_pause_close(&srv->admin_pause, NULL, NULL);
    uv_walk(&srv->loop, on_walk_close, NULL);
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    uv_loop_close(&srv->loop);
    nghttp2_session_callbacks_del(g_h2_callbacks);
    g_h2_callbacks = NULL;
    snap_unref(srv->snap);
    cp_mesh_free(srv->mesh);
    SSL_CTX_free(srv->ssl_ctx);
    free(srv);
    return ret;
}
