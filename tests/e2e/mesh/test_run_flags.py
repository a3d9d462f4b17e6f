"""`seam-sidecar run` flags (no root needed): every required flag is named when
missing, bad values are refused with exit code 2 and a message naming the flag,
SEAM_* environment variables stand in for flags (a flag wins), and an
unreachable control plane leaves the sidecar not ready (/healthz/ready 503)
until SIGTERM, which exits 0."""
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import meshlab  # noqa: E402
from seamtest import free_port  # noqa: E402 - tests/conftest.py puts tests/lib on the path

BUILD_DIR = os.environ.get("SEAM_BUILD_DIR") or os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "build")


@pytest.fixture(scope="module")
def sidecar():
    why = meshlab.run_built(BUILD_DIR)
    if why:
        pytest.skip(why)
    return os.path.join(BUILD_DIR, "sidecar", "seam-sidecar")


def clean_env(**kw):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEAM_")}
    env.update(kw)
    return env


BASE = ["--control-plane", "127.0.0.1:1", "--control-plane-trust", "/nonexistent/root.pem",
        "--namespace", "default", "--service-account", "web"]


def run(sidecar, args, env=None):
    return subprocess.run([sidecar, "run"] + args, capture_output=True, text=True, timeout=20,
                          env=env or clean_env(), stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("flag", ["--control-plane", "--control-plane-trust", "--namespace",
                                  "--service-account"])
def test_missing_required_flag_is_named(sidecar, flag):
    args = list(BASE)
    i = args.index(flag)
    del args[i:i + 2]
    r = run(sidecar, args)
    assert r.returncode == 2, r.stderr
    assert flag in r.stderr and "SEAM_" + flag[2:].upper().replace("-", "_") in r.stderr


@pytest.mark.parametrize("extra,needle", [
    (["--namespace", "bad/ns"], "--namespace"),
    (["--service-account", ".."], "--service-account"),
    (["--trust-domain", "Bad.Domain"], "--trust-domain"),
    (["--outbound-port", "15006", "--inbound-port", "15006"], "--inbound-port"),
    (["--outbound-port", "70000"], "outbound-port"),
    (["--admin", "nowhere"], "--admin"),
    (["--control-plane", "no-port"], "--control-plane"),
    (["--log-level", "loud"], "--log-level"),
    (["--detect-timeout", "soon"], "detect-timeout"),
    (["--busy-poll-us", "100001"], "--busy-poll-us"),
    (["--accept-mux=maybe"], "--accept-mux"),
    (["--mux=2"], "--mux"),
    (["--mux-sessions", "0"], "--mux-sessions"),
    (["--loopback-cc", "no such"], "--loopback-cc"),
    (["--loopback-cc", "no_such_cc"], "no such congestion control"),
    (["--unknown-flag", "1"], "unknown-flag"),
    (["--max-connections", "many"], "--max-connections"),
    (["--max-buffer-memory", "lots"], "--max-buffer-memory"),
])
def test_bad_values_exit_2_naming_the_flag(sidecar, extra, needle):
    args = list(BASE)
    for i in range(0, len(extra), 2):  # replace a flag of BASE, or add it
        if extra[i] in args:
            j = args.index(extra[i])
            args[j + 1] = extra[i + 1]
        else:
            args += extra[i:i + 2]
    r = run(sidecar, args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert needle in r.stderr, r.stderr
    assert r.stderr.count("\n") <= 3, r.stderr


def test_help_lists_flags_with_env_names(sidecar):
    r = run(sidecar, ["--help"])
    assert r.returncode == 0
    for name in ("SEAM_CONTROL_PLANE", "SEAM_POD_IP", "SEAM_OUTBOUND_PORT", "SEAM_INBOUND_PORT",
                 "SEAM_WORKERS", "SEAM_DRAIN_TIMEOUT", "SEAM_TOKEN_FILE",
                 "SEAM_MAX_CONNECTIONS", "SEAM_MAX_BUFFER_MEMORY", "SEAM_BUSY_POLL_US",
                 "SEAM_LOOPBACK_CC", "SEAM_MUX", "SEAM_ACCEPT_MUX"):
        assert name in r.stdout, name


def test_env_configures_and_not_ready_without_control_plane(sidecar, tmp_path):
    # A valid PEM root the channel can load: a throw-away self-signed one.
    trust = tmp_path / "root.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(tmp_path / "k.pem"),
                    "-out", str(trust), "-subj", "/CN=test", "-days", "1"],
                   check=True, capture_output=True)
    admin = free_port()
    env = clean_env(SEAM_CONTROL_PLANE=f"127.0.0.1:{free_port()}",
                    SEAM_CONTROL_PLANE_TRUST=str(trust), SEAM_NAMESPACE="default",
                    SEAM_SERVICE_ACCOUNT="web", SEAM_ADMIN="127.0.0.1:1",
                    SEAM_OUTBOUND_PORT=str(free_port()), SEAM_INBOUND_PORT=str(free_port()),
                    SEAM_PROXY_UID="0")  # root-only temp files, no interception: stay root
    # The flag wins over SEAM_ADMIN.
    p = subprocess.Popen([sidecar, "run", "--admin", f"127.0.0.1:{admin}"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL)
    try:
        def status():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/healthz/ready",
                                            timeout=2) as r:
                    return r.status
            except urllib.error.HTTPError as e:
                return e.code
        assert meshlab.wait_for(status, 10, what="the admin port") == 503
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/config", timeout=2) as r:
            body = r.read().decode()
        assert '"spiffe_id":"spiffe://cluster.local/ns/default/sa/web"' in body, body
        assert '"version":null' in body, body
        time.sleep(0.2)
        assert status() == 503
    finally:
        p.send_signal(signal.SIGTERM)
        out = p.communicate(timeout=15)[0].decode()
    assert p.returncode == 0, out
    assert "PRIVATE" not in out
