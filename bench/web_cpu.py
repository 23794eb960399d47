"""CPU per REST request: `quorra web` (default settings, PostgreSQL) under closed-loop load,
with the CPU its processes (gunicorn master and workers) and its PostgreSQL sessions used,
per request and per job. On a shared machine wall-clock rates move with the neighbours'
load; CPU per request moves much less, so compare that between two versions.

    python -m bench.web_cpu                          # batch, submit and get, 10 s each
    python -m bench.web_cpu --ops batch --seconds 20 --env QUORRA_LOG_LEVEL=warning
    python -m bench.web_cpu --ops get --env QUORRA_WEB_WORKERS=1   # one worker, e.g. for py-spy

batch: POST /v1/jobs/batch with 1,000 jobs, 4 connections; submit: POST /v1/jobs and get:
GET /v1/jobs/{id}, 32 connections each (bench/rest_throughput.py's raw HTTP/1.1 clients);
healthz (not in the default --ops): GET /healthz, the per-request floor of the stack.
Each operation has a 1 s warm-up first, so the connection pools are open. CPU is user +
system time from /proc. Prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.rest_throughput import SUBMIT_BODY, build_request, measure
from bench.web_stack import AUTH, percentile, started_web_server

TICK = os.sysconf("SC_CLK_TCK")
BATCH_BODY = json.dumps({"jobs": [{"type": "bench", "payload": {"n": n}} for n in range(1000)]}).encode()
CLIENTS = {"batch": 4, "submit": 32, "get": 32, "healthz": 32}
JOBS_PER_REQUEST = {"batch": 1000, "submit": 1, "get": 0, "healthz": 0}


def main() -> None:
    args = parse_args()
    overrides = dict(item.split("=", 1) for item in args.env)
    print(
        f"{'operation':<8} {'req/s':>8} {'jobs/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
        f"{'web CPU ms/req':>15} {'pg CPU ms/req':>14} {'web CPU us/job':>15}"
    )
    with started_web_server(**overrides) as (base, pid):
        job_id = requests.post(f"{base}/v1/jobs", json={"type": "bench", "payload": {}}, headers=AUTH).json()["id"]
        bodies = {
            "batch": build_request("POST", "/v1/jobs/batch", BATCH_BODY),
            "submit": build_request("POST", "/v1/jobs", SUBMIT_BODY),
            "get": build_request("GET", f"/v1/jobs/{job_id}"),
            "healthz": build_request("GET", "/healthz"),
        }
        for op in args.ops.split(","):
            asyncio.run(measure(base, bodies[op], CLIENTS[op], 1.0))  # warm-up: pools open, code paths hot
            web_pids = process_tree(pid)
            pg_pids = postgres_backends(args.pg_url)
            web_before, pg_before = cpu_seconds(web_pids), cpu_seconds(pg_pids)
            latencies, errors = asyncio.run(measure(base, bodies[op], CLIENTS[op], args.seconds))
            web_cpu, pg_cpu = (
                cpu_seconds(web_pids) - web_before,
                cpu_seconds(pg_pids) - pg_before,
            )
            report(op, latencies, errors, args.seconds, web_cpu, pg_cpu)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", default="batch,submit,get")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        help="NAME=value for the server, repeatable",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("QUORRA_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    return parser.parse_args()


def report(
    op: str,
    latencies: list[float],
    errors: list[int],
    seconds: float,
    web_cpu: float,
    pg_cpu: float,
) -> None:
    done = max(1, len(latencies))
    jobs = JOBS_PER_REQUEST[op] * len(latencies)
    per_job = f"{1e6 * web_cpu / jobs:>15.0f}" if jobs else f"{'-':>15}"
    print(
        f"{op:<8} {len(latencies) / seconds:>8.0f} {jobs / seconds:>8.0f} {1000 * percentile(latencies, 0.5):>7.1f} "
        f"{1000 * percentile(latencies, 0.99):>7.1f} {len(errors):>6} {1000 * web_cpu / done:>15.2f} "
        f"{1000 * pg_cpu / done:>14.2f} {per_job}",
        flush=True,
    )


def process_tree(root: int) -> list[int]:
    """`root` and its children (gunicorn's master and its workers)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == root:
                        children.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return [root, *children]


def postgres_backends(pg_url: str) -> list[int]:
    """The PostgreSQL sessions of the bench databases (quorra_bench_web_*), by server pid."""
    engine = create_engine(make_url(pg_url).set(drivername="postgresql+psycopg2"))
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname LIKE 'quorra_bench_web_%'")).all()
    engine.dispose()
    return [row.pid for row in rows]


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError):
            pass  # gone, or not ours to read
    return total / TICK


if __name__ == "__main__":
    main()
