"""Tunnel CLI contract: bad flags exit 2 with a clear message; every flag also
from SEAM_<FLAG> (flag wins); --log-level / --log-format behave."""
import json
import os
import subprocess

import pytest

from seamtest import binary, free_port, wait_for
from seamtest import wait_port
from tunnelkit import (CLIENT_ID, LOOP, SERVER_ID, Echo, addr, client_ctx, closed_by_peer,
                       echo_roundtrip, events, hs_failures, sock_peer_str, start_tunnel, tls_connect,
                       tunnel_args)


def _run(args, env=None, timeout=10):
    e = dict(os.environ)
    # Nothing from the caller's environment may leak into these checks.
    for k in list(e):
        if k.startswith("SEAM_") and k not in ("SEAM_BUILD_DIR", "SEAM_SOURCE_DIR"):
            del e[k]
    e.update(env or {})
    try:
        return subprocess.run([str(a) for a in args], capture_output=True, timeout=timeout, env=e)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{args} did not exit within {timeout}s (bad input must fail fast)")


def _base(pki, direction):
    listen = addr(LOOP, free_port())
    target = addr(LOOP, free_port())
    if direction == "outbound":
        return tunnel_args("outbound", listen, target, pki, "client", peer_id=SERVER_ID)
    return tunnel_args("inbound", listen, target, pki, "server", allow=[CLIENT_ID])


def _drop(args, flag):
    i = args.index(flag)
    return args[:i] + args[i + 2:]


def _set(args, flag, value):
    args = list(args)
    args[args.index(flag) + 1] = value
    return args


BAD = [
    # (case, direction, transform, words one of which the message must name)
    ("unknown_flag", "outbound", lambda a: a + ["--bogus-flag", "1"], ["bogus-flag"]),
    ("missing_peer_id", "outbound", lambda a: _drop(a, "--peer-id"), ["peer-id"]),
    ("missing_allow", "inbound", lambda a: _drop(a, "--allow"), ["allow"]),
    ("missing_target", "outbound", lambda a: _drop(a, "--target"), ["target"]),
    ("missing_cert", "inbound", lambda a: _drop(a, "--cert"), ["cert"]),
    ("bad_duration", "outbound", lambda a: a + ["--idle-timeout", "5parsecs"],
     ["idle-timeout", "5parsecs"]),
    ("bad_handshake_timeout", "inbound", lambda a: a + ["--handshake-timeout", "-3s"],
     ["handshake-timeout", "-3s"]),
    ("bad_listen", "outbound", lambda a: _set(a, "--listen", "not-an-address"),
     ["listen", "not-an-address"]),
    ("bad_port", "inbound", lambda a: _set(a, "--listen", "127.0.0.1:99999"),
     ["listen", "99999"]),
    ("bad_peer_id", "outbound", lambda a: _set(a, "--peer-id", "http://example.com/x"),
     ["peer-id", "http://example.com/x"]),
    ("bad_allow", "inbound", lambda a: _set(a, "--allow", "spiffe://"), ["allow", "spiffe://"]),
    ("bad_workers", "outbound", lambda a: a + ["--workers", "zero"], ["workers", "zero"]),
    ("bad_log_level", "outbound", lambda a: a + ["--log-level", "loud"], ["log-level", "loud"]),
    ("flag_without_value", "outbound", lambda a: a + ["--workers"], ["workers"]),
    ("bad_mode", "outbound", lambda a: [("sideways" if x == "outbound" else x) for x in a],
     ["sideways"]),
]


@pytest.mark.parametrize("case,direction,transform,words", BAD, ids=[b[0] for b in BAD])
def test_bad_flags_exit_2(pki, case, direction, transform, words):
    r = _run(transform(_base(pki, direction)))
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 2, f"exit {r.returncode}, stderr: {err}"
    assert err.strip(), "no message on stderr"
    assert any(w in err for w in words), f"message does not name {words}: {err}"
    assert "sidecar.ready" not in err


def test_missing_cert_file_is_named(pki, tmp_path):
    missing = str(tmp_path / "nope.pem")
    r = _run(_set(_base(pki, "inbound"), "--cert", missing))
    err = r.stderr.decode(errors="replace")
    assert r.returncode != 0
    assert "nope.pem" in err, err
    assert "sidecar.ready" not in err


def test_key_not_matching_cert_is_refused(pki):
    r = _run(_set(_base(pki, "inbound"), "--key", os.path.join(pki, "client.key")))
    err = r.stderr.decode(errors="replace")
    assert r.returncode != 0, err
    assert "sidecar.ready" not in err
    assert "PRIVATE KEY" not in err and "BEGIN" not in err


