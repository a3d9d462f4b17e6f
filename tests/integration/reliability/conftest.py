"""Reliability-suite checks that apply to every test: each seam-sidecar the
test started must end on SIGTERM with exit 0 (unless the test ended it
itself), its log must hold no sanitizer report and no private key."""
import pytest

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "ThreadSanitizer", "SUMMARY: UndefinedBehaviorSanitizer")


@pytest.fixture(autouse=True)
def sidecars_end_cleanly(procs):
    yield
    problems = []
    for p in list(procs.items):
        args = [str(a) for a in (getattr(p, "args", None) or ())]
        if not any(a.endswith("seam-sidecar") for a in args[:8]):
            continue
        was_alive = p.alive()
        rc = p.stop()
        with open(p.log_path, errors="replace") as f:
            log = f.read()
        if was_alive and rc != 0:
            problems.append(f"{' '.join(args[:3])} (pid {p.pid}) exited {rc} after SIGTERM")
        if "PRIVATE KEY" in log:
            problems.append(f"pid {p.pid}: private key material in the log")
        for mark in SANITIZER_MARKS:
            if mark in log:
                at = log.index(mark)
                problems.append(f"pid {p.pid}: sanitizer report:\n{log[max(0, at - 200):at + 3000]}")
                break
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
