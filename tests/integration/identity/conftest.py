"""Identity-suite checks that apply to every test: each seam-sidecar the test
started must end cleanly on SIGTERM (exit 0), and its log must hold no
sanitizer report (the ASan/UBSan build runs the same tests) and no private
key material (the key lives only in memory)."""
import seamtest

sidecars_end_cleanly = seamtest.sidecars_end_cleanly_fixture(
    stop_timeout=40,
    # This suite does not look for "ThreadSanitizer" (no TSan build runs it).
    marks=("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
           "SUMMARY: UndefinedBehaviorSanitizer"))
