"""A misbehaving control plane for fault-injection tests: a real gRPC server
(Debian python3-grpcio, generic handlers, built like
tests/integration/grpc/grpc_server.py on tests/lib/fakegrpc.py) serving
seam.v1.ConfigDiscovery/StreamConfig, whose behaviour follows a JSON file
re-read every 50 ms:

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
import os
import sys
import time

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lib"))
import fakegrpc  # noqa: E402

from seam.v1 import config_pb2  # noqa: E402

ARGS = None
event = None  # fakegrpc.EventLog(--events, stamp=True), set by main()


def read_config():
    return fakegrpc.read_json(ARGS.config)


def snapshot(cfg, nonce):
    with open(ARGS.ca_cert) as f:
        root = f.read()
    data = fakegrpc.config_snapshot(config_pb2, root, cfg, nonce).SerializeToString()
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
    done = fakegrpc.read_acks(request_iterator, event)
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


def main():
    global ARGS, event
    ARGS = fakegrpc.arg_parser().parse_args()
    event = fakegrpc.EventLog(ARGS.events, stamp=True)
    cfg = fakegrpc.stream_service("seam.v1.ConfigDiscovery", "StreamConfig",
                                  stream_config, config_pb2.ConfigRequest)
    server, _ = fakegrpc.serve_tls((cfg,), ARGS.cert, ARGS.key, ARGS.port, workers=8,
                                   options=[("grpc.max_send_message_length", 64 << 20)])
    print(f"fake control plane listening on 127.0.0.1:{ARGS.port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    sys.exit(main())
