"""The hot statements use the partial indexes made for them (DESIGN.md) and read no more
rows than they return, however long the queues are. We capture the statements the store
really sends and ask each database for its plan: for the lease, on tables large enough for
the planner to choose as in production (thousands of ready, delayed and finished jobs,
analysed on PostgreSQL), in every shape the lease takes; for the reaper, after ANALYZE and
with sequential scans off, so that the answer does not depend on how few rows a test has."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import event, insert, update

from quorra.access import ALL_TENANTS
from quorra.db import make_engine
from quorra.schema import jobs
from quorra.store import Store
from quorra.store.direct import GENERIC_PLAN, PREPARED_INFO_KEY, DirectStatement
from quorra.store.leasing import prepared_lease
from quorra.store.settling import Settlement, prepared_settle
from tests.factories import job_in_status, make_job, spec
from tests.store.support import later

LEASE_BATCH = 5
PER_QUEUE = 3000


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


def _fill(store: Store) -> None:
    """Full queues in every shape a lease meets: ready jobs over several priorities, a
    backlog of delayed jobs above a few ready ones, finished jobs, a nearly empty queue."""
    now = store.database_now()
    rows = [_row("busy", n % 3, "pending", now - timedelta(seconds=n)) for n in range(PER_QUEUE)]
    rows += [_row("other", n % 3, "pending", now - timedelta(seconds=n)) for n in range(PER_QUEUE)]
    rows += [_row("busy", n % 3, "succeeded", now - timedelta(seconds=n)) for n in range(PER_QUEUE)]
    rows += [_row("delayed", 5 + n % 5, "pending", now + timedelta(seconds=60 + n)) for n in range(PER_QUEUE)]
    rows += [_row("delayed", n % 2, "failed", now - timedelta(seconds=n)) for n in range(30)]
    rows += [_row("quiet", 0, "pending", now - timedelta(seconds=n)) for n in range(3)]
    rows += [_row("busy", n % 3, "pending", now - timedelta(seconds=n), f"t{n % 20:02}") for n in range(400)]
    rows += [_row("shared", n % 3, "pending", now - timedelta(seconds=n), f"t{n % 20:02}") for n in range(3000)]
    rows += [_row("crowd", n % 2, "pending", now - timedelta(seconds=n), f"c{n % 200:03}") for n in range(2000)]
    with store.engine.begin() as conn:
        conn.execute(insert(jobs), rows)


def _row(queue: str, priority: int, status: str, run_at, tenant: str = "default") -> dict:
    finished = run_at if status == "succeeded" else None
    return {
        "id": str(uuid.uuid4()), "tenant": tenant, "type": "noop", "queue": queue, "payload": {}, "priority": priority,
        "status": status, "run_at": run_at, "created_at": run_at, "updated_at": run_at, "finished_at": finished,
    }  # fmt: skip


# shape: (queues, tenant, partitions: the (tenant, queue) pairs with jobs the lease walks)
LEASE_SHAPES = {
    "one queue": (["busy"], "default", 1),
    "two queues": (["busy", "other"], "default", 2),
    "delayed jobs of a higher priority in front": (["delayed"], "default", 1),
    "a quiet queue beside full ones": (["quiet"], "default", 1),
    "every queue": (["quiet", "delayed", "other", "busy"], "default", 4),
    "one tenant of many": (["crowd"], "c007", 1),
    "fleet, one queue of 20 tenants": (["shared"], ALL_TENANTS, 20),
    "fleet, a big tenant among small ones": (["busy"], ALL_TENANTS, 21),
    "fleet, two queues": (["shared", "crowd"], ALL_TENANTS, 220),
    "fleet, one queue of 200 tenants": (["crowd"], ALL_TENANTS, 200),
}


@pytest.fixture
def full_store(postgres_url) -> Iterator[Store]:
    """PostgreSQL with full queues of every shape (_fill), analysed."""
    store = Store.from_url(postgres_url)
    try:
        _fill(store)
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE jobs")
        yield store
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_lease_reads_few_rows_of_ix_jobs_ready_in_every_shape(full_store):
    for shape, (queues, tenant, partitions) in LEASE_SHAPES.items():
        # When a worker leases a batch (the statement as SQLAlchemy sends it: a listener is on)
        with statements_sent(full_store) as sent:
            leased = full_store.lease_jobs(queues, "worker-a", LEASE_BATCH, 30, tenant=tenant)
        # Then the plan reads ix_jobs_ready (or the primary key, to update), never the
        # whole table, and no step handles more than a few rows per partition
        assert leased, shape
        _assert_reads_few_rows(shape, _analysed_plan(full_store, *the_one(sent, "UPDATE jobs")), partitions)


@pytest.mark.postgres
def test_postgres_prepared_lease_has_a_generic_plan_that_reads_few_rows_in_every_shape(full_store):
    for shape, (queues, tenant, partitions) in LEASE_SHAPES.items():
        # When the lease statement is prepared, as a session does, and run with the generic
        # plan it gets (one plan for any values, made before any were known)
        plan = _generic_plan(full_store, queues, tenant)
        # Then that plan too reads few rows of ix_jobs_ready in each shape
        assert plan["Actual Rows"] > 0, shape
        _assert_reads_few_rows(shape, plan, partitions)


@pytest.mark.postgres
def test_postgres_fleet_lease_over_many_tenants_walks_only_the_tenants_it_takes(full_store):
    # Given 200 tenants with jobs waiting in one queue (_fill's "crowd")
    # When a fleet worker leases a batch from it (the prepared statement's generic plan)
    plan = _generic_plan(full_store, ["crowd"], ALL_TENANTS)
    # Then it took a full batch, walking and locking the partitions of the tenants it took,
    # not one of every tenant's 200
    locks = [node for node in _plan_nodes(plan) if node["Node Type"] == "LockRows"]
    assert plan["Actual Rows"] == LEASE_BATCH
    assert sum(node["Actual Loops"] for node in locks) <= 2 * LEASE_BATCH, locks


@pytest.mark.postgres
def test_postgres_lease_plan_made_on_a_nearly_empty_table_reads_few_rows_once_it_is_full(postgres_url):
    # Given one session that leased while the table held one job (a new installation): the
    # lease's generic plan was made then, for the table as it was
    store = Store.from_url(postgres_url, pool_size=1)
    try:
        make_job(store, queue="busy")
        assert store.lease_jobs(["busy"], "worker-a", LEASE_BATCH, 30)
        # When the table fills up, before anything analyses it (autovacuum has not come by)
        _fill(store)
        # Then, in that session, the lease still reads few rows of ix_jobs_ready (the settle,
        # planned for each call, is planned for the table as it is: test_direct.py)
        lease, lease_params = prepared_lease(["busy"], "default", "worker-a", LEASE_BATCH, 30, None)
        _assert_reads_few_rows("one queue", _plan_in_session(store, lease, lease_params), 1)
    finally:
        store.close()


@pytest.mark.postgres
@pytest.mark.parametrize("analysed", [False, True], ids=["not analysed yet", "analysed"])
def test_postgres_settle_reads_its_batch_by_primary_key(postgres_url, analysed):
    # Given full queues, analysed or not yet (a new database just filled), and one session
    # that settled before (its settle statement is prepared) and holds a batch of leases
    with _one_session(postgres_url, _fill, analysed) as store:
        [first] = store.lease_jobs(["busy"], "worker-a", 1, 30)
        store.settle_many([Settlement(first.id, first.lease_id, True)], worker_id="worker-a")
        batch = store.lease_jobs(["busy"], "worker-a", LEASE_BATCH, 30)
        # When the settle of that batch is planned, on that session
        settlements = [Settlement(job.id, job.lease_id, True) for job in batch]
        nodes = list(_plan_nodes(_plan_in_session(store, *prepared_settle(settlements, "worker-a", "default"))))
        # Then it reads the batch's jobs by primary key, whatever the statistics say, and no
        # step handles more than a few rows per job
        job_reads = {
            (node["Node Type"], node.get("Index Name")) for node in nodes if node.get("Relation Name") == "jobs"
        }
        assert job_reads - {("ModifyTable", None)} == {("Index Scan", "pk_jobs")}, job_reads
        assert max(_rows_handled(node) for node in nodes) <= 4 * LEASE_BATCH


@contextmanager
def _one_session(postgres_url: str, fill: Callable[[Store], None], analysed: bool) -> Iterator[Store]:
    """A store of one pooled session (the statements it prepares are the ones planned), its
    table filled by `fill`, then analysed or not (a new database that nothing analysed yet)."""
    store = Store.from_url(postgres_url, pool_size=1)
    try:
        fill(store)
        if analysed:
            with store.engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE jobs")
        yield store
    finally:
        store.close()


def _plan_in_session(store: Store, statement: DirectStatement, params: dict) -> dict:
    """EXPLAIN ANALYZE of a prepared statement on the store's one pooled session, which
    prepared it (its cached plan), with the settings the store sends before it; rolled back."""
    compiled, values, settings = statement.bound(store.engine, params)
    connection = store.engine.raw_connection()
    try:
        assert statement.name in connection.info[PREPARED_INFO_KEY]
        with connection.cursor() as cursor:
            cursor.execute(settings + "EXPLAIN (ANALYZE, FORMAT JSON) " + compiled.execute, values)
            [[plan]] = cursor.fetchall()
        connection.rollback()
    finally:
        connection.close()
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return plan[0]["Plan"]


def _assert_reads_few_rows(shape: str, plan: dict, partitions: int) -> None:
    """The plan reads ix_jobs_ready (or the primary key, to update), never the whole table;
    each partition's pause flag and limits are read by primary key about once, and its
    tenant's limits too; no step handles more than a few rows per partition."""
    nodes = list(_plan_nodes(plan))
    scans = {(node["Node Type"], node.get("Index Name")) for node in nodes if "Scan" in node["Node Type"]}
    scans = {scan for scan in scans if scan[0] not in ("CTE Scan", "WorkTable Scan", "Subquery Scan")}
    # (the tenants table holds a row per tenant with limits only: the planner may read it whole)
    tenant_reads = {("Seq Scan", None)} if _reads_tenants_whole(nodes) else set()
    scans -= tenant_reads
    assert {index for _, index in scans} <= {"ix_jobs_ready", "pk_jobs", "pk_queues", "pk_tenants"}, (shape, scans)
    pause_probes = [node for node in nodes if node.get("Index Name") == "pk_queues"]
    assert sum(node.get("Actual Loops", 1) for node in pause_probes) <= 2 * partitions, (shape, nodes)
    tenant_probes = [node for node in nodes if node.get("Index Name") == "pk_tenants"]
    assert sum(node.get("Actual Loops", 1) for node in tenant_probes) <= 2 * partitions, (shape, nodes)
    busiest = max(_rows_handled(node) for node in nodes)
    assert busiest <= 4 * LEASE_BATCH * partitions, (shape, busiest)


