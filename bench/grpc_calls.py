"""What grpcio itself costs a round trip on this machine: a unary call against one message
each way on an open bidirectional stream, between two processes (a threaded grpcio server
echoing bytes, no interceptors, no protobuf), back to back and with the client asleep
between round trips as an idle worker is. Prints wall time and each side's CPU per round
trip. The figure behind "a worker session stream" (issue 9, README's eighth round): what
moving a worker's calls onto one long-lived stream could save at most. Not part of the
test run; prints figures and asserts nothing.

    python bench/grpc_calls.py                       # 3,000 round trips back to back, 600 5 ms apart
    python bench/grpc_calls.py --gap-ms 2 --trips 1000
"""

from __future__ import annotations

import argparse
import queue
import resource
import subprocess
import sys
import time
from concurrent import futures

import grpc
from stack import free_port  # bench/ is on sys.path: run as `python bench/...`

SERVICE = "bench.Echo"
PAYLOAD = b"x" * 200  # about a one-job SettleAndLease


def _same(data: bytes) -> bytes:
    return data


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def serve(port: int) -> None:
    """The server process: echoes; answers each line on stdin with its CPU seconds so far."""

    def unary(request: bytes, _context) -> bytes:
        return request

    def bidi(requests, _context):
        yield from requests

    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, _same, _same),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi, _same, _same),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=10))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    for _line in sys.stdin:
        print(f"{_cpu_seconds():.6f}", flush=True)


def unary_trips(channel: grpc.Channel, trips: int, gap: float) -> float:
    """Seconds spent in the round trips (the sleeps left out)."""
    call = channel.unary_unary(f"/{SERVICE}/Unary", request_serializer=_same, response_deserializer=_same)
    spent = 0.0
    for _ in range(trips):
        started = time.perf_counter()
        call(PAYLOAD, timeout=10)
        spent += time.perf_counter() - started
        if gap:
            time.sleep(gap)
    return spent


def stream_trips(channel: grpc.Channel, trips: int, gap: float) -> float:
    """Seconds spent in the round trips (the sleeps left out)."""
    call = channel.stream_stream(f"/{SERVICE}/Bidi", request_serializer=_same, response_deserializer=_same)
    outgoing: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    replies = call(iter(outgoing.get, None), timeout=600)
    spent = 0.0
    for _ in range(trips):
        started = time.perf_counter()
        outgoing.put(PAYLOAD)
        next(replies)
        spent += time.perf_counter() - started
        if gap:
            time.sleep(gap)
    outgoing.put(None)
    replies.cancel()
    return spent


def main() -> None:
    args = parse_args()
    if args.serve:
        serve(args.serve)
        return
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        server.stdout.readline()
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=10)
        for gap_ms, trips in ((0.0, args.trips), (args.gap_ms, args.trips // 5)):
            for name, run in (("unary call", unary_trips), ("stream message", stream_trips)) * 2:
                wall, client, server_cpu = _measure(server, run, channel, trips, gap_ms)
                print(
                    f"{name:14s} {gap_ms:3g} ms apart: wall {1000 * wall / trips:.3f} ms a round trip,"
                    f" client CPU {1000 * client / trips:.3f} ms, server CPU {1000 * server_cpu / trips:.3f} ms"
                )
        channel.close()
    finally:
        server.kill()


def _measure(server: subprocess.Popen, run, channel: grpc.Channel, trips: int, gap_ms: float):
    """Seconds in the round trips, and the client's and the server's CPU seconds meanwhile."""
    server_before, client_before = _server_cpu(server), _cpu_seconds()
    wall = run(channel, trips, gap_ms / 1000)
    return wall, _cpu_seconds() - client_before, _server_cpu(server) - server_before


def _server_cpu(server: subprocess.Popen) -> float:
    server.stdin.write("\n")
    server.stdin.flush()
    return float(server.stdout.readline())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trips", type=int, default=3000, help="round trips back to back (a fifth of it apart)")
    parser.add_argument("--gap-ms", type=float, default=5.0, help="the client's sleep between round trips")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    main()
