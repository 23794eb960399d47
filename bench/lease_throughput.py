"""Store throughput: how fast jobs go in (enqueue_many, batches of 1,000) and how fast
workers take them out (lease + ack, jobs/s) with 1, 4 and 16 threads, on SQLite and on
PostgreSQL. Each backend runs against a throwaway database that this script creates,
migrates and drops. Not part of the test run; it prints figures and asserts nothing.

    python bench/lease_throughput.py                      # both backends, 4,000 jobs a round
    python bench/lease_throughput.py --jobs 10000 --threads 1,8 --max-jobs 5 --backends postgres
    QUORRA_BENCH_DATABASE_URL=postgresql://me@db:5432/postgres python bench/lease_throughput.py

The PostgreSQL URL names a server and a database to connect to for CREATE DATABASE; the
benchmark itself runs in a new database beside it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from quorra import migrate
from quorra.jobs import JobSpec
from quorra.store import Store

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
QUEUE = "bench"
ENQUEUE_BATCH = 1000
LEASE_TTL_SECONDS = 300


def main() -> None:
    options = parse_args()
    print(f"jobs per round: {options.jobs}, lease batch (max_jobs): {options.max_jobs}")
    for backend in options.backends:
        opener = throwaway_sqlite if backend == "sqlite" else lambda: throwaway_postgres(options.postgres)
        try:
            with opener() as url:
                run_backend(backend, url, options)
        except Exception as exc:  # noqa: BLE001 - a missing server skips that backend
            print(f"{backend:<10} skipped: {type(exc).__name__}: {str(exc).splitlines()[0]}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4000, help="jobs per measured round")
    parser.add_argument("--threads", default="1,4,16", help="comma list of thread counts")
    parser.add_argument("--max-jobs", type=int, default=10, help="jobs per lease call")
    parser.add_argument("--backends", default="sqlite,postgres", help="comma list: sqlite, postgres")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("QUORRA_BENCH_DATABASE_URL", DEFAULT_POSTGRES),
        help="PostgreSQL server to create the throwaway database on",
    )
    options = parser.parse_args()
    options.threads = [int(n) for n in options.threads.split(",")]
    options.backends = [name.strip() for name in options.backends.split(",")]
    return options


def run_backend(backend: str, url: str, options: argparse.Namespace) -> None:
    store = Store.from_url(url, pool_size=max(options.threads))
    try:
        migrate.upgrade(store.engine)
        rate = timed_rate(options.jobs, lambda: enqueue(store, options.jobs))
        print(f"{backend:<10} enqueue    batch={ENQUEUE_BATCH:<5}          {rate:>10,.0f} jobs/s")
        for threads in options.threads:
            enqueue(store, options.jobs)
            rate = timed_rate(options.jobs, lambda n=threads: drain(store, n, options.max_jobs))
            print(f"{backend:<10} lease+ack  threads={threads:<3} max_jobs={options.max_jobs:<3} {rate:>10,.0f} jobs/s")
    finally:
        store.close()


def timed_rate(count: int, work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return count / (time.perf_counter() - started)


def enqueue(store: Store, count: int) -> None:
    spec = JobSpec.parse({"type": "bench", "queue": QUEUE, "payload": {"to": "user@example.com", "n": 1}})
    for start in range(0, count, ENQUEUE_BATCH):
        store.enqueue_many([spec] * min(ENQUEUE_BATCH, count - start))


def drain(store: Store, threads: int, max_jobs: int) -> None:
    """`threads` workers lease and ack until the queue is empty; check nothing was lost."""
    done, lock = [0], threading.Lock()

    def work(worker_id: str) -> None:
        while jobs := store.lease_jobs([QUEUE], worker_id, max_jobs, LEASE_TTL_SECONDS):
            for job in jobs:
                store.ack(job.id, job.lease_id)
            with lock:
                done[0] += len(jobs)

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(work, f"bench-{n}") for n in range(threads)]:
            future.result()
    pending = sum(c.count for c in store.queue_counts() if c.status != "succeeded")
    if pending:
        raise RuntimeError(f"{pending} jobs were left behind")


@contextmanager
def throwaway_sqlite() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="quorra-bench-") as directory:
        yield f"sqlite:///{Path(directory) / 'bench.db'}"


@contextmanager
def throwaway_postgres(server_url: str) -> Iterator[str]:
    name = f"quorra_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(
        make_url(server_url).set(drivername="postgresql+psycopg2"),
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 5},
    )
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


if __name__ == "__main__":
    main()
