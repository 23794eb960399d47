"""Wake-up latency: the time from POST /v1/jobs to the start of the job's handler, with an
idle worker waiting, for each wake-up channel.

    python bench/wakeup_latency.py                      # redis, notify and polling, 200 jobs each
    python bench/wakeup_latency.py --modes polling --jobs 50

Each mode runs `quorra web` and `quorra grpc` as their own processes (so every wake-up
crosses processes, as in production) and a Worker in this process whose handler notes the
time it starts. One job at a time: POST, wait for the handler, let the worker go back to
waiting, repeat.

    redis    PostgreSQL + REDIS_URL: Redis pub/sub
    notify   PostgreSQL, no Redis: LISTEN/NOTIFY
    polling  SQLite: the waiting lease re-checks every QUORRA_POLL_INTERVAL (default 0.1 s)

Needs a PostgreSQL server (--pg-url, trust auth; a database is created and dropped) and
a Redis server (--redis-url) on this machine.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from quorra import migrate
from quorra.config import Settings
from quorra.db import make_engine
from quorra.worker import HandlerRegistry, Worker

API_KEY = "bench-api-key"
MODES = ("redis", "notify", "polling")
# After each job, a random pause: the worker is waiting again, and posts do not fall in step
# with the polling interval (which would measure its worst case every time).
IDLE_SECONDS = (0.05, 0.55)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def database(mode: str, pg_url: str) -> Iterator[str]:
    """A migrated database for one mode: SQLite for polling, a fresh PostgreSQL one otherwise."""
    if mode == "polling":
        with tempfile.TemporaryDirectory() as directory:
            url = f"sqlite:///{Path(directory) / 'bench.db'}"
            _migrate(url)
            yield url
        return
    name = f"quorra_bench_{os.getpid()}_{mode}"
    admin = create_engine(make_url(pg_url).set(drivername="postgresql+psycopg2"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)
        _migrate(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _migrate(url: str) -> None:
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()


@contextmanager
def servers(env: dict[str, str]) -> Iterator[None]:
    """`quorra web` and `quorra grpc`, ready to serve."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "quorra.cli.admin", role],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for role in ("web", "grpc")
    ]
    try:
        _wait_ready(env)
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)


def _wait_ready(env: dict[str, str]) -> None:
    with grpc.insecure_channel(env["QUORRA_GRPC_ADDR"]) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"http://{env['QUORRA_HTTP_ADDR']}/healthz", timeout=1).ok:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("quorra web did not come up")
        time.sleep(0.1)


def measure(mode: str, jobs: int, pg_url: str, redis_url: str) -> tuple[list[float], list[float]]:
    with database(mode, pg_url) as database_url:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QUORRA_", "REDIS_URL", "PROMETHEUS"))}
        env |= {
            "DATABASE_URL": database_url,
            "QUORRA_API_KEY": API_KEY,
            "QUORRA_LOG_LEVEL": "warning",
            "QUORRA_HTTP_ADDR": f"127.0.0.1:{free_port()}",
            "QUORRA_GRPC_ADDR": f"127.0.0.1:{free_port()}",
            "QUORRA_WEB_WORKERS": "1",
        }
        if mode == "redis":
            env["REDIS_URL"] = redis_url
        with servers(env):
            return _latencies(env, jobs)


def _latencies(env: dict[str, str], jobs: int) -> tuple[list[float], list[float]]:
    """(POST -> handler start, POST -> response) for each job, in seconds."""
    started_at: list[float] = []
    started = threading.Event()

    def note_start(job) -> None:
        started_at.append(time.perf_counter())
        started.set()

    registry = HandlerRegistry()
    registry.register("bench", note_start)
    settings = Settings(
        grpc_addr=env["QUORRA_GRPC_ADDR"],
        api_keys=(API_KEY,),
        worker_id="bench-worker",
        worker_queues=("bench",),
        worker_max_jobs=1,
        log_level="warning",
    )
    worker = Worker(settings, registry).start()
    session = requests.Session()
    latencies, returned = [], []
    try:
        time.sleep(0.5)  # the worker's first long poll is waiting
        for _ in range(jobs):
            started.clear()
            posted_at = time.perf_counter()
            response = session.post(
                f"http://{env['QUORRA_HTTP_ADDR']}/v1/jobs",
                headers={"X-API-Key": API_KEY},
                json={"type": "bench", "queue": "bench", "payload": {}},
                timeout=10,
            )
            response.raise_for_status()
            returned.append(time.perf_counter() - posted_at)
            if not started.wait(10):
                raise RuntimeError("a job was not picked up within 10 s")
            latencies.append(started_at[-1] - posted_at)
            time.sleep(random.uniform(*IDLE_SECONDS))
    finally:
        worker.stop(grace=5)
    return latencies, returned


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument(
        "--pg-url", default=os.environ.get("QUORRA_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--redis-url", default=os.environ.get("QUORRA_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    print(f"wake-up latency, POST -> handler start, {args.jobs} jobs per mode, one idle worker")
    print(f"{'mode':<8} {'median ms':>10} {'p99 ms':>10} {'max ms':>10}   {'POST response median ms':>24}")
    for mode in args.modes.split(","):
        latencies, responses = measure(mode, args.jobs, args.pg_url, args.redis_url)
        ms = [seconds * 1000 for seconds in latencies]
        print(
            f"{mode:<8} {statistics.median(ms):>10.1f} {percentile(ms, 0.99):>10.1f} {max(ms):>10.1f}"
            f"   {statistics.median(responses) * 1000:>24.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
