#!/usr/bin/env python3
"""The "app" of the mesh e2e test and the demo (no seam code: it knows nothing
about the mesh).

    meshapp.py serve NAME PORT [PORT...]
        Line server on 0.0.0.0 and [::] for each port: answers every line with
        "NAME:PORT got LINE from PEER_IP\\n" until the client closes.
    meshapp.py call HOST PORT MESSAGE [TIMEOUT]
        One plain TCP connection: sends MESSAGE + newline, half-closes, prints
        what came back (empty if the connection was refused or closed). Exit
        0 if an answer came, 1 if not.
    meshapp.py hold HOST PORT
        One long-lived connection: each line read from stdin is sent, and the
        answer line is printed (or "#closed" once the connection ended).
    meshapp.py steady HOST PORT SECONDS
        New connection after new connection for SECONDS (bounded also in
        count), each checked for the right answer; plus one long-lived
        connection exchanging a line every 200 ms. Prints a JSON summary.
    meshapp.py load SECONDS LONG TARGET [TARGET...] [--bulk=N]
        Rotation under load: LONG long-lived connections (spread over the
        TARGETs, HOST:PORT or [V6]:PORT) each exchanging random lines of
        64-2048 bytes continuously, checking every answer, plus a new
        connection every 50 ms (alternating TARGETs), for SECONDS. Bounded
        in time and in count. With --bulk=N the first N long-lived
        connections exchange lines of 32-128 KiB instead. Prints a JSON
        summary.
"""
import json
import random
import select
import socket
import sys
import threading
import time


def serve(name, ports):
    ls = []
    for port in ports:
        for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((addr, port))
            s.listen(128)
            ls.append(s)
    print(f"app.ready name={name} ports={ports}", flush=True)

    def handle(c, peer, port):
        f = c.makefile("rb")
        try:
            for line in f:
                c.sendall(b"%s:%d got %s from %s\n" % (name.encode(), port, line.strip(),
                                                       peer[0].encode()))
        except OSError:
            pass
        finally:
            c.close()

    while True:
        for s in select.select(ls, [], [])[0]:
            c, peer = s.accept()
            threading.Thread(target=handle, args=(c, peer, s.getsockname()[1]),
                             daemon=True).start()


def call(host, port, msg, timeout=5.0):
    try:
        with socket.create_connection((host, port), timeout=timeout) as c:
            c.sendall(msg.encode() + b"\n")
            c.shutdown(socket.SHUT_WR)
            data = b""
            while True:
                d = c.recv(4096)
                if not d:
                    break
                data += d
            return data.decode(errors="replace")
    except OSError as e:
        return f"#error {e}"


def hold(host, port):
    c = socket.create_connection((host, port), timeout=10)
    f = c.makefile("rb")
    print("hold.connected", flush=True)
    for line in sys.stdin:
        try:
            c.sendall(line.encode())
            answer = f.readline()
        except OSError:
            answer = b""
        print(answer.decode(errors="replace").strip() or "#closed", flush=True)


def steady(host, port, seconds):
    end = time.monotonic() + seconds
    ok = failed = 0
    errors = []
    long_ok = long_failed = 0
    long = socket.create_connection((host, port), timeout=5)
    lf = long.makefile("rb")
    i = 0
    while time.monotonic() < end and ok + failed < 5000:
        i += 1
        r = call(host, port, f"steady-{i}")
        if f"got steady-{i} from" in r:
            ok += 1
        else:
            failed += 1
            errors.append(r[:200])
        if i % 4 == 0:
            try:
                long.sendall(b"long-%d\n" % i)
                if b"got long-%d" % i in lf.readline():
                    long_ok += 1
                else:
                    long_failed += 1
            except OSError as e:
                long_failed += 1
                errors.append(f"long: {e}")
        time.sleep(0.05)
    long.close()
    print(json.dumps({"ok": ok, "failed": failed, "long_ok": long_ok,
                      "long_failed": long_failed, "errors": errors[:5]}), flush=True)


