"""Tunnel-suite checks that apply to every test: each seam-sidecar the test
started must end cleanly on SIGTERM (exit 0, the drain contract), its log
must hold no sanitizer report (ASan/UBSan/LSan builds run the same tests) and
no private key material. The procs fixture skips the sidecars afterwards."""
import seamtest

sidecars_end_cleanly = seamtest.sidecars_end_cleanly_fixture()