def _generic_plan(store: Store, queues: list[str], tenant: str) -> dict:
    """EXPLAIN ANALYZE of the prepared lease, on a session of its own, with the settings the
    store sends before its EXECUTE (plan_cache_mode among them), rolled back."""
    statement, params = prepared_lease(queues, tenant, "worker-a", LEASE_BATCH, 30, None)
    compiled, values, settings = statement.bound(store.engine, params)
    assert GENERIC_PLAN in settings
    engine = make_engine(str(store.engine.url.render_as_string(hide_password=False)), pool_size=1)
    connection = engine.raw_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute(compiled.prepare)
            cursor.execute(settings + "EXPLAIN (ANALYZE, FORMAT JSON) " + compiled.execute, values)
            [[plan]] = cursor.fetchall()
        connection.rollback()
    finally:
        connection.close()
        engine.dispose()
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return plan[0]["Plan"]


def _reads_tenants_whole(nodes: list[dict]) -> bool:
    seq_scans = [node for node in nodes if node["Node Type"] == "Seq Scan"]
    return bool(seq_scans) and all(node.get("Relation Name") == "tenants" for node in seq_scans)


def _analysed_plan(store: Store, statement: str, parameters) -> dict:
    """EXPLAIN ANALYZE runs the statement: in a transaction that is rolled back, after the
    settings the store sent with it (SET LOCAL ...; the statement)."""
    settings = []
    while statement.startswith("SET LOCAL "):  # PLANNED_IN_INDEX_ORDER, ASYNC_COMMIT_PREFIX
        setting, statement = statement.split("; ", 1)
        settings.append(setting)
    with store.engine.connect() as conn:
        for setting in settings:
            conn.exec_driver_sql(setting)
        [[plan]] = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters).all()
        conn.rollback()
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return plan[0]["Plan"]


