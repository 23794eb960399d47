"""What idempotency keys and unique options cost a submit: batches of 1,000 jobs into the
store, plain, each job under a key of its own (as the Python client sends a batch), the
same batch retried (every key replayed), and 1,000 unique jobs, on SQLite and PostgreSQL.
Throwaway databases (bench/lease_throughput.py's); prints figures and asserts nothing.

    python bench/submit_options.py                 # both backends, 5 batches of 1,000 each
    python bench/submit_options.py --batches 20 --backends postgres
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

from lease_throughput import DEFAULT_POSTGRES, throwaway_postgres, throwaway_sqlite  # bench/ is on sys.path

from quorra import migrate
from quorra.jobs import JobSpec
from quorra.store import Store

BATCH = 1000


def batch(kind: str, tag: str) -> list[JobSpec]:
    def job(n: int) -> dict:
        fields = {"type": "bench", "queue": "bench", "payload": {"n": n, "tag": tag}}
        if kind == "keyed":
            fields["idempotency_key"] = f"{tag}:{n}"
        if kind == "unique":
            fields["unique"] = {"key": f"{tag}:{n}"}
        return fields

    return [JobSpec.parse(job(n)) for n in range(BATCH)]


def rate(store: Store, batches: list[list[JobSpec]]) -> float:
    started = time.perf_counter()
    for specs in batches:
        store.submit_many(specs, scope="bench")
    return len(batches) * BATCH / (time.perf_counter() - started)


def run(backend: str, url: str, count: int) -> None:
    store = Store.from_url(url)
    migrate.upgrade(store.engine)
    try:
        tags = [uuid.uuid4().hex[:8] for _ in range(count)]
        figures = {
            "plain": rate(store, [batch("plain", tag) for tag in tags]),
            "keyed (new keys)": rate(store, [batch("keyed", tag) for tag in tags]),
            "keyed (retried: replays)": rate(store, [batch("keyed", tag) for tag in tags]),
            "unique (new slots)": rate(store, [batch("unique", tag) for tag in tags]),
        }
        for name, value in figures.items():
            print(f"{backend:<10} submit {name:<26} batch={BATCH}  {value:>9,.0f} jobs/s", flush=True)
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=5, help="batches of 1,000 per figure")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--postgres", default=os.environ.get("QUORRA_BENCH_DATABASE_URL", DEFAULT_POSTGRES))
    options = parser.parse_args()
    print(f"load average at the start: {os.getloadavg()}")
    for backend in options.backends.split(","):
        opener = throwaway_sqlite if backend == "sqlite" else lambda: throwaway_postgres(options.postgres)
        with opener() as url:
            run(backend, url, options.batches)
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
