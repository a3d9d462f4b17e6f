// pki.c — the generated test PKI shared by the unit tests (pki.h).
#include "pki.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

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
