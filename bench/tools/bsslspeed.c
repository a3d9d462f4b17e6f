/*
 * bsslspeed - one-core speed of the primitives seam's TLS uses, measured with
 * the BoringSSL seam links (Debian's android-libboringssl), which ships no
 * `bssl speed` tool.
 *
 *   bsslspeed SECONDS
 *
 * Prints one key=value line:
 *   aes128gcm_16k_gbs / aes128gcm_1k_gbs   AES-128-GCM seal, GB/s (1e9 bytes/s)
 *   ecdsa_p256_sign / ecdsa_p256_verify    operations per second
 *   x25519                                 X25519 key agreements per second
 * Build: gcc -O2 -I/usr/include/android -L/usr/lib/x86_64-linux-gnu/android \
 *        -Wl,-rpath,/usr/lib/x86_64-linux-gnu/android bsslspeed.c -lcrypto
 */
#include <openssl/aead.h>
#include <openssl/curve25519.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/nid.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double aead_gbs(size_t len, double secs)
{
    static uint8_t key[16], nonce[12], in[16384], out[16384 + 16];
    EVP_AEAD_CTX ctx;
    if (!EVP_AEAD_CTX_init(&ctx, EVP_aead_aes_128_gcm(), key, sizeof key, 16, NULL))
        return -1;
    double t0 = now_s(), t;
    uint64_t bytes = 0;
    do {
        for (int i = 0; i < 64; i++) {
            size_t olen;
            nonce[0]++;
            if (!EVP_AEAD_CTX_seal(&ctx, out, &olen, sizeof out, nonce, sizeof nonce, in, len, NULL,
                                   0))
                return -1;
            bytes += len;
        }
        t = now_s();
    } while (t - t0 < secs);
    EVP_AEAD_CTX_cleanup(&ctx);
    return bytes / (t - t0) / 1e9;
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 1.0;
    if (secs <= 0 || secs > 60) {
        fprintf(stderr, "usage: %s SECONDS (0 < SECONDS <= 60)\n", argv[0]);
        return 1;
    }
    double a16 = aead_gbs(16384, secs), a1 = aead_gbs(1024, secs);

    EC_KEY *k = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    if (!k || !EC_KEY_generate_key(k))
        return 1;
    uint8_t dg[32], sig[80];
    unsigned slen = 0;
    SHA256((const uint8_t *)"seam", 4, dg);
    double t0 = now_s(), t;
    long ns = 0, nv = 0, nx = 0;
    do {
        slen = sizeof sig;
        if (!ECDSA_sign(0, dg, sizeof dg, sig, &slen, k))
            return 1;
        ns++;
        t = now_s();
    } while (t - t0 < secs);
    double sign = ns / (t - t0);
    t0 = now_s();
    do {
        if (ECDSA_verify(0, dg, sizeof dg, sig, slen, k) != 1)
            return 1;
        nv++;
        t = now_s();
    } while (t - t0 < secs);
    double verify = nv / (t - t0);
    EC_KEY_free(k);

    uint8_t pub[32], priv[32], peer_pub[32], peer_priv[32], shared[32];
    X25519_keypair(pub, priv);
    X25519_keypair(peer_pub, peer_priv);
    t0 = now_s();
    do {
        if (!X25519(shared, priv, peer_pub))
            return 1;
        nx++;
        t = now_s();
    } while (t - t0 < secs);
    double x = nx / (t - t0);
    printf(
        "aes128gcm_16k_gbs=%.2f aes128gcm_1k_gbs=%.2f ecdsa_p256_sign=%.0f ecdsa_p256_verify=%.0f "
        "x25519=%.0f\n",
        a16, a1, sign, verify, x);
    return 0;
}
