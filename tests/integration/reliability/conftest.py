"""Reliability-suite checks that apply to every test: each seam-sidecar the
test started must end on SIGTERM with exit 0 (unless the test ended it
itself), its log must hold no sanitizer report and no private key.
The sidecar may run under a wrapper (valgrind), hence wrapped=True."""
import seamtest

sidecars_end_cleanly = seamtest.sidecars_end_cleanly_fixture(wrapped=True, skip_ended=True)
