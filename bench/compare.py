"""Two checkouts side by side (issue 9): both stacks up at once, on the same PostgreSQL and
Redis, and each workload run on one, then the other, round after round (A B, B A, A B, ...),
so that a machine shared with other work loads both alike. Each round prints the bench's
figures, the CPU per job of every process role (/proc), which load moves far less than
wall-clock figures, and the gRPC calls per job (how much leases and settles batched: the
faster a lease, the fewer jobs wait for the next one); the end prints the medians of the rounds.

    python bench/compare.py --before /tmp/quorra-main                  # W2 and W1, 3 rounds
    python bench/compare.py --before /tmp/quorra-main --workloads W2 --rounds 5 --nice -10

--before and --after are checkouts with their own .venv (`make install-dev`); --after is
this one by default. Only their commands run (`quorra`, `quorra-worker`); this checkout's
bench drives both. --nice (root only) runs both stacks, and their databases' PostgreSQL
sessions, at that priority: on a shared machine, ahead of the other work, which is closer
to a quiet machine than the default (and still the same for both). W1 is the bench's W1
(20,000 jobs, 2 workers) with the workers' CPU read from their first execution on; W2 is
its W2 on 2 idle workers kept for all rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from stack import Stack, backend_pids, children, cpu_seconds, grpc_calls, running_stack, stop_processes
from workloads import (
    WORKER_PROCESSES,
    Bench,
    IdleWorkers,
    Sizes,
    enqueue_batches,
    execution_check,
    read_records,
    w2_run,
    wait_all_succeeded,
    wait_for_records,
)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
SHOWN = {
    "W1": ("processing_jobs_per_s", "enqueue_jobs_per_s", "duplicates", "missing", "grpc_calls_per_job"),
    "W2": (
        "grpc_calls_per_job",
        "start_p50_ms",
        "start_p95_ms",
        "start_p99_ms",
        "submit_to_insert_p50_ms",
        "insert_to_lease_p50_ms",
        "lease_to_start_p50_ms",
    ),
}
ROLES = ("grpc", "web", "scheduler", "workers", "postgresql")


def main() -> None:
    options = parse_args()
    if options.nice is not None:
        os.setpriority(os.PRIO_PROCESS, 0, options.nice)  # inherited by every process started below
    sides = {"before": options.before, "after": options.after}
    results: dict[str, dict[str, list[dict[str, float]]]] = {w: {s: [] for s in sides} for w in options.workloads}
    with ExitStack() as stacks:
        benches = {}
        for number, (side, checkout) in enumerate(sides.items()):
            redis_url = (
                None if options.no_redis else f"{options.redis_url.rstrip('/0123456789')}/{options.redis_db + number}"
            )
            stack = stacks.enter_context(running_stack(options.pg_url, redis_url, bin_dir=checkout / ".venv" / "bin"))
            benches[side] = Bench(stack, Sizes())
        if options.nice is not None:
            stacks.enter_context(renicing([b.stack for b in benches.values()], options.nice))
        idle = (
            {side: stacks.enter_context(IdleWorkers(bench, "w2")) for side, bench in benches.items()}
            if "W2" in options.workloads
            else {}
        )
        print(
            f"before: {options.before}, after: {options.after}; {options.rounds} rounds; load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        for round_number in range(options.rounds):
            order = list(sides) if round_number % 2 == 0 else list(sides)[::-1]
            for workload in options.workloads:
                for side in order:
                    figures = measure(workload, benches[side], idle.get(side), f"w1-{round_number}")
                    results[workload][side].append(figures)
                    print(f"round {round_number + 1} {workload} {side:6s} {_line(workload, figures)}", flush=True)
    print_medians(results)
    if options.json:
        Path(options.json).write_text(
            json.dumps({"options": {k: str(v) for k, v in vars(options).items()}, "results": results}, indent=1)
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="a checkout with its .venv: the baseline")
    parser.add_argument("--after", type=Path, default=REPO, help="the checkout to compare (default: this one)")
    parser.add_argument("--workloads", default="W2,W1", help="W2, W1 or both (comma list)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nice", type=int, help="priority of the stacks and their sessions (negative: root only)")
    parser.add_argument("--pg-url", default=os.environ.get("QUORRA_BENCH_DATABASE_URL", DEFAULT_PG))
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--redis-db", type=int, default=0, help="Redis database of --before (--after: the next)")
    parser.add_argument("--no-redis", action="store_true", help="wake-ups by LISTEN/NOTIFY")
    parser.add_argument("--json", help="write every round's figures here")
    options = parser.parse_args()
    options.workloads = [w.strip().upper() for w in options.workloads.split(",") if w.strip()]
    if not set(options.workloads) <= {"W1", "W2"}:
        parser.error("--workloads: W1 and/or W2")
    for side in ("before", "after"):
        if not (getattr(options, side) / ".venv" / "bin" / "quorra").exists():
            parser.error(f"--{side}: no .venv/bin/quorra in {getattr(options, side)} (run make install-dev there)")
    return options


# -- one run, with the CPU of every process role ---------------------------------------------


def measure(workload: str, bench: Bench, idle: IdleWorkers | None, queue: str) -> dict[str, float]:
    if workload == "W2":
        before = role_cpu(bench.stack, idle.workers)
        figures = w2_run(bench, idle)
        return figures | per_job(before, role_cpu(bench.stack, idle.workers), bench.sizes.w2_jobs)
    return w1_round(bench, queue)


def role_cpu(stack: Stack, workers) -> dict[str, float]:
    """CPU seconds so far of every process role, and the gRPC calls answered so far (calls
    per job show how much the workers' leases and settles batch)."""
    web = stack.servers["web"].pid
    return {
        "grpc": cpu_seconds(stack.servers["grpc"].pid),
        "web": sum(cpu_seconds(pid) for pid in [web, *children(web)]),
        "scheduler": cpu_seconds(stack.servers["scheduler"].pid),
        "workers": sum(cpu_seconds(worker.pid) for worker in workers),
        "postgresql": sum(cpu_seconds(pid) for pid in backend_pids(stack.database.url.database)),
        "calls": grpc_calls(stack),
    }


def w1_round(bench: Bench, queue: str) -> dict[str, float]:
    """The bench's W1, with the CPU of every role from the workers' first execution to the last
    job's end (the workers' start-up, imports included, is left out)."""
    count = bench.sizes.w1_jobs
    ids, enqueue_seconds = enqueue_batches(bench.stack, queue, count, bench.sizes.enqueue_clients)
    with tempfile.TemporaryDirectory(prefix="quorra-compare-") as record_dir:
        workers = bench.stack.start_workers(WORKER_PROCESSES, queue, Path(record_dir), bench.sizes.worker_max_jobs)
        try:
            wait_for_records(record_dir, 1, workers)
            before = role_cpu(bench.stack, workers)
            wait_for_records(record_dir, count, workers)
            finished_at = wait_all_succeeded(bench.stack, queue, count)
            after = role_cpu(bench.stack, workers)
        finally:
            stop_processes(workers)
        records = read_records(record_dir)
    first_start = min(started for _, started, _ in records)
    figures = {
        "enqueue_jobs_per_s": count / enqueue_seconds,
        "processing_jobs_per_s": count / (finished_at - first_start),
        **execution_check(ids, [job_id for job_id, _, _ in records]),
    }
    return figures | per_job(before, after, count)


def per_job(before: dict[str, float], after: dict[str, float], jobs: int) -> dict[str, float]:
    """CPU ms per job of each role, and gRPC calls per job. A PostgreSQL session that ended in
    between is missed."""
    figures = {f"cpu_ms_{role}": (after[role] - before[role]) * 1000 / jobs for role in ROLES}
    figures["cpu_ms_all"] = sum(figures.values())
    figures["grpc_calls_per_job"] = (after["calls"] - before["calls"]) / jobs
    return figures


@contextmanager
def renicing(stacks: list[Stack], nice: int) -> Iterator[None]:
    """Every 0.5 s, give the stacks' PostgreSQL sessions this priority (new ones included)."""
    stopped = threading.Event()

    def loop() -> None:
        while not stopped.wait(0.5):
            for stack in stacks:
                for pid in backend_pids(stack.database.url.database):
                    try:
                        os.setpriority(os.PRIO_PROCESS, pid, nice)
                    except OSError:
                        pass  # ended meanwhile

    thread = threading.Thread(target=loop, name="renice", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopped.set()
        thread.join()


# -- the report ---------------------------------------------------------------------------------


def _line(workload: str, figures: dict[str, float]) -> str:
    shown = "  ".join(f"{key}={figures[key]:,.2f}" for key in SHOWN[workload])
    cpu = "  ".join(f"{role}={figures[f'cpu_ms_{role}']:.3f}" for role in (*ROLES, "all"))
    return f"{shown} | CPU ms/job {cpu} | load {os.getloadavg()[0]:.1f}"


def print_medians(results: dict[str, dict[str, list[dict[str, float]]]]) -> None:
    print("\nmedians of the rounds")
    for workload, sides in results.items():
        keys = [*SHOWN[workload], *(f"cpu_ms_{role}" for role in (*ROLES, "all"))]
        print(f"{'':8s}{'':8s}" + "".join(f"{key:>26s}" for key in keys))
        for side, runs in sides.items():
            if runs:
                values = "".join(f"{statistics.median(run[key] for run in runs):26,.3f}" for key in keys)
                print(f"{workload:8s}{side:8s}{values}")


if __name__ == "__main__":
    sys.exit(main())
