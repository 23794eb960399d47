"""Many concurrent keep-alive clients against `quorra web`: what share is served, refused
(503 + Retry-After) or left to time out, and how soon /healthz answers once they stop.

    python -m bench.overload                          # 256, 1024, 2000 clients; 15 s each
    python -m bench.overload --clients 1024 --seconds 20 --url http://127.0.0.1:8080

Each client is one keep-alive connection (asyncio, raw HTTP/1.1) sending GET /v1/jobs/{id}
one after another with a 10 s timeout; after a 503 it waits Retry-After, as a polite
client does (--ignore-retry-after: at once), and reconnects whenever the server closed.
When the time is up every client stops at once and /healthz is polled every 50 ms: the
recovery time is until its first 200. Loopback only; bounded in clients and in time.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field

import requests

from bench.web_stack import AUTH, percentile, web_server

REQUEST_TIMEOUT_SECONDS = 10.0


@dataclass
class Tally:
    ok: int = 0
    refused: int = 0
    timed_out: int = 0
    failed: int = 0
    ok_latencies: list[float] = field(default_factory=list)
    refused_latencies: list[float] = field(default_factory=list)


class Client:
    def __init__(self, host: str, port: int, path: str, tally: Tally, polite: bool):
        self.address = (host, port)
        self.request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {AUTH['X-API-Key']}\r\n\r\n".encode()
        self.tally = tally
        self.polite = polite
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def run(self, until: float) -> None:
        while time.monotonic() < until:
            started = time.perf_counter()
            try:
                status, retry_after = await asyncio.wait_for(self._exchange(), REQUEST_TIMEOUT_SECONDS)
            except TimeoutError:
                self.tally.timed_out += 1
                await self._close()
                continue
            except (OSError, asyncio.IncompleteReadError, ValueError):
                self.tally.failed += 1
                await self._close()
                await asyncio.sleep(0.1)
                continue
            await self._note(status, retry_after, time.perf_counter() - started)

    async def _note(self, status: int, retry_after: float, seconds: float) -> None:
        if status == 200:
            self.tally.ok += 1
            self.tally.ok_latencies.append(seconds)
        elif status == 503:
            self.tally.refused += 1
            self.tally.refused_latencies.append(seconds)
            if self.polite:
                await asyncio.sleep(retry_after)
        else:
            self.tally.failed += 1

    async def _exchange(self) -> tuple[int, float]:
        if self.streams is None:
            self.streams = await asyncio.open_connection(*self.address)
        reader, writer = self.streams
        writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        await reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self._close()
        return int(lines[0].split()[1]), float(headers.get("retry-after", "0"))

    async def _close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def load(base: str, path: str, clients: int, seconds: float, polite: bool) -> Tally:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    tally = Tally()
    until = time.monotonic() + seconds
    members = [Client(host, int(port), path, tally, polite) for _ in range(clients)]
    await asyncio.gather(*(member.run(until) for member in members))
    for member in members:
        await member._close()
    return tally


def recovery_seconds(base: str, limit: float = 60.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        try:
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                return time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(0.05)
    return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="measure this running server instead of starting one")
    parser.add_argument("--clients", type=int, nargs="+", default=[256, 1024, 2000])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--ignore-retry-after", action="store_true")
    args = parser.parse_args()
    print(
        f"{'clients':>7} {'requests':>9} {'served':>7} {'503':>6} {'timeout':>8} {'error':>6} "
        f"{'req/s':>7} {'200 p50/p99 ms':>15} {'503 p50 ms':>10} {'recovery s':>10}"
    )
    with web_server(args.url) as base:
        job_id = requests.post(f"{base}/v1/jobs", json={"type": "bench", "payload": {}}, headers=AUTH).json()["id"]
        for clients in args.clients:
            tally = asyncio.run(load(base, f"/v1/jobs/{job_id}", clients, args.seconds, not args.ignore_retry_after))
            recovery = recovery_seconds(base)
            total = tally.ok + tally.refused + tally.timed_out + tally.failed
            ok_ms = (
                f"{1000 * percentile(tally.ok_latencies, 0.5):.0f}/{1000 * percentile(tally.ok_latencies, 0.99):.0f}"
            )
            print(
                f"{clients:>7} {total:>9} {100 * tally.ok / max(total, 1):>6.1f}% {tally.refused:>6} "
                f"{tally.timed_out:>8} {tally.failed:>6} {tally.ok / args.seconds:>7.0f} {ok_ms:>15} "
                f"{1000 * percentile(tally.refused_latencies, 0.5):>10.1f} {recovery:>10.2f}",
                flush=True,
            )
            time.sleep(2.0)


if __name__ == "__main__":
    main()
