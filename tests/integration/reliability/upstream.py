"""A misbehaving upstream for fault-injection tests: a loopback listener whose
every accepted connection takes the next mode from a queue (default "echo").

Modes: echo | rst_accept (SO_LINGER 0 + close before any byte) | fin_accept
(FIN at once, then read to EOF) | rst_hello (read the first bytes, e.g. a
ClientHello, then RST) | rst_mid (one echo, then RST) | fin_mid (one echo,
then FIN, then read to EOF). With tls=True the server does mTLS (server cert,
client cert from ca.pem required) after accept for every mode past the
"hello" stage. What each connection received after its FIN is recorded.

Quacks like seamtest.Proc (stop()) so the procs fixture ends it."""
import socket
import ssl
import struct
import threading

from seamtest import LoopServer, mtls_server_ctx

LOOP = "127.0.0.1"


class FakeUpstream(LoopServer):
    def __init__(self, pki=None, tls=False, cert="server"):
        self.modes = []
        self.received_after_fin = []
        self.lock = threading.Lock()
        self.ctx = mtls_server_ctx(pki, cert) if tls else None
        self._listen(64)

    @property
    def target(self):
        return f"{LOOP}:{self.port}"

    def push(self, *modes):
        with self.lock:
            self.modes.extend(modes)

    def _next(self):
        with self.lock:
            return self.modes.pop(0) if self.modes else "echo"

    def _serve_args(self, c):
        return (c, self._next())

    @staticmethod
    def _rst(s):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()

    def _read_to_eof(self, s):
        got = b""
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                got += d
        except (OSError, ssl.SSLError):
            pass
        with self.lock:
            self.received_after_fin.append(got)

    def _serve(self, c, mode):
        c.settimeout(10)
        try:
            if mode == "rst_accept":
                return self._rst(c)
            if mode == "fin_accept":
                c.shutdown(socket.SHUT_WR)
                self._read_to_eof(c)
                return c.close()
            if mode == "rst_hello":
                c.recv(1)
                return self._rst(c)
            s = self.ctx.wrap_socket(c, server_side=True) if self.ctx else c
            if mode in ("rst_mid", "fin_mid"):
                d = s.recv(65536)
                s.sendall(d)
                if mode == "rst_mid":
                    return self._rst(c)
                c.shutdown(socket.SHUT_WR)  # a TCP FIN (for TLS: without close_notify)
                self._read_to_eof(s)
                return c.close()
            while True:  # echo
                d = s.recv(65536)
                if not d:
                    break
                s.sendall(d)
            try:
                c.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            c.close()
        except (OSError, ssl.SSLError):
            try:
                c.close()
            except OSError:
                pass

    def stop(self, *a, **kw):
        self.stopping = True
        self.lsock.close()
        self.thread.join(5)
        return 0
