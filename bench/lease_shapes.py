"""Lease latency in every shape of queue, at 1,000,000 waiting jobs: the store's lease
(Store.lease_jobs, committed, batches of 10) against the lease query Quorra ran before the
priority-level walk (a plain ORDER BY priority DESC, run_at, id LIMIT n, rolled back).
Optionally (--churn N), bloat: N lease + ack cycles with and without the jobs table's
fillfactor and autovacuum settings, then table size and lease latency again.

Each backend runs in a throwaway database this script creates, fills with INSERT ...
SELECT (generate_series on PostgreSQL, a recursive CTE on SQLite) and drops. Not part of
the test run; it prints figures and asserts nothing.

    python bench/lease_shapes.py                                  # PostgreSQL, 1,000,000 rows
    python bench/lease_shapes.py --backends sqlite,postgres --rows 200000
    python bench/lease_shapes.py --churn 200000 --rows 300000 --finished 0   # bloat, PostgreSQL
    QUORRA_BENCH_DATABASE_URL=postgresql://me@db:5432/postgres python bench/lease_shapes.py
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable

from sqlalchemy import Engine, event, select, text

from quorra import migrate
from quorra.access import ALL_TENANTS, DEFAULT_TENANT
from quorra.db import PLANNED_IN_INDEX_ORDER
from quorra.schema import jobs
from quorra.store import Store, ready

sys.path.insert(0, os.path.dirname(__file__))
from lease_throughput import DEFAULT_POSTGRES, throwaway_postgres, throwaway_sqlite

BATCH = 10
TTL_SECONDS = 300
# shape: (queues, tenant); ALL_TENANTS is a fleet lease (every tenant's jobs of the queues)
SHAPES = {
    "one queue (40% of rows ready)": (["busy"], DEFAULT_TENANT),
    "two queues (60% ready)": (["busy", "other"], DEFAULT_TENANT),
    "delayed backlog of higher priority": (["delayed"], DEFAULT_TENANT),
    "quiet queue, others full": (["quiet"], DEFAULT_TENANT),
    "all four queues": (["quiet", "delayed", "other", "busy"], DEFAULT_TENANT),
    "fleet, all four queues": (["quiet", "delayed", "other", "busy"], ALL_TENANTS),
    "fleet, busy + 200 small tenants": (["busy", "crowd"], ALL_TENANTS),
    "one small tenant of 200": (["crowd"], "c7"),
}
CROWD_TENANTS = 200  # tenants c0 ... c199 with 50 ready jobs each in queue "crowd"
# (queue, share of the waiting rows, lowest priority, number of priorities, status, delayed)
WAITING = [
    ("busy", 0.40, 0, 10, "pending", False),
    ("other", 0.20, 0, 10, "pending", False),
    ("delayed", 0.40, 5, 5, "pending", True),
]
RUN_AT = {
    "postgresql": "now() + (CASE WHEN {delayed} THEN 3600 + n % 100000 ELSE -3600 - n % 100000 END) * interval '1 second'",
    "sqlite": "strftime('%Y-%m-%d %H:%M:%f', 'now', (CASE WHEN {delayed} THEN 3600 + n % 100000 ELSE -3600 - n % 100000 END)"
    " || ' seconds') || '000'",
}
NEW_ID = {"postgresql": "gen_random_uuid()", "sqlite": "lower(hex(randomblob(16)))"}
SERIES = {
    "postgresql": "FROM generate_series(1, {count}) AS g(n)",
    "sqlite": "FROM (WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {count}) SELECT n FROM g)",
}
OLD_LEASE_QUERY = (
    "SELECT id FROM jobs WHERE queue IN ({queues}) AND status IN ('failed', 'pending') AND run_at <= {now}"
    " ORDER BY priority DESC, run_at, id LIMIT {batch}"
)
OLD_NOW = {"postgresql": "now()", "sqlite": "strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'"}


def main() -> None:
    options = parse_args()
    logging.disable(logging.INFO)  # time the store, not the log handler
    print(f"waiting rows: {options.rows:,}, finished rows: {options.finished:,}, lease batch: {BATCH}")
    for backend in options.backends:
        opener = throwaway_sqlite if backend == "sqlite" else lambda: throwaway_postgres(options.postgres)
        if not options.churn:
            with opener() as url:
                run_shapes(backend, url, options)
        elif backend == "postgres":
            for tuned in (True, False):
                with opener() as url:
                    run_churn(url, options, tuned=tuned)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="waiting (pending or failed) rows")
    parser.add_argument("--finished", type=int, default=200_000, help="succeeded rows beside them")
    parser.add_argument("--leases", type=int, default=200, help="measured leases per shape")
    parser.add_argument("--old-leases", type=int, default=5, help="measured runs of the old lease query")
    parser.add_argument("--churn", type=int, default=0, help="instead: jobs leased + acked, for the bloat measurement")
    parser.add_argument("--churn-batch", type=int, default=100, help="jobs per lease and per ack while churning")
    parser.add_argument("--backends", default="postgres", help="comma list: sqlite, postgres")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("QUORRA_BENCH_DATABASE_URL", DEFAULT_POSTGRES),
        help="a PostgreSQL server URL (the benchmark creates its own database there)",
    )
    options = parser.parse_args()
    options.backends = [b.strip() for b in options.backends.split(",") if b.strip()]
    return options


# -- filling -----------------------------------------------------------------------------------


def fill(store: Store, options: argparse.Namespace, *, tuned: bool = True) -> None:
    """Migrate, drop the secondary indexes, insert every row set-wise, rebuild, analyse."""
    migrate.upgrade(store.engine)
    dialect = store.dialect
    started = time.perf_counter()
    with store.engine.begin() as conn:
        if dialect == "postgresql" and not tuned:
            conn.execute(text("ALTER TABLE jobs RESET (fillfactor, autovacuum_vacuum_scale_factor,"
                              " autovacuum_analyze_scale_factor, autovacuum_vacuum_cost_delay)"))  # fmt: skip
        for index in jobs.indexes:
            conn.execute(text(f"DROP INDEX {index.name}"))
        for queue, share, low, levels, status, delayed in WAITING:
            insert_rows(conn, dialect, queue, int(options.rows * share), low, levels, status, delayed)
        insert_rows(conn, dialect, "delayed", 1000, 0, 5, "failed", False)  # ready, below the backlog
        insert_rows(conn, dialect, "quiet", 100, 0, 3, "pending", False)
        insert_rows(conn, dialect, "crowd", 50 * CROWD_TENANTS, 0, 3, "pending", False, tenants=CROWD_TENANTS)
        insert_rows(conn, dialect, "busy", options.finished, 0, 10, "succeeded", False)
        for index in jobs.indexes:
            index.create(conn)
    vacuum(store)
    print(f"  filled in {time.perf_counter() - started:.1f} s", flush=True)


def vacuum(store: Store) -> None:
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE jobs" if store.dialect == "postgresql" else "ANALYZE"))


def insert_rows(conn, dialect, queue, count, low, levels, status, delayed, *, tenants: int = 0):
    """`count` rows of `queue`, of the default tenant, or of tenants c0 ... c<tenants - 1>."""
    finished = "now()" if dialect == "postgresql" else "strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'"
    run_at = RUN_AT[dialect].format(delayed="1=1" if delayed else "1=0")
    tenant = f"'c' || (n % {tenants})" if tenants else f"'{DEFAULT_TENANT}'"
    conn.execute(
        text(
            "INSERT INTO jobs (id, tenant, type, queue, payload, priority, status, attempts, max_retries, run_at,"
            " created_at, updated_at, finished_at)"
            f" SELECT {NEW_ID[dialect]}, {tenant}, 'noop', '{queue}', '{{}}', {low} + n % {levels}, '{status}', 0, 3,"
            f" {run_at}, {run_at}, {run_at}, {finished if status == 'succeeded' else 'NULL'} "
            + SERIES[dialect].format(count=count)
        )
    )


# -- measuring -----------------------------------------------------------------------------------


def run_shapes(backend: str, url: str, options: argparse.Namespace) -> None:
    store = Store.from_url(url)
    try:
        print(f"\n{backend}")
        fill(store, options)
        print(
            f"  {'':<38} {'Store.lease_jobs (committed)':^30} | {'ready query p50':^19} | {'server: execution (+planning), p50':^41}"
        )
        print(f"  {'shape':<38} {'p50':>9} {'p95':>9} {'max':>9} | {'new':>9} {'old':>9} | {'new':>20} {'old':>20}")
        for shape, (queues, tenant) in SHAPES.items():
            vacuum(store)  # each shape from a vacuumed table (this server may run no autovacuum)
            new_server, old_server = server_times(store, queues, tenant, options.old_leases)
            new = timings(lambda q=queues, t=tenant: run_ready_query(store, q, t), options.leases)
            old = timings(lambda q=queues: run_old_query(store.engine, q), options.old_leases)
            lease = timings(
                lambda q=queues, t=tenant: store.lease_jobs(q, "bench", BATCH, TTL_SECONDS, tenant=t), options.leases
            )
            print(
                f"  {shape:<38} {ms(lease, 50):>9} {ms(lease, 95):>9} {ms(lease, 100):>9} |"
                f" {ms(new, 50):>9} {ms(old, 50):>9} | {new_server:>20} {old_server:>20}",
                flush=True,
            )
    finally:
        store.close()


def run_old_query(engine: Engine, queues: list[str], explain: str = "") -> list:
    names = ", ".join(f"'{q}'" for q in queues)
    query = OLD_LEASE_QUERY.format(queues=names, now=OLD_NOW[engine.dialect.name], batch=BATCH)
    if engine.dialect.name == "postgresql":
        query += " FOR UPDATE SKIP LOCKED"
    with engine.connect() as conn:
        rows = conn.execute(text(explain + query)).all()
        conn.rollback()
    return rows


def run_ready_query(store: Store, queues: list[str], tenant: str, explain: str = "") -> list:
    """The ready-jobs part of today's lease alone (locks taken, then rolled back)."""
    with store.engine.connect() as conn:
        clock = store._clock(None)
        if store.dialect == "postgresql":
            statement = select(ready.ready_cte(len(queues), tenant == ALL_TENANTS, False).c.id)
            params = {f"queue_{n}": queue for n, queue in enumerate(queues)}
            params |= {"lease_tenant": tenant, "max_jobs": BATCH, "rotation": ready.next_rotation(BATCH)}
            for setting in PLANNED_IN_INDEX_ORDER.split("; ")[:-1]:  # as the lease statement runs
                conn.exec_driver_sql(setting)
            if explain:
                prefix = lambda conn, cursor, statement, parameters, context, many: (explain + statement, parameters)
                event.listen(conn, "before_cursor_execute", prefix, retval=True)
            rows = conn.execute(statement, params).all()
        else:
            rows = store._ready_ids_level_by_level(conn, clock, queues, tenant, BATCH)
        conn.rollback()
    return rows


