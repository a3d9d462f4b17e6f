"""Helpers for the admin-server integration tests (tests/integration/admin/).

They run `seam-sidecar tunnel ... --admin 127.0.0.1:PORT` pairs with the
tunnel suite's helpers (tests/integration/tunnel/tunnelkit.py) and talk to the
admin endpoint with raw sockets (to send malformed requests too).
"""
import json
import os
import re
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tunnel"))

import seamtest  # noqa: E402
from seamtest import free_port, wait_for  # noqa: E402,F401
import tunnelkit  # noqa: E402,F401
from tunnelkit import LOOP, start_tunnel  # noqa: E402


class Admin:
    """A sidecar's admin endpoint."""

    def __init__(self, host, port):
        self.host = host
        self.port = port

    @property
    def addr(self):
        return tunnelkit.addr(self.host, self.port)

    def raw(self, data, timeout=10.0):
        """Sends raw bytes, returns (status, headers dict, body bytes); reads to EOF."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as s:
            s.settimeout(timeout)
            try:
                s.sendall(data)
            except OSError:
                pass  # the server may answer (and stop reading) before we finish
            buf = b""
            while True:
                try:
                    d = s.recv(65536)
                except (ConnectionResetError, socket.timeout):
                    break
                if not d:
                    break
                buf += d
        return parse_response(buf)

    def request(self, method, path, body=b"", headers=None):
        hdrs = {"Host": self.addr, "Content-Length": str(len(body))}
        hdrs.update(headers or {})
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
        return self.raw(head.encode() + b"\r\n" + body)

    def get(self, path):
        return self.request("GET", path)

    def metrics_text(self):
        st, h, body = self.get("/metrics")
        assert st == 200, (st, body)
        assert h.get("content-type") == "text/plain; version=0.0.4; charset=utf-8", h
        return body.decode()

    def metrics(self):
        return parse_metrics(self.metrics_text())

    def json(self, path):
        st, h, body = self.get(path)
        assert st == 200, (st, body)
        assert h.get("content-type") == "application/json", h
        return json.loads(body)


def parse_response(buf):
    head, sep, body = buf.partition(b"\r\n\r\n")
    if not sep:
        return None, {}, buf
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3}) ", lines[0] + " ")
    status = int(m.group(1)) if m else None
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, body


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """{(name, frozenset(labels.items())): value} of a text-format exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"unparsable metrics line: {line!r}"
        labels = frozenset(_LABEL.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def val(metrics, name, **labels):
    return metrics[(name, frozenset((k, str(v)) for k, v in labels.items()))]


def promtool_check(text):
    r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True)
    return r.returncode, (r.stdout + r.stderr).decode()


def start_with_admin(procs, direction, target, pki, **kw):
    """start_tunnel with --admin 127.0.0.1:<free port>; returns (tunnel, Admin)."""
    port = free_port()
    extra = list(kw.pop("extra", ())) + ["--admin", f"{LOOP}:{port}"]
    t = start_tunnel(procs, direction, target, pki, extra=extra, **kw)
    a = Admin(LOOP, port)
    wait_for(lambda: a.get("/healthz/live")[0] == 200, 10, what="admin endpoint up")
    return t, a
