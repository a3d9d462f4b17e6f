// pki.h — the generated test PKI (tests/certs/gen.sh: ca, server, client,
// expired, notyet, ...; see the script's header) for cmocka unit tests.
// Compiled into every unit test by tests/CMakeLists.txt.
//
//   return cmocka_run_group_tests(tests, test_pki_setup, test_pki_teardown);
#ifndef SC_TEST_PKI_H
#define SC_TEST_PKI_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

// test_pki_dir is the directory holding the PKI between test_pki_setup and
// test_pki_teardown.
extern char test_pki_dir[256];

// test_pki_setup is a cmocka group setup: it creates a fresh directory under
// /tmp and runs gen.sh (from $SEAM_SOURCE_DIR, set by ctest) into it. Returns
// 0, or -1 if the directory or any certificate could not be made.
int test_pki_setup(void **state);

// test_pki_teardown removes the directory made by test_pki_setup.
int test_pki_teardown(void **state);

// test_pki_path returns "test_pki_dir/NAME" in one of 8 rotating static
// buffers (so a call may take several paths at once).
const char *test_pki_path(const char *name);

// test_pki_ctx builds a context with sc_tls_ctx_new_files from NAME.pem and
// NAME.key of the PKI, trusting |trust| (NULL: ca.pem). A client expects the
// server ID |peer_id|; a server admits the one allow-list pattern |allow|
// (NULL: no list). Returns NULL with the reason in |err|.
SSL_CTX *test_pki_ctx(bool server, const char *name, const char *peer_id, const char *allow,
                      const char *trust, char *err, size_t err_cap);

#endif