def _target(t):
    host, _, port = t.rpartition(":")
    return host.strip("[]"), int(port)


def load(seconds, n_long, targets, n_bulk=0):
    """See the module docstring: every failure is counted with its reason."""
    targets = [_target(t) for t in targets]
    stop = threading.Event()
    lock = threading.Lock()
    st = {"long_opened": 0, "long_done": 0, "long_rounds": 0, "long_bytes": 0,
          "new_ok": 0, "failed": 0, "errors": []}

    def fail(what):
        with lock:
            st["failed"] += 1
            if len(st["errors"]) < 20:
                st["errors"].append(what[:300])

    def exchange(f, c, rnd, tag, big=False):
        n = rnd.randint(16 << 10, 64 << 10) if big else rnd.randint(32, 1024)
        line = b"%s-%s" % (tag, rnd.randbytes(n).hex().encode())
        c.sendall(line + b"\n")
        got = f.readline()
        if not got.startswith(b"app@") or b" got %s from " % line not in got:
            raise AssertionError(f"answer {got[:80]!r}... to {line[:40]!r}...")
        return len(line)

    def end_cleanly(c, f):
        c.shutdown(socket.SHUT_WR)  # the server closes after EOF, with nothing more
        if f.read(1) != b"":
            raise AssertionError("bytes after half-close")

    def long_lived(i):
        rnd = random.Random(i)
        host, port = targets[i % len(targets)]
        try:
            c = socket.create_connection((host, port), timeout=15)
            f = c.makefile("rb")
            exchange(f, c, rnd, b"L%d" % i)
        except Exception as e:  # noqa: BLE001
            fail(f"long-lived #{i} open: {e!r}")
            return
        with lock:
            st["long_opened"] += 1
        try:
            rounds = 0
            while not stop.is_set() and rounds < 100000:
                n = exchange(f, c, rnd, b"L%d" % i, i < n_bulk)
                rounds += 1
                with lock:
                    st["long_rounds"] += 1
                    st["long_bytes"] += n
                stop.wait(0.025)
            end_cleanly(c, f)
            with lock:
                st["long_done"] += 1
        except Exception as e:  # noqa: BLE001
            fail(f"long-lived #{i}: {e!r}")
        finally:
            c.close()

    threads = [threading.Thread(target=long_lived, args=(i,), daemon=True) for i in range(n_long)]
    for t in threads:
        t.start()
    rnd = random.Random(12345)
    end = time.monotonic() + seconds
    k = 0
    while time.monotonic() < end and k < 100000:
        k += 1
        host, port = targets[k % len(targets)]
        try:
            with socket.create_connection((host, port), timeout=15) as c:
                f = c.makefile("rb")
                exchange(f, c, rnd, b"N%d" % k)
                end_cleanly(c, f)
            with lock:
                st["new_ok"] += 1
        except Exception as e:  # noqa: BLE001
            fail(f"new connection #{k} to {host}: {e!r}")
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(30)
    st["long_stuck"] = sum(t.is_alive() for t in threads)
    print(json.dumps(st), flush=True)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "serve":
        serve(sys.argv[2], [int(p) for p in sys.argv[3:]])
    elif cmd == "call":
        out = call(sys.argv[2], int(sys.argv[3]), sys.argv[4],
                   float(sys.argv[5]) if len(sys.argv) > 5 else 5.0)
        sys.stdout.write(out)
        sys.exit(0 if out and not out.startswith("#error") else 1)
    elif cmd == "hold":
        hold(sys.argv[2], int(sys.argv[3]))
    elif cmd == "steady":
        steady(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    elif cmd == "load":
        bulk = [int(a[7:]) for a in sys.argv[4:] if a.startswith("--bulk=")]
        load(float(sys.argv[2]), int(sys.argv[3]),
             [a for a in sys.argv[4:] if not a.startswith("--bulk=")], bulk[-1] if bulk else 0)
    else:
        sys.exit(f"unknown command {cmd}")
