"""Memory of a web process answering GET /v1/jobs over big jobs (issue 8, item 8).

Fills a SQLite database with N jobs of 1 MiB payloads, then, each in a fresh process (so the
peak is that request's own), answers one list request through the real Flask app and prints
the response size and the process's RSS before the request and its peak RSS.

    .venv/bin/python bench/list_memory.py [--jobs 270] [--limit 300] [--query limit=300 ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEY = "bench-api-key"
MIB = 1024 * 1024


def fill(url: str, count: int) -> None:
    from quorra import migrate
    from quorra.db import make_engine
    from quorra.jobs import JobSpec
    from quorra.store import Store

    engine = make_engine(url)
    migrate.upgrade(engine)
    store = Store(engine)
    blob = "x" * (MIB - 100)
    for start in range(0, count, 10):
        specs = [
            JobSpec.parse({"type": "big", "payload": {"blob": blob, "n": n}})
            for n in range(start, min(start + 10, count))
        ]
        store.enqueue_many(specs)
    store.close()


def measure(url: str, query: str) -> dict:
    from quorra.api import create_app
    from quorra.config import Settings

    app = create_app(Settings(database_url=url, api_keys=(KEY,), log_level="error"))
    client = app.test_client()
    client.get("/v1/jobs?limit=1", headers={"X-API-Key": KEY})  # warm up: imports, pool
    before = _rss_mb()
    started = time.perf_counter()
    response = client.get(f"/v1/jobs?{query}", headers={"X-API-Key": KEY})
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    body = response.get_json()
    return {
        "code": str(Path(sys.modules["quorra.store"].__file__).parent),
        "query": query,
        "status": response.status_code,
        "jobs": len(body["jobs"]),
        "response_mb": round(len(response.get_data()) / 1e6, 2),
        "rss_before_mb": round(before, 1),
        "peak_rss_mb": round(peak, 1),
        "seconds": round(seconds, 2),
    }


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=270)
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--query", action="append", help="a query to measure (default: without and with bodies)")
    parser.add_argument("--measure", nargs=2, metavar=("URL", "QUERY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        fill(url, args.jobs)
        print(f"{args.jobs} jobs of 1 MiB; GET /v1/jobs?...")
        limit = f"limit={args.limit}"
        for query in args.query or (limit, f"{limit}&include=payload", f"{limit}&include=payload,result"):
            out = subprocess.run(
                [sys.executable, __file__, "--measure", url, query], capture_output=True, text=True, check=True
            )
            print(out.stdout.strip())


if __name__ == "__main__":
    main()
