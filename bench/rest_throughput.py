"""Single-request REST throughput: POST /v1/jobs and GET /v1/jobs/{id} at 32 concurrent
keep-alive clients against `quorra web` with its default settings on PostgreSQL.

    python -m bench.rest_throughput                   # 10 s of each, 32 clients
    python -m bench.rest_throughput --clients 32 --seconds 20 --url http://127.0.0.1:8080

The clients are asyncio connections speaking raw HTTP/1.1 (so the client costs little of
the machine's CPU), each sending its next request as soon as the answer is in. Prints
requests/s and p50/p99 latency per operation. Loopback only; bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import requests

from bench.web_stack import AUTH, percentile, web_server

SUBMIT_BODY = json.dumps({"type": "bench", "payload": {"n": 1}}).encode()


def build_request(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nX-API-Key: {AUTH['X-API-Key']}\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


async def client(host: str, port: int, request: bytes, until: float, latencies: list[float], errors: list[int]):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < until:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(v) for k, _, v in (h.partition(b":") for h in head.split(b"\r\n")) if k.lower() == b"content-length"
            )
            await reader.readexactly(length)
            status = int(head.split(b" ", 2)[1])
            if status in (200, 201):
                latencies.append(time.perf_counter() - started)
            else:
                errors.append(status)
    finally:
        writer.close()


async def measure(base: str, request: bytes, clients: int, seconds: float) -> tuple[list[float], list[int]]:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    latencies: list[float] = []
    errors: list[int] = []
    until = time.monotonic() + seconds
    await asyncio.gather(*(client(host, int(port), request, until, latencies, errors) for _ in range(clients)))
    return latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="measure this running server instead of starting one")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(f"{'operation':<18} {'requests/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    with web_server(args.url) as base:
        job_id = requests.post(f"{base}/v1/jobs", json={"type": "bench", "payload": {}}, headers=AUTH).json()["id"]
        operations = {
            "POST /v1/jobs": build_request("POST", "/v1/jobs", SUBMIT_BODY),
            "GET /v1/jobs/{id}": build_request("GET", f"/v1/jobs/{job_id}"),
        }
        for name, request in operations.items():
            latencies, errors = asyncio.run(measure(base, request, args.clients, args.seconds))
            print(
                f"{name:<18} {len(latencies) / args.seconds:>10.0f} {1000 * percentile(latencies, 0.5):>8.1f} "
                f"{1000 * percentile(latencies, 0.99):>8.1f} {len(errors):>7}",
                flush=True,
            )


if __name__ == "__main__":
    main()