def _plan_nodes(node: dict) -> Iterator[dict]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


def _rows_handled(node: dict) -> float:
    per_loop = node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
    return per_loop * node.get("Actual Loops", 1)


def test_sqlite_lease_searches_ix_jobs_ready_in_every_shape(sqlite_url):
    # Given full queues of every shape (not analysed: a fresh SQLite database never is)
    store = Store.from_url(sqlite_url)
    try:
        _fill(store)
        for shape, (queues, tenant, partitions) in LEASE_SHAPES.items():
            # When a worker leases a batch
            with statements_sent(store) as sent, vm_steps(store) as steps:
                leased = store.lease_jobs(queues, "worker-a", LEASE_BATCH, 30, tenant=tenant)
            # Then every statement searches ix_jobs_ready by queue and priority (or the
            # primary key, to update), and the whole lease does far less work than reading
            # one queue's backlog would
            assert leased, shape
            for statement, parameters in sent:
                if _reads_which_queues_have_limits(statement):
                    continue  # a process's copy of them, read again once a second (store.limits.LimitCache)
                if statement.startswith(("SELECT", "UPDATE")):
                    _assert_searches_ready_index(query_plan(store, statement, parameters), shape)
            assert steps[0] <= SQLITE_STEPS_PER_PARTITION * partitions + SQLITE_STEPS_FOR_LIMITS, (shape, steps[0])
    finally:
        store.close()