def server_times(store: Store, queues: list[str], tenant: str, runs: int) -> tuple[str, str]:
    """PostgreSQL's own execution + planning time (EXPLAIN ANALYZE), medians of `runs`: no
    client, no network. Printed as "execution (+ planning)"."""
    if store.dialect != "postgresql":
        return "", ""
    explain = "EXPLAIN (ANALYZE, SUMMARY, TIMING OFF) "
    new = [_server_ms(run_ready_query(store, queues, tenant, explain)) for _ in range(runs)]
    old = [_server_ms(run_old_query(store.engine, queues, explain)) for _ in range(runs)]
    return _execution_and_planning(new), _execution_and_planning(old)


def _server_ms(plan_rows: list) -> tuple[float, float]:
    lines = {row[0].strip().split(":")[0]: row[0].strip() for row in plan_rows}
    return float(lines["Execution Time"].split()[2]), float(lines["Planning Time"].split()[2])


def _execution_and_planning(times: list[tuple[float, float]]) -> str:
    execution, planning = (statistics.median(t[n] for t in times) for n in (0, 1))
    return f"{execution:.2f} (+{planning:.2f}) ms"


def timings(call: Callable[[], object], runs: int) -> list[float]:
    call()  # warm: connection, statement cache, catalog
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return seconds


