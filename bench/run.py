"""`make bench`: Quorra's end-to-end benchmark (issue 9). It starts a real stack on PostgreSQL
and Redis (bench/stack.py), runs each workload 3 times, prints a table of medians with the
spread of the runs, and writes every figure as JSON.

    python bench/run.py                          # everything, 3 runs each (about 10-30 min)
    python bench/run.py --quick                  # small counts, 1 run (a couple of minutes)
    python bench/run.py --workloads W1,W2 --runs 5 --json /tmp/bench.json

    W1     throughput: 20,000 no-op jobs in through POST /v1/jobs/batch, out through 2 workers
    W2     latency: 2,000 single POST /v1/jobs at 200/s to idle workers; submit -> handler start
    REST   single submit and single get, 32 keep-alive clients
    W4     reap: 10,000 expired leases back to `failed`
    W3     W1 again, with 1,000,000 pending jobs in other queues and 200,000 finished ones

They run in that order (W3 last: its backlog stays in the database). Peak memory is read
from /proc after W1. Needs PostgreSQL (--pg-url, a server where a database can be created;
one is created and dropped) and Redis (--redis-url, or --no-redis for LISTEN/NOTIFY).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from stack import BENCH_DIR, running_stack, server_settings, server_version
from workloads import (
    Bench,
    IdleWorkers,
    Sizes,
    fill_backlog,
    rest_run,
    w1_run,
    w2_run,
    w4_run,
    write_ids_for_gets,
)

WORKLOADS = ("W1", "W2", "REST", "W4", "W3")
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"

# (workload, figure key, label, unit, target): the rows of the table, in order.
FIGURES = [
    ("W1", "enqueue_jobs_per_s", "W1 enqueue, REST batches of 1,000", "jobs/s", ">= 25,000"),
    ("W1", "processing_jobs_per_s", "W1 processing, 2 worker processes", "jobs/s", ">= 6,000"),
    ("W1", "missing", "W1 jobs never executed", "jobs", "0"),
    ("W1", "duplicates", "W1 executions beyond one per job", "jobs", "0"),
    ("W2", "start_p50_ms", "W2 submit -> handler start p50", "ms", "<= 3"),
    ("W2", "start_p95_ms", "W2 submit -> handler start p95", "ms", ""),
    ("W2", "start_p99_ms", "W2 submit -> handler start p99", "ms", "<= 10"),
    ("W2", "submit_rate_per_s", "W2 submits sent (asked: 200/s)", "/s", ""),
    ("W2", "post_p50_ms", "W2 POST /v1/jobs answered p50", "ms", ""),
    ("W2", "machine_busy_pct", "W2 machine CPU busy while submitting", "%", ""),
    ("W2", "client_cpu_ms_per_job", "W2 submitting client's CPU per job", "ms", ""),
    ("W2", "submit_to_insert_p50_ms", "W2 submit -> row inserted p50", "ms", ""),
    ("W2", "insert_to_lease_p50_ms", "W2 row inserted -> leased p50", "ms", ""),
    ("W2", "lease_to_start_p50_ms", "W2 leased -> handler start p50", "ms", ""),
    ("REST submit", "requests_per_s", "REST POST /v1/jobs, 32 clients", "req/s", ">= 1,000"),
    ("REST submit", "p50_ms", "REST POST /v1/jobs p50", "ms", ""),
    ("REST submit", "p99_ms", "REST POST /v1/jobs p99", "ms", ""),
    ("REST submit", "client_cpu_cores", "REST POST: client CPU (of the cores)", "cores", ""),
    ("REST get", "requests_per_s", "REST GET /v1/jobs/{id}, 32 clients", "req/s", ">= 2,000"),
    ("REST get", "p50_ms", "REST GET /v1/jobs/{id} p50", "ms", ""),
    ("REST get", "p99_ms", "REST GET /v1/jobs/{id} p99", "ms", ""),
    ("REST get", "client_cpu_cores", "REST GET: client CPU (of the cores)", "cores", ""),
    ("W4", "reaping_s", "W4 reaper: first reaped -> all failed", "s", "<= 2"),
    ("W4", "expiry_to_all_failed_s", "W4 lease expiry -> all failed", "s", ""),
    ("W3", "enqueue_jobs_per_s", "W3 enqueue with the backlog", "jobs/s", ""),
    ("W3", "processing_jobs_per_s", "W3 processing with the backlog", "jobs/s", ""),
    ("W3", "processing_vs_w1_percent", "W3 processing as % of W1's", "%", ">= 90"),
]
MEMORY_TARGETS = {"web worker": "<= 120", "grpc": "<= 150", "worker": "<= 100"}


def main() -> None:
    options = parse_args()
    if options.render:
        render(options.render)
        return
    sizes = Sizes.quick() if options.quick else Sizes()
    machine = describe_machine()
    results: dict[str, list[dict[str, float]]] = {}
    with running_stack(options.pg_url, None if options.no_redis else options.redis_url) as stack:
        machine["postgresql"] = server_version(stack.database)
        machine["postgresql_settings"] = server_settings(stack.database)
        print_machine(machine, options, sizes)
        bench = Bench(stack, sizes)
        for workload in [w for w in WORKLOADS if w in options.workloads]:
            RUNNERS[workload](bench, options.runs, results)
    machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    summary = summarise(results)
    print_table(summary, bench.memory_mb)
    print(f"load average at the end: {machine['load_average_end']}")
    write_json(options.json, machine, options, sizes, results, summary, bench.memory_mb)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts, 1 run: a fast check")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list of " + ",".join(WORKLOADS))
    parser.add_argument("--runs", type=int, help="runs of each workload (default 3; 1 with --quick)")
    parser.add_argument("--json", help="where to write the figures (default bench/results/<time>.json)")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("QUORRA_BENCH_DATABASE_URL", DEFAULT_PG),
        help="PostgreSQL server to create the throwaway database on [QUORRA_BENCH_DATABASE_URL; %(default)s]",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis for the wake-ups [REDIS_URL; %(default)s]",
    )
    parser.add_argument("--no-redis", action="store_true", help="no REDIS_URL: wake-ups by LISTEN/NOTIFY")
    parser.add_argument("--render", metavar="JSON", help="run nothing: print an earlier run's table as Markdown")
    options = parser.parse_args()
    options.workloads = [name.strip().upper() for name in options.workloads.split(",") if name.strip()]
    unknown = set(options.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}: choose from {','.join(WORKLOADS)}")
    options.runs = options.runs or (1 if options.quick else 3)
    return options


# -- the workloads, each repeated --------------------------------------------------------------


def run_w1(bench: Bench, runs: int, results: dict) -> None:
    results["W1"] = repeat("W1", runs, lambda n: w1_run(bench, f"w1-r{n}"))


def run_w2(bench: Bench, runs: int, results: dict) -> None:
    with IdleWorkers(bench, "w2") as idle:
        results["W2"] = repeat("W2", runs, lambda n: w2_run(bench, idle))


def run_rest(bench: Bench, runs: int, results: dict) -> None:
    with tempfile.NamedTemporaryFile("w", prefix="quorra-bench-ids-", suffix=".txt") as ids:
        write_ids_for_gets(bench, ids.name)
        for mode in ("submit", "get"):
            results[f"REST {mode}"] = repeat(f"REST {mode}", runs, lambda n, m=mode: rest_run(bench, m, ids.name))


def run_w4(bench: Bench, runs: int, results: dict) -> None:
    results["W4"] = repeat("W4", runs, lambda n: w4_run(bench, f"w4-r{n}"))


def run_w3(bench: Bench, runs: int, results: dict) -> None:
    seconds = fill_backlog(bench)
    print(
        f"  W3 backlog: {bench.sizes.w3_pending:,} pending + {bench.sizes.w3_finished:,} finished jobs"
        f" inserted and analysed in {seconds:.1f} s",
        flush=True,
    )
    results["W3"] = repeat("W3", runs, lambda n: w1_run(bench, f"w3-r{n}", note_memory=False))


RUNNERS: dict[str, Callable[[Bench, int, dict], None]] = {
    "W1": run_w1,
    "W2": run_w2,
    "REST": run_rest,
    "W4": run_w4,
    "W3": run_w3,
}


def repeat(name: str, runs: int, run: Callable[[int], dict[str, float]]) -> list[dict[str, float]]:
    figures = []
    for n in range(1, runs + 1):
        started = time.perf_counter()
        figures.append(run(n))
        shown = ", ".join(f"{key}={value:,.1f}" for key, value in figures[-1].items())
        print(f"  {name} run {n}/{runs} ({time.perf_counter() - started:.0f} s): {shown}", flush=True)
    return figures


# -- the report ---------------------------------------------------------------------------------


def summarise(results: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per workload and figure: median, min and max over the runs."""
    summary = {
        workload: {
            key: {
                "median": statistics.median(r[key] for r in runs),
                "min": min(r[key] for r in runs),
                "max": max(r[key] for r in runs),
            }
            for key in runs[0]
        }
        for workload, runs in results.items()
        if runs
    }
    if "W1" in summary and "W3" in summary:
        w1 = summary["W1"]["processing_jobs_per_s"]["median"]
        percents = [100 * r["processing_jobs_per_s"] / w1 for r in results["W3"]]
        summary["W3"]["processing_vs_w1_percent"] = {
            "median": statistics.median(percents),
            "min": min(percents),
            "max": max(percents),
        }
    return summary


