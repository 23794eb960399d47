"""The hot statements use the partial indexes made for them (DESIGN.md): the lease query
reads ix_jobs_ready, the reaper ix_jobs_lease_expiry. We capture the statement the store
really sends and ask each database for its plan (PostgreSQL after ANALYZE and with
sequential scans off, so that the answer does not depend on how few rows a test has)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event

from quorra.store import Store
from tests.factories import job_in_status, spec
from tests.store.support import later


@contextmanager
def statements_sent(store: Store) -> Iterator[list[tuple[str, object]]]:
    sent: list[tuple[str, object]] = []

    def remember(conn, cursor, statement, parameters, context, executemany):
        sent.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", remember)
    try:
        yield sent
    finally:
        event.remove(store.engine, "before_cursor_execute", remember)


def query_plan(store: Store, statement: str, parameters) -> str:
    with store.engine.connect() as conn:
        if store.dialect == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
            return "\n".join(row[-1] for row in rows)
        conn.exec_driver_sql("ANALYZE jobs")  # a fresh table has no statistics to plan by
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters).all()
        conn.rollback()
        return "\n".join(row[0] for row in rows)


def the_one(sent, *fragments: str) -> tuple[str, object]:
    [found] = [(sql, params) for sql, params in sent if all(f in sql for f in fragments)]
    return found


def _busy_queues(store: Store) -> None:
    """Ready jobs in several queues, and finished ones that the partial indexes leave out."""
    for status in ("succeeded", "dead", "cancelled", "leased", "processing"):
        job_in_status(store, status, queue="q1")  # first, while q1 holds no other ready job
    store.enqueue_many([spec(queue=f"q{n % 4}", priority=n % 3) for n in range(200)])


def test_lease_query_reads_the_ready_index(store):
    # Given busy queues
    _busy_queues(store)
    # When a worker leases from one queue
    with statements_sent(store) as sent:
        store.lease_jobs(["q1"], "worker-a", 5, 30)
    # Then the database plans the lease query on ix_jobs_ready
    plan = query_plan(store, *the_one(sent, "ORDER BY jobs.priority DESC"))
    assert "ix_jobs_ready" in plan, plan


def test_reaper_query_reads_the_lease_expiry_index(store):
    # Given busy queues with held leases
    _busy_queues(store)
    # When the reaper looks for expired leases
    with statements_sent(store) as sent:
        store.reap_expired_leases(now=later(store, 3600))
    # Then the database plans that query on ix_jobs_lease_expiry
    plan = query_plan(store, *the_one(sent, "ORDER BY jobs.lease_expires_at"))
    assert "ix_jobs_lease_expiry" in plan, plan