# SQLite virtual machine steps a lease may take per partition it walks: reading the 3,000
# rows of one queue's backlog takes about 16,000; the level walk about 500 per level visited.
SQLITE_STEPS_PER_PARTITION = 2000
# And once per lease: whether its queues or its tenant have limits (store.limits.limits_apply).
SQLITE_STEPS_FOR_LIMITS = 200
READY_INDEX_SEARCHES = (
    "(queue=?)",  # a fleet lease's first tenant of a queue
    "(queue=? AND tenant>?)",  # and the next
    "(queue=? AND tenant=?)",
    "(queue=? AND tenant=? AND priority<?)",
    "(queue=? AND tenant=? AND priority=? AND run_at<?)",
)


def _reads_which_queues_have_limits(statement: str) -> bool:
    return "jobs" not in statement and "max_in_flight IS NOT NULL" in statement


@contextmanager
def vm_steps(store: Store) -> Iterator[list[int]]:
    """Count the SQLite virtual machine instructions run meanwhile, in steps of 100."""
    steps = [0]

    def count() -> int:
        steps[0] += 100
        return 0  # go on

    def on_checkout(dbapi_connection, record, proxy):
        dbapi_connection.set_progress_handler(count, 100)

    event.listen(store.engine, "checkout", on_checkout)
    try:
        yield steps
    finally:
        event.remove(store.engine, "checkout", on_checkout)


def _assert_searches_ready_index(plan: str, shape: str) -> None:
    for line in plan.splitlines():
        if "jobs" in line:
            searches = [f"SEARCH jobs USING INDEX ix_jobs_ready {terms}" for terms in READY_INDEX_SEARCHES]
            assert line in searches or line.endswith("(id=?)"), (shape, plan)
        if "queues" in line:  # the pause flag, by primary key
            assert line.endswith("USING INDEX sqlite_autoindex_queues_1 (tenant=? AND name=?)"), (shape, plan)


def test_wake_up_query_reads_ix_jobs_due(store):
    # Given full queues of every shape (analysed on PostgreSQL)
    _fill(store)
    if store.dialect == "postgresql":
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE jobs")
    # When the scheduler asks which queues have jobs that fell due in the last tick
    with statements_sent(store) as sent:
        store.queues_due_between(store.database_now() - timedelta(seconds=1))
    # Then the database reads that window of ix_jobs_due, not every waiting job
    statement, parameters = the_one(sent, "DISTINCT")
    if store.dialect == "sqlite":
        assert "SEARCH jobs USING INDEX ix_jobs_due (run_at>? AND run_at<?)" in query_plan(store, statement, parameters)
        return
    nodes = list(_plan_nodes(_analysed_plan(store, statement, parameters)))
    assert {node.get("Index Name") for node in nodes if "Scan" in node["Node Type"]} == {"ix_jobs_due"}, nodes
    assert max(_rows_handled(node) for node in nodes) <= 10, nodes


def test_reaper_query_reads_the_lease_expiry_index(store):
    # Given busy queues with held leases
    _busy_queues(store)
    # When the reaper looks for expired leases
    with statements_sent(store) as sent:
        store.reap_expired_leases(now=later(store, 3600))
    # Then the database plans that query on ix_jobs_lease_expiry
    plan = query_plan(store, *the_one(sent, "ORDER BY jobs.lease_expires_at"))
    assert "ix_jobs_lease_expiry" in plan, plan


