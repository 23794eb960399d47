"""Worker SDK cost: CPU per no-op job in the worker processes (and in the gRPC server),
and end-to-end jobs/s, against a real `quorra grpc` on a throwaway PostgreSQL database.
Not part of the test run; it prints figures and asserts nothing.

    python bench/worker_cpu.py                                  # 5,000 jobs, 2 workers x 10 slots
    python bench/worker_cpu.py --jobs 10000 --workers 2 --max-jobs 10
    python bench/worker_cpu.py --worker-src /tmp/quorra-before  # another checkout's worker SDK

The workers start idle; then all jobs are enqueued in one transaction and the clock runs
until every one is `succeeded`. CPU is user + system time from /proc over that span.
`--worker-src` puts a directory holding another `quorra` package first on the workers'
PYTHONPATH (the server stays this checkout's), to compare two versions of the SDK.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from lease_throughput import (
    throwaway_postgres,
)  # bench/ is on sys.path: run as `python bench/...`
from sqlalchemy import text

from quorra import migrate
from quorra.jobs import JobSpec
from quorra.store import Store

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
REPO = Path(__file__).resolve().parent.parent
QUEUE = "bench_noop"
HANDLERS = 'from quorra.worker import handler\n\n\n@handler("noop")\ndef noop(job):\n    return None\n'
TICK = os.sysconf("SC_CLK_TCK")


def main() -> None:
    options = parse_args()
    with throwaway_postgres(os.environ.get("QUORRA_BENCH_DATABASE_URL", DEFAULT_POSTGRES)) as url:
        store = Store.from_url(url)
        migrate.upgrade(store.engine)
        with tempfile.TemporaryDirectory(prefix="quorra-bench-") as directory:
            (Path(directory) / "noop_handlers.py").write_text(HANDLERS)
            metrics = Path(directory) / "metrics"
            metrics.mkdir()
            run(store, url, Path(directory), options)
            print_calls(metrics, options.jobs)
        store.engine.dispose()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-jobs", type=int, default=10)
    parser.add_argument("--log-level", default="warning", help="the workers' QUORRA_LOG_LEVEL")
    parser.add_argument(
        "--worker-src",
        default=None,
        help="a directory holding the quorra package the workers run",
    )
    parser.add_argument(
        "--profile",
        default=None,
        help="a directory for py-spy flame graphs of the server and workers",
    )
    return parser.parse_args()


def run(store: Store, url: str, directory: Path, options: argparse.Namespace) -> None:
    port = free_port()
    env = os.environ | {
        "PROMETHEUS_MULTIPROC_DIR": str(directory / "metrics"),
        "DATABASE_URL": url,
        "QUORRA_GRPC_ADDR": f"127.0.0.1:{port}",
        "QUORRA_LOG_LEVEL": "warning",
    }
    server = subprocess.Popen([str(REPO / ".venv/bin/quorra"), "grpc"], env=env, stdout=subprocess.DEVNULL)
    workers = [start_worker(env, directory, options, n) for n in range(options.workers)]
    try:
        with grpc.insecure_channel(env["QUORRA_GRPC_ADDR"]) as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
        time.sleep(3.0)  # connected and waiting on their long polls
        backends = database_backends(store)
        processes = [server.pid, *(p.pid for p in workers)]
        profilers = start_profilers(options.profile, server, workers)
        before = {pid: cpu_seconds(pid) for pid in processes + backends}
        switches_before = {pid: switches(pid) for pid in processes + backends}
        transactions_before = database_transactions(store)
        started = time.monotonic()
        store.enqueue_many([JobSpec.parse({"type": "noop", "queue": QUEUE, "payload": {}})] * options.jobs)
        wait_all_succeeded(store, options.jobs)
        elapsed = time.monotonic() - started
        backends = sorted(set(backends) | set(database_backends(store)))  # and those opened meanwhile
        after = {pid: cpu_seconds(pid) for pid in processes + backends}
        waits = {pid: switches(pid) - switches_before.get(pid, 0) for pid in processes + backends}
        stop_profilers(profilers)
    finally:
        for process in (*workers, server):
            process.terminate()
        for process in (*workers, server):
            process.wait(30)
    # backends flush their statistics when they exit: count once the server is gone
    transactions = database_transactions(store, settle=True) - transactions_before
    cpu = {pid: after[pid] - before.get(pid, 0.0) for pid in after}
    report(
        options,
        elapsed,
        {pid: cpu[pid] for pid in cpu if pid not in backends},
        server.pid,
    )
    database = sum(cpu[pid] for pid in backends)
    print(
        f"  PostgreSQL CPU/job: {database / options.jobs * 1000:7.3f} ms ({database:.2f} s, {len(backends)} backends)"
    )
    jobs, worker_waits = options.jobs, sum(waits[p.pid] for p in workers)
    print(
        f"  wake-ups/job:      {worker_waits / jobs:8.2f} workers, {waits[server.pid] / jobs:.2f} gRPC server,"
        f" {sum(waits[pid] for pid in backends) / jobs:.2f} PostgreSQL (voluntary context switches)"
    )
    print(f"  PostgreSQL transactions/job: {transactions / jobs:.3f} (commits + rollbacks in the database)")
    print(f"  load average: {[round(x, 2) for x in os.getloadavg()]}")


def database_backends(store: Store) -> list[int]:
    """The PostgreSQL backends of the throwaway database (the server's pool), but this script's own."""
    query = text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
    with store.engine.connect() as conn:
        return [pid for pid in conn.execute(query).scalars() if Path(f"/proc/{pid}").exists()]


def start_profilers(directory: str | None, server: subprocess.Popen, workers: list) -> list[subprocess.Popen]:
    if directory is None:
        return []
    Path(directory).mkdir(parents=True, exist_ok=True)
    spy = str(Path(sys.executable).parent / "py-spy")
    named = [("server", server)] + [(f"worker-{n}", w) for n, w in enumerate(workers)]
    return [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(p.pid),
                "--format",
                "raw",
                "--gil",
                "--nonblocking",
                "-o",
                f"{directory}/{name}.txt",
                "--rate",
                "1000",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, p in named
    ]


def stop_profilers(profilers: list[subprocess.Popen]) -> None:
    for profiler in profilers:
        profiler.send_signal(signal.SIGINT)
    for profiler in profilers:
        profiler.wait(30)


def start_worker(env: dict, directory: Path, options: argparse.Namespace, number: int) -> subprocess.Popen:
    path = [str(directory)] + ([options.worker_src] if options.worker_src else [])
    worker_env = env | {
        "PYTHONPATH": os.pathsep.join(path),
        "QUORRA_WORKER_ID": f"bench-{number}",
        "QUORRA_LOG_LEVEL": options.log_level,
    }
    command = [
        sys.executable,
        str(REPO / "bin/quorra-worker"),
        "--handlers",
        "noop_handlers",
    ]
    command += ["--queues", QUEUE, "--max-jobs", str(options.max_jobs)]
    return subprocess.Popen(command, env=worker_env, cwd=directory, stdout=subprocess.DEVNULL)


def wait_all_succeeded(store: Store, count: int, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    query = text("SELECT count(*) FROM jobs WHERE queue = :queue AND status = 'succeeded'")
    while time.monotonic() < deadline:
        with store.engine.connect() as conn:
            if conn.execute(query, {"queue": QUEUE}).scalar_one() >= count:
                return
        time.sleep(0.05)
    raise SystemExit(f"not all {count} jobs succeeded within {timeout} s")


def print_calls(metrics: Path, jobs: int) -> None:
    """gRPC calls per job, by method, from the server's multiprocess metric files."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    from prometheus_client import CollectorRegistry, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    calls: dict[str, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "quorra_grpc_requests_total":
                calls[sample.labels["method"]] = calls.get(sample.labels["method"], 0) + sample.value
    summary = ", ".join(f"{method} {count:.0f} ({count / jobs:.3f}/job)" for method, count in sorted(calls.items()))
    print(f"  gRPC calls: {summary}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def switches(pid: int) -> int:
    """Voluntary context switches of the process's live threads: how often one blocked (on
    the network, a lock, a condition), about once per wake-up."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            total += int(status.read_text().split("voluntary_ctxt_switches:")[1].split()[0])
        except (OSError, IndexError):
            continue
    return total


def database_transactions(store: Store, settle: bool = False) -> int:
    if settle:
        time.sleep(1.0)  # exited backends' statistics land within moments
    query = text("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()")
    with store.engine.connect() as conn:
        return conn.execute(query).scalar_one()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def report(options: argparse.Namespace, elapsed: float, cpu: dict[int, float], server_pid: int) -> None:
    jobs = options.jobs
    worker_cpu = sum(seconds for pid, seconds in cpu.items() if pid != server_pid)
    print(
        f"{jobs} no-op jobs, {options.workers} workers x {options.max_jobs} slots, worker log level {options.log_level}"
    )
    print(f"  end to end:        {jobs / elapsed:8.0f} jobs/s ({elapsed:.2f} s)")
    print(f"  worker CPU/job:    {worker_cpu / jobs * 1000:8.3f} ms (all workers, {worker_cpu:.2f} s)")
    print(f"  gRPC server CPU/job: {cpu[server_pid] / jobs * 1000:6.3f} ms ({cpu[server_pid]:.2f} s)")


if __name__ == "__main__":
    main()
