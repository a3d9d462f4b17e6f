"""A misbehaving control plane for fault-injection tests: a real gRPC server
(Debian python3-grpcio, generic handlers, adapted from
tests/integration/grpc/grpc_server.py) serving seam.v1.ConfigDiscovery/
StreamConfig, whose behaviour follows a JSON file re-read every 50 ms:

  {"version": "v1",      snapshot version; a change pushes a new snapshot
   "bad": false,         an invalid allow pattern (must be NACKed)
   "garbage": false,     bytes that do not parse as a ConfigResponse
   "huge": 0,            MiB of padding in one message (oversized)
   "abort": false,       end the stream with UNAVAILABLE mid-stream
   "die": false,         the process exits (mid-stream, no goodbye)
   "delay": 0}           seconds to sleep before the first message (slow)

Run with Debian's /usr/bin/python3 and the protoc --python_out modules on
PYTHONPATH:  fake_cp.py --port P --cert C --key K --ca-cert CA --events FILE --config FILE
Events (one JSON per line): node, ack, nack (with the version the client
reports, i.e. the one still in force)."""
import argparse
import json
import os
import sys
import threading
import time
from concurrent import futures

import grpc

from seam.v1 import config_pb2

LOCK = threading.Lock()
ARGS = None


def event(**kw):
    kw["t"] = time.time()
    with LOCK, open(ARGS.events, "a") as f:
        f.write(json.dumps(kw) + "\n")


def read_config():
    try:
        with open(ARGS.config) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def snapshot(cfg, nonce):
    with open(ARGS.ca_cert) as f:
        root = f.read()
    r = config_pb2.ConfigResponse(version_info=cfg["version"], nonce=nonce)
    s = r.snapshot
    s.trust_bundle.roots.append(root)
    s.trust_bundle.trust_domain = "cluster.local"
    p = s.inbound_ports.add(port=8080, mode=config_pb2.STRICT)
    p.allow.append("spiffe://cluster.local/ns/default/*")
    if cfg.get("bad"):
        p.allow.append("spiffe://cluster.local/*/broken")
    svc = s.services.add(name="web.default", port=80)
    svc.endpoints.add(address="127.0.0.1", port=8080,
                      spiffe_id="spiffe://cluster.local/ns/default/sa/web")
    s.outbound_policy = config_pb2.REGISTRY_ONLY
    s.cert_ttl_seconds = 3600
    data = r.SerializeToString()
    if cfg.get("huge"):
        # Unknown field 1000 (length-delimited): valid protobuf, just oversized.
        n = int(cfg["huge"]) << 20
        tag = bytes([0xc2, 0x3e])  # field 1000, wire type 2
        ln = bytearray()
        v = n
        while True:
            b = v & 0x7F
            v >>= 7
            ln.append(b | (0x80 if v else 0))
            if not v:
                break
        data += tag + bytes(ln) + b"\0" * n
    return data


def stream_config(request_iterator, context):
    first = next(request_iterator)
    event(type="node", node=first.node.id, version=first.version_info)
    done = threading.Event()

    def reader():
        try:
            for r in request_iterator:
                if r.error_detail.message:
                    event(type="nack", version=r.version_info, nonce=r.response_nonce,
                          error=r.error_detail.message)
                else:
                    event(type="ack", version=r.version_info, nonce=r.response_nonce)
        except Exception:  # noqa: BLE001 - stream cancelled
            pass
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    sent = None
    n = 0
    first_msg = True
    while not done.is_set() and context.is_active():
        cfg = read_config()
        if cfg is not None and cfg != sent:
            if first_msg and cfg.get("delay"):
                time.sleep(float(cfg["delay"]))
            first_msg = False
            n += 1
            sent = cfg
            if cfg.get("die"):
                event(type="die")
                os._exit(3)
            if cfg.get("abort"):
                event(type="abort")
                context.abort(grpc.StatusCode.UNAVAILABLE, "fault injection: stream aborted")
            if cfg.get("garbage"):
                event(type="garbage")
                yield b"\x0a\xff\xff\xff\xff\xff\x01garbage"
                continue
            yield snapshot(cfg, f"nonce-{n}")
        time.sleep(0.05)


def passthrough(x):
    return x


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--ca-cert", required=True)
    ap.add_argument("--events", required=True)
    ap.add_argument("--config", required=True)
    ARGS = ap.parse_args()
    cfg = grpc.method_handlers_generic_handler("seam.v1.ConfigDiscovery", {
        "StreamConfig": grpc.stream_stream_rpc_method_handler(
            stream_config,
            request_deserializer=config_pb2.ConfigRequest.FromString,
            response_serializer=passthrough),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         options=[("grpc.so_reuseport", 0),
                                  ("grpc.max_send_message_length", 64 << 20)])
    server.add_generic_rpc_handlers((cfg,))
    with open(ARGS.key, "rb") as f:
        key = f.read()
    with open(ARGS.cert, "rb") as f:
        cert = f.read()
    server.add_secure_port(f"127.0.0.1:{ARGS.port}", grpc.ssl_server_credentials([(key, cert)]))
    server.start()
    print(f"fake control plane listening on 127.0.0.1:{ARGS.port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    sys.exit(main())
