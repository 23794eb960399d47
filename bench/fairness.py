"""Fair scheduling (issue 14 §3): tenant A's backlog must not starve tenant B's trickle.

On PostgreSQL, in a throwaway database this script creates and drops, fleet workers lease
every tenant's jobs of queue "work" while tenant B submits --rate jobs/s into it:

    B alone        before any backlog: B's submit -> start on idle workers
    A + B          with A's --backlog jobs (all older than B's) waiting
    A alone        A's backlog only: A's throughput without B

"A + B" and "A alone" alternate for --rounds rounds on the same backlog (what a round takes
from it is small), so that a busy machine slows both alike; the table gives their medians.
It prints B's submit -> start (lease) p50/p99, A's jobs/s, and the fleet lease's own time
(p50/p99) at that backlog. Optionally (--small-tenants N) N more tenants with 20 jobs each
in "work": a fleet lease then walks N + 2 partitions.

The workers are threads of this process calling the store's verbs, as the gRPC server does
for a worker (lease_jobs(tenant="*"), then settle_many of the batch), so the figures are the
lease's, without the network and the worker SDK. B submits through the store's enqueue with
its tenant (what POST /v1/jobs with B's key calls); A's backlog is written with INSERT ...
SELECT.

    python bench/fairness.py                              # 1,000,000 backlog, 2 workers, 3 rounds of 20 s
    python bench/fairness.py --backlog 200000 --seconds 10 --small-tenants 200
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import text

from quorra import migrate
from quorra.access import ALL_TENANTS
from quorra.jobs import JobSpec
from quorra.schema import jobs
from quorra.store import Settlement, Store

sys.path.insert(0, os.path.dirname(__file__))
from lease_throughput import DEFAULT_POSTGRES, throwaway_postgres
from workloads import percentile

QUEUE = "work"
TTL_SECONDS = 300
IDLE_SLEEP_SECONDS = 0.005  # an empty lease: the gRPC server would wait for a wake-up


@dataclass
class Run:
    """What one run saw: B's submit and start times, A's jobs done, every lease's time."""

    submitted: dict[str, float] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    a_done: int = 0
    lease_seconds: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def main() -> None:
    options = parse_args()
    logging.disable(logging.INFO)
    print(
        f"backlog {options.backlog:,} jobs of A, B at {options.rate}/s, {options.workers} fleet workers,"
        f" max_jobs {options.max_jobs}, {options.rounds} rounds of {options.seconds} s, {options.small_tenants}"
        " small tenants"
    )
    with throwaway_postgres(options.postgres) as url, opened(url, options.workers + 2) as store:
        figures = {"B alone": [measure(store, options, with_b=True)]}
        fill(store, options.backlog, options.small_tenants)
        for _ in range(options.rounds):
            for name, with_b in (("A + B", True), ("A alone", False)):
                figures.setdefault(name, []).append(measure(store, options, with_b=with_b))
    print_table({name: medians(runs) for name, runs in figures.items()})


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=1_000_000, help="tenant A's waiting jobs")
    parser.add_argument("--rate", type=float, default=10.0, help="tenant B's submits per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of 'A + B' and of 'A alone', alternating")
    parser.add_argument("--workers", type=int, default=2, help="fleet worker threads")
    parser.add_argument("--max-jobs", type=int, default=10, help="jobs per lease")
    parser.add_argument("--small-tenants", type=int, default=0, help="more tenants with 20 waiting jobs each")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("QUORRA_BENCH_DATABASE_URL", DEFAULT_POSTGRES),
        help="a PostgreSQL server URL (the benchmark creates its own database there)",
    )
    return parser.parse_args()


