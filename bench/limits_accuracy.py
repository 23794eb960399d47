"""Rate and concurrency limits on the real stack (issue 14 §4): how closely a fleet of
workers keeps to them, and what the limited lease path costs when its limit does not bind.

    python bench/limits_accuracy.py                      # PostgreSQL + Redis, 8 workers
    python bench/limits_accuracy.py --workers 4 --no-redis

    in-flight   max_in_flight 3 and 20; jobs of 50 ms; the jobs leased or processing,
                sampled from the database every few ms while the workers drain the queue
    rate        50/s and 200/s; instant jobs; starts per whole second (from leased_at),
                the first second left out (it holds the bucket's burst)
    unbound     20,000 instant jobs with max_in_flight 1,000,000 (every lease takes the
                limited path, nothing is refused) against the same jobs unlimited

The stack is bench/stack.py's (quorra web, grpc and scheduler, `quorra-worker` processes
with bench/noop_handlers.py); limits are set through PUT /v1/queues/{queue}/limits.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests
from run import DEFAULT_PG
from sqlalchemy import text
from stack import API_KEY, Stack, running_stack, stop_processes
from workloads import enqueue_batches, wait_all_succeeded

AUTH = {"X-API-Key": API_KEY}
IN_FLIGHT = "SELECT count(*) FROM jobs WHERE queue = :queue AND status IN ('leased', 'processing')"


def set_limits(stack: Stack, queue: str, limits: dict) -> None:
    response = requests.put(f"{stack.base_url}/v1/queues/{queue}/limits", json=limits, headers=AUTH, timeout=10)
    response.raise_for_status()


def submit(stack: Stack, queue: str, count: int, job_type: str, payload: dict) -> None:
    for first in range(0, count, 1000):
        jobs = [{"type": job_type, "queue": queue, "payload": payload}] * min(1000, count - first)
        response = requests.post(f"{stack.base_url}/v1/jobs/batch", json={"jobs": jobs}, headers=AUTH, timeout=60)
        response.raise_for_status()


def drained(stack: Stack, queue: str, workers: int, count: int, fill, max_jobs: int = 4) -> float:
    """Start `workers` worker processes on `queue` and wait until they all wait for jobs;
    then `fill()` the queue with `count` jobs and wait until they succeeded: the seconds
    from the fill to the last."""
    with tempfile.TemporaryDirectory(prefix="quorra-bench-limits-") as records:
        processes = stack.start_workers(workers, queue, Path(records), max_jobs)
        try:
            wait_workers_seen(stack, queue, workers)
            started = time.time()
            fill()
            finished = wait_all_succeeded(stack, queue, count)
        finally:
            stop_processes(processes)
    return finished - started


def wait_workers_seen(stack: Stack, queue: str, count: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        listed = requests.get(f"{stack.base_url}/v1/workers?minutes=1", headers=AUTH, timeout=10).json()["workers"]
        if sum(queue in worker["queues"] for worker in listed) >= count:
            return
        time.sleep(0.2)
    raise RuntimeError(f"fewer than {count} workers of {queue} started in 120 s")


def in_flight_run(stack: Stack, workers: int, cap: int, count: int) -> dict[str, float]:
    queue = f"capped-{cap}"
    set_limits(stack, queue, {"max_in_flight": cap})
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        with stack.database.connect() as conn:
            while not done.is_set():
                samples.append(conn.execute(text(IN_FLIGHT), {"queue": queue}).scalar_one())
                conn.commit()
                time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    seconds = drained(
        stack, queue, workers, count, lambda: submit(stack, queue, count, "bench.sleep", {"seconds": 0.05})
    )
    done.set()
    sampler.join()
    busy = [n for n in samples if n > 0]
    return {
        "limit": cap,
        "samples": len(samples),
        "max_seen": max(samples),
        "at_limit_percent": 100 * sum(n == cap for n in busy) / len(busy),
        "jobs_per_s": count / seconds,
        "ideal_jobs_per_s": cap / 0.05,
    }


def rate_run(stack: Stack, workers: int, per_second: int, seconds: int) -> dict[str, float]:
    queue = f"paced-{per_second}"
    set_limits(stack, queue, {"rate": {"limit": per_second, "per": "second"}})
    count = per_second * seconds
    drained(stack, queue, workers, count, lambda: submit(stack, queue, count, "bench.noop", {}))
    with stack.database.connect() as conn:
        starts = conn.execute(text("SELECT leased_at FROM jobs WHERE queue = :queue"), {"queue": queue}).scalars()
        starts = sorted(starts)
    per = Counter(int((at - starts[0]).total_seconds()) for at in starts)
    whole = [per[second] for second in range(1, max(per))]
    return {
        "limit_per_s": per_second,
        "whole_seconds": len(whole),
        "mean_per_s": statistics.mean(whole),
        "min_per_s": min(whole),
        "max_per_s": max(whole),
        "worst_error_percent": 100 * max(abs(n - per_second) for n in whole) / per_second,
        "first_second": per[0],
    }


def unbound_run(stack: Stack, workers: int, count: int) -> dict[str, float]:
    figures = {}
    for queue, limits in (("unlimited", None), ("unbound", {"max_in_flight": 1_000_000})):
        if limits:
            set_limits(stack, queue, limits)
        fill = lambda queue=queue: enqueue_batches(stack, queue, count, 4)
        figures[f"{queue}_jobs_per_s"] = count / drained(stack, queue, workers, count, fill, max_jobs=10)
    figures["limited_path_percent"] = 100 * figures["unbound_jobs_per_s"] / figures["unlimited_jobs_per_s"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--workers", type=int, default=8)
    options = parser.parse_args()
    with running_stack(options.pg_url, None if options.no_redis else options.redis_url) as stack:
        for cap in (3, 20):
            print("in-flight", in_flight_run(stack, options.workers, cap, 40 * cap), flush=True)
        for per_second in (50, 200):
            print("rate", rate_run(stack, options.workers, per_second, 8), flush=True)
        print("unbound", unbound_run(stack, 2, 20_000), flush=True)


if __name__ == "__main__":
    main()