def print_machine(machine: dict, options: argparse.Namespace, sizes: Sizes) -> None:
    print(
        f"Quorra bench {machine['commit']} on {machine['cores']} cores, {machine['platform']},"
        f" Python {machine['python']}, PostgreSQL {machine['postgresql']} ({settings_text(machine)})"
    )
    print(
        f"load average at the start: {machine['load_average_start']}; {options.runs} run(s) each;"
        f" Redis wake-ups: {'off' if options.no_redis else 'on'}; worker --max-jobs {sizes.worker_max_jobs};"
        f" {'--quick sizes' if options.quick else 'full sizes'}",
        flush=True,
    )


def settings_text(machine: dict) -> str:
    """The server settings that move the figures, as "autovacuum off, fsync on, ..."."""
    settings = machine.get("postgresql_settings") or {}  # (absent from a run's JSON before they were kept)
    return ", ".join(f"{name} {value}" for name, value in settings.items()) or "settings not recorded"


def print_table(summary: dict, memory_mb: dict[str, float], markdown: bool = False) -> None:
    rows = table_rows(summary, memory_mb)
    print()
    if markdown:
        print(
            "\n".join(f"| {' | '.join(row)} |" for row in rows[:1] + [("---", "---:", "---:", "---", "---")] + rows[1:])
        )
        return
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for n, row in enumerate(rows):
        print(" | ".join(cell.rjust(w) if 0 < i < 3 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))))
        if n == 0:
            print("-+-".join("-" * w for w in widths))