def _tenants_jobs(store: Store) -> None:
    """A big tenant's backlog and a small tenant's few jobs, in queues of the same names."""
    now = store.database_now()
    rows = [_row(f"q{n % 3}", 0, "pending", now - timedelta(seconds=n)) | {"tenant": "big"} for n in range(PER_QUEUE)]
    rows += [_row(f"q{n % 3}", 0, "pending", now - timedelta(seconds=n)) | {"tenant": "small"} for n in range(5)]
    with store.engine.begin() as conn:
        conn.execute(insert(jobs), rows)


TENANT_LISTS = {
    "newest first": ({}, "ix_jobs_tenant_created"),
    "newest first, a page on": ({"cursor": True}, "ix_jobs_tenant_created"),
    "by queue and status": ({"queue": "q1", "status": "pending"}, "ix_jobs_tenant_"),
}


@pytest.mark.parametrize("shape", list(TENANT_LISTS))
def test_listing_a_tenants_jobs_reads_an_index_led_by_the_tenant(store, shape):
    # Given a big tenant's backlog beside a small tenant's jobs
    _tenants_jobs(store)
    filters, index = TENANT_LISTS[shape]
    if filters.pop("cursor", False):
        filters["cursor"] = store.list_jobs(tenant="small", limit=2).next_cursor
    # When the small tenant lists its jobs
    with statements_sent(store) as sent:
        page = store.list_jobs(tenant="small", limit=2, bodies=False, **filters)
    # Then the database searches an index by the tenant, never the whole table
    assert page.jobs and {job.tenant for job in page.jobs} == {"small"}
    plan = query_plan(store, *the_one(sent, "FROM jobs", "ORDER BY"))
    assert index in plan, plan
    if store.dialect == "sqlite":
        assert "tenant=?" in plan and "SCAN jobs" not in plan, plan


def test_counting_a_tenants_queues_reads_an_index_led_by_the_tenant(store):
    _tenants_jobs(store)
    with statements_sent(store) as sent:
        counts = store.queue_counts(tenant="small")
    assert sum(count.count for count in counts) == 5
    plan = query_plan(store, *the_one(sent, "GROUP BY"))
    assert "ix_jobs_tenant_queue_status" in plan, plan


def _queue_history(store: Store) -> None:
    """A table as a busy installation's looks before anything vacuumed it: a long history of
    jobs that were leased, then finished (each change left the row's old version behind, in
    every index), in a few busy queues and a little of it in the queue "busy"; none waiting."""
    now = store.database_now()
    history = [_row(f"done{n % 4}", n % 3, "pending", now - timedelta(seconds=n)) for n in range(10 * PER_QUEUE)]
    history += [_row("busy", n % 3, "pending", now - timedelta(seconds=n)) for n in range(20)]
    ids = [row["id"] for row in history]
    with store.engine.begin() as conn:
        conn.execute(insert(jobs), history)
        for status in ("leased", "succeeded"):
            conn.execute(update(jobs).where(jobs.c.id.in_(ids)).values(status=status))


@pytest.mark.postgres
@pytest.mark.parametrize("analysed", [False, True], ids=["not analysed", "analysed"])
def test_postgres_generic_lease_plan_walks_ix_jobs_ready_whatever_the_statistics(postgres_url, analysed):
    # Given a long history of finished jobs and none waiting, analysed or not (autovacuum
    # off, or not come by yet), and one session that leased from "busy" then (its generic
    # plan was made for the table as it was)
    with _one_session(postgres_url, _queue_history, analysed) as store:
        assert store.lease_jobs(["busy"], "worker-a", 1, 30) == []
        # When jobs arrive, in that queue and a backlog in another, and that session leases again
        now = store.database_now()
        arrived = [_row("busy", 0, "pending", now - timedelta(seconds=n)) for n in range(LEASE_BATCH)]
        arrived += [_row("other", 0, "pending", now - timedelta(seconds=n)) for n in range(PER_QUEUE)]
        with store.engine.begin() as conn:
            conn.execute(insert(jobs), arrived)
        lease, lease_params = prepared_lease(["busy"], "default", "worker-a", LEASE_BATCH, 30, None)
        plan = _plan_in_session(store, lease, lease_params)
        # Then its plan walks ix_jobs_ready and reads few rows: not the queue's whole history
        # through the tenant's index of every job (the plan made without statistics), nor
        # every ready job of every queue through ix_jobs_due (the plan made from statistics
        # that counted few of them), each of which sorted what it read
        assert plan["Actual Rows"] > 0
        _assert_reads_few_rows("after a long history", plan, 1)
