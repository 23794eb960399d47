"""What sets W2's floor on this machine (issue 9): how submit -> handler start moves with the
submit rate, and what one store call costs when its process has slept between calls.

1. A byte through a chain of idle processes (loopback TCP, each passing it on), back to
   back and 5 ms apart: what waking a process costs by itself.
2. One `Store.submit_many` of one job, in this process against a throwaway PostgreSQL
   database: back to back, then with a sleep between calls as long as the gap between W2's
   jobs at a given rate. Prints wall time and this thread's CPU per call.
3. The bench's W2 on one stack (bench/stack.py: web, gRPC server, scheduler, 2 idle workers)
   at each rate given: p50/p95/p99, the split, the share of the machine's CPU that was busy,
   and that busy time per job (every process on the machine, the client included).

A queue that only got slower with load would be waiting for a core; here the lone job is the
slowest (README, "The eighth round of issue 9"). Not part of the test run; prints figures and
asserts nothing.

    python bench/w2_floor.py                              # rates 20,50,100,200; 2 runs each
    python bench/w2_floor.py --rates 10,200 --runs 3 --no-redis
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

from lease_throughput import throwaway_postgres  # bench/ is on sys.path: run as `python bench/...`
from stack import running_stack
from workloads import Bench, IdleWorkers, Sizes, w2_run

from quorra import migrate
from quorra.jobs import JobSpec
from quorra.store import Store

DEFAULT_POSTGRES = os.environ.get("QUORRA_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SUBMITS = 600
HOPS = 5  # processes a W2 job wakes: web, its session, Redis, the gRPC server (and its session), a worker
TRIPS = 1000


def main() -> None:
    args = parse_args()
    rates = [float(rate) for rate in args.rates.split(",")]
    byte_through_idle_processes(gaps_ms=[0.0, 5.0])
    store_call_after_sleep(args.pg_url, gaps_ms=[0.0, 1000 / max(rates), 1000 / min(rates)])
    w2_by_rate(args.pg_url, None if args.no_redis else args.redis_url, rates, args.runs)


def byte_through_idle_processes(gaps_ms: list[float]) -> None:
    print(f"A byte through {HOPS} processes in a chain (loopback TCP), {TRIPS} times:")
    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(HOPS + 1)]
    children = [_relay(listeners[n], listeners[n + 1]) for n in range(HOPS)]
    first = socket.create_connection(listeners[0].getsockname())
    first.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    last = listeners[HOPS].accept()[0]
    for gap_ms in gaps_ms:
        trips = []
        for _ in range(TRIPS):
            started = time.perf_counter()
            first.sendall(b"x")
            last.recv(1)
            trips.append((time.perf_counter() - started) * 1000)
            time.sleep(gap_ms / 1000)
        trips.sort()
        print(f"  {gap_ms:5.1f} ms apart: p50 {statistics.median(trips):.3f} ms, p90 {trips[int(TRIPS * 0.9)]:.3f} ms")
    first.close()
    for child in children:
        os.waitpid(child, 0)


def _relay(inbound: socket.socket, outbound: socket.socket) -> int:
    """A child process passing on every byte from `inbound`'s connection to `outbound`."""
    child = os.fork()
    if child:
        return child
    source = inbound.accept()[0]
    sink = socket.create_connection(outbound.getsockname())
    sink.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := source.recv(64):
        sink.sendall(data)
    os._exit(0)


def store_call_after_sleep(pg_url: str, gaps_ms: list[float]) -> None:
    print(f"Store.submit_many of one job, {SUBMITS} calls, in this process:")
    with throwaway_postgres(pg_url) as url:
        store = Store.from_url(url)
        migrate.upgrade(store.engine)
        try:
            for gap_ms in dict.fromkeys(gaps_ms):
                walls, cpu_ms = _timed_submits(store, gap_ms / 1000)
                print(
                    f"  {gap_ms:5.1f} ms asleep between calls: wall p50 {statistics.median(walls):.3f} ms,"
                    f" p90 {walls[int(len(walls) * 0.9)]:.3f} ms; CPU {cpu_ms:.3f} ms a call"
                )
        finally:
            store.engine.dispose()


def _timed_submits(store: Store, gap: float) -> tuple[list[float], float]:
    walls = []
    cpu_before = time.thread_time()
    for n in range(SUBMITS):
        started = time.perf_counter()
        store.submit_many([JobSpec(type="bench", payload={"n": n}, queue="floor")])
        walls.append((time.perf_counter() - started) * 1000)
        if gap:
            time.sleep(gap)
    cpu_ms = (time.thread_time() - cpu_before) * 1000 / SUBMITS
    return sorted(walls), cpu_ms


def w2_by_rate(pg_url: str, redis_url: str | None, rates: list[float], runs: int) -> None:
    print(f"W2 on one stack ({'Redis' if redis_url else 'LISTEN/NOTIFY'} wake-ups), {runs} runs a rate:")
    cores = os.cpu_count() or 1
    with running_stack(pg_url, redis_url) as stack:
        for rate in rates:
            bench = Bench(stack, Sizes(w2_jobs=int(min(2000, rate * 10)), w2_rate=rate))
            with IdleWorkers(bench, f"floor-{rate:g}") as idle:
                for _ in range(runs):
                    figures = w2_run(bench, idle)
                    busy_ms = figures["machine_busy_pct"] / 100 * cores * 1000 / figures["submit_rate_per_s"]
                    print(
                        f"  {rate:5g}/s: p50 {figures['start_p50_ms']:.2f}, p95 {figures['start_p95_ms']:.2f},"
                        f" p99 {figures['start_p99_ms']:.2f} ms; split {figures['submit_to_insert_p50_ms']:.2f}"
                        f" / {figures['insert_to_lease_p50_ms']:.2f} / {figures['lease_to_start_p50_ms']:.2f} ms;"
                        f" machine {figures['machine_busy_pct']:.0f} % busy, {busy_ms:.1f} ms of CPU a job",
                        flush=True,
                    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="20,50,100,200", help="W2 submit rates, jobs/s (comma list)")
    parser.add_argument("--runs", type=int, default=2, help="W2 runs at each rate")
    parser.add_argument("--pg-url", default=DEFAULT_POSTGRES)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--no-redis", action="store_true", help="wake-ups by LISTEN/NOTIFY")
    return parser.parse_args()


if __name__ == "__main__":
    main()