def ms(seconds: list[float], percentile: int) -> str:
    ordered = sorted(seconds)
    index = min(len(ordered) - 1, round(percentile / 100 * (len(ordered) - 1)))
    return f"{ordered[index] * 1000:.2f} ms"


# -- bloat -----------------------------------------------------------------------------------


def run_churn(url: str, options: argparse.Namespace, *, tuned: bool) -> None:
    """Lease + ack (one batched UPDATE per lease) in the busiest queue, N jobs, then sizes."""
    store = Store.from_url(url)
    try:
        label = "migration's fillfactor + autovacuum" if tuned else "PostgreSQL defaults"
        print(f"\npostgres churn, {label}")
        fill(store, options, tuned=tuned)
        print(f"  before: {sizes(store.engine)}")
        started = time.perf_counter()
        for _ in range(options.churn // options.churn_batch):
            leased = store.lease_jobs(["busy", "other"], "bench", options.churn_batch, TTL_SECONDS)
            ack_all(store.engine, [job.id for job in leased])
        elapsed = time.perf_counter() - started
        print(f"  {options.churn:,} lease + ack in {elapsed:.1f} s ({options.churn / elapsed:,.0f} jobs/s)")
        print(f"  after:  {sizes(store.engine)}")
        lease = timings(lambda: store.lease_jobs(["busy", "other"], "bench", BATCH, TTL_SECONDS), options.leases)
        print(f"  lease after churn: p50 {ms(lease, 50)}, p95 {ms(lease, 95)}, max {ms(lease, 100)}")
    finally:
        store.close()


def ack_all(engine: Engine, ids: list[str]) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE jobs SET status = 'succeeded', lease_expires_at = NULL, finished_at = now(),"
                " updated_at = now() WHERE id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"ids": ids},
        )


def sizes(engine: Engine) -> str:
    with engine.connect() as conn:
        table, indexes, dead, vacuums = conn.execute(
            text(
                "SELECT pg_table_size('jobs'), pg_indexes_size('jobs'), n_dead_tup, autovacuum_count"
                " FROM pg_stat_user_tables WHERE relname = 'jobs'"
            )
        ).one()
        hot = conn.execute(text("SELECT n_tup_hot_upd, n_tup_upd FROM pg_stat_user_tables WHERE relname = 'jobs'"))
        hot_updates, updates = hot.one()
    share = f"{hot_updates / updates:.0%}" if updates else "n/a"
    mib = 1024 * 1024
    return (
        f"table {table / mib:,.0f} MiB, indexes {indexes / mib:,.0f} MiB, dead rows {dead:,},"
        f" autovacuums {vacuums}, HOT updates {share}"
    )


if __name__ == "__main__":
    main()
