// pki.c — the generated test PKI shared by the unit tests (pki.h).
#include "pki.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "sc/spiffe.h"
#include "sc/tls.h"

char test_pki_dir[256];

int test_pki_setup(void **state)
{
    (void)state;
    const char *src = getenv("SEAM_SOURCE_DIR");
    if (src == NULL) {
        src = SC_TEST_SOURCE_DIR; // ctest sets SEAM_SOURCE_DIR
    }
    snprintf(test_pki_dir, sizeof(test_pki_dir), "/tmp/seam-test-pki-XXXXXX");
    if (mkdtemp(test_pki_dir) == NULL) {
        return -1;
    }
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "bash '%s/tests/certs/gen.sh' '%s' >/dev/null 2>&1", src,
             test_pki_dir);
    int rc = system(cmd);
    return WIFEXITED(rc) && WEXITSTATUS(rc) == 0 ? 0 : -1;
}

int test_pki_teardown(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", test_pki_dir);
    return system(cmd) == 0 ? 0 : -1;
}

const char *test_pki_path(const char *name)
{
    static char buf[8][512];
    static int i;
    i = (i + 1) % 8;
    snprintf(buf[i], sizeof(buf[i]), "%s/%s", test_pki_dir, name);
    return buf[i];
}

SSL_CTX *test_pki_ctx(bool server, const char *name, const char *peer_id, const char *allow,
                      const char *trust, char *err, size_t err_cap)
{
    char c[512], k[512], t[512];
    snprintf(c, sizeof(c), "%s/%s.pem", test_pki_dir, name);
    snprintf(k, sizeof(k), "%s/%s.key", test_pki_dir, name);
    snprintf(t, sizeof(t), "%s/%s", test_pki_dir, trust ? trust : "ca.pem");
    char *pat = (char *)allow;
    struct sc_allowlist al = {.num_patterns = 1, .patterns = &pat};
    struct sc_tls_opts o = {
        .is_server = server,
        .peer_id = peer_id,
        .allow = allow ? &al : NULL,
    };
    return sc_tls_ctx_new_files(&o, c, k, t, err, err_cap);
}