def measure(store: Store, options: argparse.Namespace, *, with_b: bool) -> dict[str, float]:
    run, stop = Run(), threading.Event()
    threads = [threading.Thread(target=work, args=(store, options.max_jobs, run, stop)) for _ in range(options.workers)]
    if with_b:
        threads.append(threading.Thread(target=submit_b, args=(store, options.rate, run, stop)))
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(options.seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return figures_of(run, time.perf_counter() - started)


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


@contextmanager
def opened(url: str, pool_size: int) -> Iterator[Store]:
    store = Store.from_url(url, pool_size=pool_size)
    try:
        migrate.upgrade(store.engine)
        yield store
    finally:
        store.close()


def fill(store: Store, backlog: int, small_tenants: int) -> None:
    """A's backlog, an hour old and older (so every one of A's jobs is older than B's), then
    the small tenants' jobs; indexes rebuilt after, then VACUUM ANALYZE."""
    started = time.perf_counter()
    with store.engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_jobs_ready"))
        for tenant, count in [("A", backlog), *((f"s{n:04}", 20) for n in range(small_tenants))]:
            conn.execute(
                text(
                    "INSERT INTO jobs (id, tenant, type, queue, payload, priority, status, attempts, max_retries,"
                    " run_at, created_at, updated_at)"
                    " SELECT gen_random_uuid(), :tenant, 'noop', :queue, '{}', 0, 'pending', 0, 3,"
                    " now() - interval '1 hour' - n * interval '1 millisecond', now(), now()"
                    " FROM generate_series(1, :count) AS g(n)"
                ),
                {"tenant": tenant, "queue": QUEUE, "count": count},
            )
        [ready_index] = [index for index in jobs.indexes if index.name == "ix_jobs_ready"]
        ready_index.create(conn)
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE jobs"))
    if backlog or small_tenants:
        print(f"  filled {backlog + 20 * small_tenants:,} jobs in {time.perf_counter() - started:.1f} s", flush=True)


def work(store: Store, max_jobs: int, run: Run, stop: threading.Event) -> None:
    """A fleet worker: lease every tenant's jobs of QUEUE, note when B's started, ack all."""
    worker_id = f"fleet-{threading.get_ident()}"
    while not stop.is_set():
        began = time.perf_counter()
        leased = store.lease_jobs([QUEUE], worker_id, max_jobs, TTL_SECONDS, tenant=ALL_TENANTS)
        ended = time.perf_counter()
        if not leased:
            time.sleep(IDLE_SLEEP_SECONDS)
            continue
        store.settle_many(
            [Settlement(job.id, job.lease_id, success=True) for job in leased], worker_id=worker_id, tenant=ALL_TENANTS
        )
        with run.lock:
            run.lease_seconds.append(ended - began)
            run.started |= {job.id: ended for job in leased if job.tenant == "B"}
            run.a_done += sum(job.tenant == "A" for job in leased)


def submit_b(store: Store, rate: float, run: Run, stop: threading.Event) -> None:
    """Tenant B: one job every 1/rate s through the store's enqueue, the time noted after commit."""
    interval, due = 1.0 / rate, time.perf_counter()
    job = JobSpec.parse({"type": "noop", "payload": {}, "queue": QUEUE})
    while not stop.is_set():
        [created] = store.enqueue_many([job], tenant="B")
        with run.lock:
            run.submitted[created.id] = time.perf_counter()
        due += interval
        time.sleep(max(0.0, due - time.perf_counter()))


def figures_of(run: Run, seconds: float) -> dict[str, float]:
    waits = [run.started[job_id] - at for job_id, at in run.submitted.items() if job_id in run.started]
    return {
        "b_submitted": len(run.submitted),
        "b_started": len(waits),
        "b_start_p50_ms": percentile(waits, 0.5) * 1000 if waits else float("nan"),
        "b_start_p99_ms": percentile(waits, 0.99) * 1000 if waits else float("nan"),
        "a_jobs_per_s": run.a_done / seconds,
        "lease_p50_ms": percentile(run.lease_seconds, 0.5) * 1000 if run.lease_seconds else float("nan"),
        "lease_p99_ms": percentile(run.lease_seconds, 0.99) * 1000 if run.lease_seconds else float("nan"),
    }


def print_table(figures: dict[str, dict[str, float]]) -> None:
    columns = list(next(iter(figures.values())))
    print(f"{'run':10}" + "".join(f"{column:>16}" for column in columns))
    for name, row in figures.items():
        print(f"{name:10}" + "".join(f"{row[column]:>16,.1f}" for column in columns))
    base, loaded = figures["A alone"]["a_jobs_per_s"], figures["A + B"]["a_jobs_per_s"]
    if base:
        print(f"A's throughput with B: {100 * loaded / base:.0f} % of A alone")


if __name__ == "__main__":
    main()