def test_env_peer_id(pki, procs):
    """SEAM_PEER_ID replaces --peer-id; the flag wins over the env var."""
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki)
    target = addr(LOOP, in_t.port)

    def env_only(env):
        port = free_port()
        args = _drop(tunnel_args("outbound", addr(LOOP, port), target, pki, "client",
                                 peer_id="x"), "--peer-id")
        return start_tunnel(procs, "outbound", target, pki, env=env, args=args, port=port)

    # 1. Only the env var: it is the expected server ID.
    t1 = env_only({"SEAM_PEER_ID": SERVER_ID})
    s = t1.connect()
    assert echo_roundtrip(s, b"env works") == b"env works"
    s.close()

    # 2. A wrong ID in the env var alone is used (and refused: mismatch).
    wrong = "spiffe://cluster.local/ns/default/sa/someone-else"
    t2 = env_only({"SEAM_PEER_ID": wrong})
    s = t2.connect()
    s.sendall(b"x")
    closed, got = closed_by_peer(s, 5)
    s.close()
    assert closed and got == b""
    f = wait_for(lambda: hs_failures(t2.proc), 5, what="mismatch log")[0]
    assert f["reason"] == "spiffe_id_mismatch", f["line"]

    # 3. Flag and env var: the flag wins.
    t3 = start_tunnel(procs, "outbound", target, pki, peer_id=SERVER_ID, env={"SEAM_PEER_ID": wrong})
    s = t3.connect()
    assert echo_roundtrip(s, b"flag wins") == b"flag wins"
    s.close()


def test_env_for_every_required_flag(pki, procs):
    """The whole inbound command line from SEAM_* variables."""
    echo = Echo(procs)
    port = free_port()
    env = {"SEAM_LISTEN": addr(LOOP, port), "SEAM_TARGET": echo.target,
           "SEAM_CERT": os.path.join(pki, "server.pem"), "SEAM_KEY": os.path.join(pki, "server.key"),
           "SEAM_TRUST": os.path.join(pki, "ca.pem"), "SEAM_ALLOW": CLIENT_ID}
    t = start_tunnel(procs, "inbound", echo.target, pki, env=env, port=port,
                     args=[binary("seam-sidecar"), "tunnel", "inbound"])
    s = tls_connect(client_ctx(pki, "client"), LOOP, port)
    assert echo_roundtrip(s, b"all from env") == b"all from env"
    s.close()
    assert t.proc.alive()


def test_log_level_warn_silences_conn_close(pki, procs):
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki, wait_ready=False,
                        extra=["--log-level", "warn"])
    wait_port(LOOP, in_t.port)
    s = tls_connect(client_ctx(pki, "client"), LOOP, in_t.port)
    assert echo_roundtrip(s, b"quiet") == b"quiet"
    s.close()
    # A refused handshake (WARN) is still logged; once it is there, the
    # earlier connection's close (INFO) would have been logged too.
    bad = tls_connect(client_ctx(pki, "denied"), LOOP, in_t.port)
    bad_peer = sock_peer_str(bad)
    try:
        bad.sendall(b"x")
        bad.recv(1)
    except OSError:
        pass
    bad.close()
    wait_for(lambda: hs_failures(in_t.proc, bad_peer), 5, what="WARN line")
    wait_for(lambda: echo.stats()["closed"] == 1, 5, what="echo saw the close")
    assert not events(in_t.proc, "conn.close")
    assert not [e for e in events(in_t.proc) if e["level"] in ("INFO", "DEBUG")]


def test_log_format_json(pki, procs):
    echo = Echo(procs)
    in_t = start_tunnel(procs, "inbound", echo.target, pki, wait_ready=False,
                        extra=["--log-format", "json"])
    wait_for(lambda: '"sidecar.ready"' in in_t.log(), 15, what="JSON ready line")
    s = tls_connect(client_ctx(pki, "client"), LOOP, in_t.port)
    assert echo_roundtrip(s, b"json") == b"json"
    s.close()

    def close_line():
        for line in in_t.log().splitlines():
            if line.startswith("{"):
                o = json.loads(line)
                if o.get("event") == "conn.close":
                    return o
        return None

    o = wait_for(close_line, 10, what="JSON conn.close")
    assert o["level"] == "info"
    assert f"peer_id={CLIENT_ID}" in o["msg"]
    for line in in_t.log().splitlines():
        if line.strip():
            json.loads(line)  # every line is JSON
