"""Identity-suite checks that apply to every test: each seam-sidecar the test
started must end cleanly on SIGTERM (exit 0), and its log must hold no
sanitizer report (the ASan/UBSan build runs the same tests) and no private
key material (the key lives only in memory)."""
import pytest

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "SUMMARY: UndefinedBehaviorSanitizer")


@pytest.fixture(autouse=True)
def sidecars_end_cleanly(procs):
    yield
    problems = []
    for p in list(procs.items):
        args = getattr(p, "args", None)
        if not args or not str(args[0]).endswith("seam-sidecar"):
            continue
        rc = p.stop(timeout=40)  # SIGTERM, by PID
        with open(p.log_path, errors="replace") as f:
            log = f.read()
        if rc != 0:
            problems.append(f"{' '.join(args[1:3])} (pid {p.pid}) exited {rc} after SIGTERM")
        if "PRIVATE KEY" in log:
            problems.append(f"pid {p.pid}: private key material in the log")
        for mark in SANITIZER_MARKS:
            if mark in log:
                at = log.index(mark)
                problems.append(f"pid {p.pid}: sanitizer report:\n{log[max(0, at - 200):at + 3000]}")
                break
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