def table_rows(summary: dict, memory_mb: dict[str, float]) -> list[tuple[str, ...]]:
    rows = [("figure", "median", "runs: min - max", "unit", "target")]
    for workload, key, label, unit, target in FIGURES:
        figure = summary.get(workload, {}).get(key)
        if figure:
            spread = f"{_number(figure['min'])} - {_number(figure['max'])}"
            rows.append((label, _number(figure["median"]), spread, unit, target))
    for role, megabytes in sorted(memory_mb.items()):
        rows.append((f"peak RSS during W1: {role}", _number(megabytes), "", "MB", MEMORY_TARGETS.get(role, "")))
    return rows


def render(path: str) -> None:
    """--render: the table of an earlier run, from its JSON, as Markdown (for the README)."""
    document = json.loads(Path(path).read_text())
    machine = document["machine"]
    print(
        f"{machine['commit']}, {machine['cores']} cores, Python {machine['python']},"
        f" PostgreSQL {machine.get('postgresql')} ({settings_text(machine)}),"
        f" load average {machine['load_average_start']} at the start,"
        f" {machine.get('load_average_end')} at the end; {document['options']['runs']} run(s) each,"
        f" {'--quick' if document['options']['quick'] else 'full'} sizes"
    )
    print_table(document["summary"], document["peak_rss_mb"], markdown=True)


def _number(value: float) -> str:
    if math.isnan(value):  # nothing measured
        return "-"
    if float(value).is_integer() or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"


def describe_machine() -> dict:
    return {
        "cores": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "commit": _git("describe", "--always", "--dirty"),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=BENCH_DIR, check=False).stdout.strip()
    except OSError:
        return "unknown"


def write_json(path, machine, options, sizes, results, summary, memory_mb) -> None:
    if not path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = BENCH_DIR / "results" / f"{stamp}.json"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    document = {
        "machine": machine,
        "options": {"quick": options.quick, "runs": options.runs, "redis": not options.no_redis},
        "sizes": vars(sizes),
        "summary": summary,
        "runs": results,
        "peak_rss_mb": memory_mb,
    }
    Path(path).write_text(json.dumps(document, indent=2) + "\n")
    print(f"figures written to {path}")


if __name__ == "__main__":
    sys.exit(main())
