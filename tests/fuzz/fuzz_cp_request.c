// fuzz_cp_request: the control plane's request decoding path. The input is a
// gRPC DATA byte stream: it goes through the shared reassembler (4 KiB cap
// here), each message is decoded as an IstioCertificateRequest whose CSR is
// run through the CA's checks and signing, and as a ConfigRequest. The first
// byte picks how the stream is chunked.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cc/grpc.h"
#include "cp_ca.h"
#include "istio/v1/auth/ca.pb-c.h"
#include "seam/v1/config.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct cp_ca *g_ca;

static int on_msg(void *arg, const uint8_t *msg, size_t len, bool compressed)
{
    Istio__V1__Auth__IstioCertificateRequest *req =
        istio__v1__auth__istio_certificate_request__unpack(NULL, len, msg);
    if (req != NULL) {
        char **chain = NULL;
        size_t num = 0;
        char why[256];
        int st = cp_ca_sign_csr(g_ca, req->csr, strlen(req->csr), "spiffe://fuzz.test/ns/a/sa/b",
                                req->validity_duration, &chain, &num, why, sizeof(why));
        if ((st == CP_GRPC_OK) != (chain != NULL)) {
            abort();
        }
        cp_ca_chain_free(chain, num);
        istio__v1__auth__istio_certificate_request__free_unpacked(req, NULL);
    }
    Seam__V1__ConfigRequest *cr = seam__v1__config_request__unpack(NULL, len, msg);
    if (cr != NULL) {
        seam__v1__config_request__free_unpacked(cr, NULL);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (g_ca == NULL) {
        g_ca = cp_ca_new_generated("fuzz.test", 3600);
        if (g_ca == NULL) {
            abort();
        }
    }
    if (size == 0) {
        return 0;
    }
    size_t chunk = (size_t)data[0] % 7 + 1;
    data++;
    size--;
    struct cc_grpc_reasm r;
    cc_grpc_reasm_init(&r, 4096);
    for (size_t off = 0; off < size; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;
        if (cc_grpc_reasm_feed(&r, data + off, n, on_msg, NULL) != 0) {
            break;
        }
    }
    cc_grpc_reasm_cleanup(&r);
    return 0;
}
