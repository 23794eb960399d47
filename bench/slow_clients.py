"""Slow HTTP clients against `quorra web`: availability and latency of normal requests
while N sockets trickle their requests in (slowloris).

    python -m bench.slow_clients                       # N = 16, 50, 100, 200; 20 s each
    python -m bench.slow_clients --sockets 100 --seconds 30 --url http://127.0.0.1:8080

Half the slow sockets send a request head one header line every --interval seconds (and
never finish it), the other half send a complete head announcing a 1 KiB body and then
one body byte every --interval seconds. A socket the server closes is opened again at
once, as an attacker would. Meanwhile --probes threads send normal requests
(GET /v1/jobs/{id}, a new connection each, 5 s timeout) one after another, and the
table reports the share answered 200 and their latency. Loopback only; every run is
bounded by --seconds.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from dataclasses import dataclass, field

import requests

from bench.web_stack import AUTH, percentile, web_server

PROBE_TIMEOUT_SECONDS = 5.0


@dataclass
class Probes:
    ok: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, ok: bool, seconds: float) -> None:
        with self.lock:
            if ok:
                self.ok += 1
                self.latencies.append(seconds)
            else:
                self.failed += 1


class SlowSockets:
    """N sockets, each kept in the middle of a request, one more byte or line per interval."""

    def __init__(self, host: str, port: int, count: int):
        self.address = (host, port)
        self.count = count
        self.sockets: list[tuple[socket.socket, bool]] = []
        self.closed_by_server = 0

    def open_all(self) -> None:
        self.sockets = [self._open(index % 2 == 1) for index in range(self.count)]

    def _open(self, body_mode: bool) -> tuple[socket.socket, bool]:
        sock = socket.create_connection(self.address, timeout=5)
        if body_mode:
            head = "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            sock.sendall(f"{head}X-API-Key: {AUTH['X-API-Key']}\r\nContent-Length: 1024\r\n\r\n{{".encode())
        else:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        return sock, body_mode

    def trickle(self) -> None:
        for index, (sock, body_mode) in enumerate(self.sockets):
            try:
                sock.sendall(b" " if body_mode else b"X-Slow: 1\r\n")
            except OSError:
                self.closed_by_server += 1
                sock.close()
                self.sockets[index] = self._open(body_mode)

    def close_all(self) -> None:
        for sock, _ in self.sockets:
            sock.close()


def probe(base: str, job_id: str, probes: Probes, until: float) -> None:
    while time.monotonic() < until:
        started = time.perf_counter()
        try:
            ok = requests.get(f"{base}/v1/jobs/{job_id}", headers=AUTH, timeout=PROBE_TIMEOUT_SECONDS).ok
        except requests.RequestException:
            ok = False
        probes.note(ok, time.perf_counter() - started)
        if not ok:
            time.sleep(0.05)


def run(base: str, count: int, seconds: float, interval: float, probe_threads: int) -> dict[str, float]:
    job_id = requests.post(f"{base}/v1/jobs", json={"type": "bench", "payload": {}}, headers=AUTH).json()["id"]
    host, port = base.removeprefix("http://").rsplit(":", 1)
    slow = SlowSockets(host, int(port), count)
    slow.open_all()
    time.sleep(1.0)  # let the slow sockets settle in before measuring
    probes = Probes()
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=probe, args=(base, job_id, probes, until)) for _ in range(probe_threads)]
    for thread in threads:
        thread.start()
    while time.monotonic() < until:
        time.sleep(min(interval, max(0.0, until - time.monotonic())))
        slow.trickle()
    for thread in threads:
        thread.join()
    slow.close_all()
    total = probes.ok + probes.failed
    return {
        "sockets": count,
        "available": 100.0 * probes.ok / total if total else 0.0,
        "requests": total,
        "p50_ms": 1000 * percentile(probes.latencies, 0.50),
        "p99_ms": 1000 * percentile(probes.latencies, 0.99),
        "reopened": slow.closed_by_server,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="measure this running server instead of starting one")
    parser.add_argument("--sockets", type=int, nargs="+", default=[16, 50, 100, 200])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between two bytes of a slow socket")
    parser.add_argument("--probes", type=int, default=4, help="threads sending normal requests")
    args = parser.parse_args()
    print(f"{'slow sockets':>12} {'available':>10} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8} {'reopened':>9}")
    with web_server(args.url) as base:
        for count in args.sockets:
            row = run(base, count, args.seconds, args.interval, args.probes)
            print(
                f"{row['sockets']:>12} {row['available']:>9.1f}% {row['requests']:>9} "
                f"{row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['reopened']:>9}",
                flush=True,
            )
            time.sleep(2.0)  # the previous round's sockets are closed; let the server see it


if __name__ == "__main__":
    main()
