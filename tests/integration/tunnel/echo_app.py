#!/usr/bin/env python3
"""A plain TCP echo app for the tunnel tests, with counters the tests can read.

    echo_app.py --listen HOST:PORT --stats FILE

Echoes every byte back; when the client half-closes (EOF), it finishes the
echo, shuts its write side down (FIN) and closes. The stats file is a JSON
object {"accepted", "active", "peak", "bytes", "closed"} replaced atomically
(os.replace) on every accept and close and at least every 100 ms while bytes
flow, so a test can assert "the app received no byte" or "200 connections were
open at once". Prints "echo.ready HOST:PORT" once listening.
"""
import argparse
import json
import os
import socket
import sys
import threading
import time


class Stats:
    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.accepted = 0
        self.active = 0
        self.peak = 0
        self.bytes = 0
        self.closed = 0
        self.last_write = 0.0
        self.write_locked()

    def write_locked(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"accepted": self.accepted, "active": self.active, "peak": self.peak,
                       "bytes": self.bytes, "closed": self.closed}, f)
        os.replace(tmp, self.path)
        self.last_write = time.monotonic()

    def on_accept(self):
        with self.lock:
            self.accepted += 1
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.write_locked()

    def on_bytes(self, n, first):
        with self.lock:
            self.bytes += n
            if first or time.monotonic() - self.last_write > 0.1:
                self.write_locked()

    def on_close(self):
        with self.lock:
            self.active -= 1
            self.closed += 1
            self.write_locked()


def serve_one(conn, stats):
    first = True
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            stats.on_bytes(len(data), first)
            first = False
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        conn.close()
        stats.on_close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--stats", required=True)
    a = ap.parse_args()
    host, _, port = a.listen.rpartition(":")
    host = host.strip("[]")
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    srv = socket.socket(fam, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, int(port)))
    srv.listen(1024)
    stats = Stats(a.stats)
    print(f"echo.ready {a.listen}", flush=True)
    while True:
        conn, _ = srv.accept()
        stats.on_accept()
        threading.Thread(target=serve_one, args=(conn, stats), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
