"""Engine creation: pool sizing, dead-connection checks, SQLite pragmas and SQLite's
BEGIN IMMEDIATE; and connections for one statement outside any transaction."""

from __future__ import annotations

import select
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2.extensions
import sqlalchemy
from sqlalchemy import Connection, Engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

SQLITE_BUSY_TIMEOUT_MS = 10_000
# Execution option of a connection that runs its statement outside a transaction (autocommit).
AUTOCOMMIT_OPTION = "quorra_autocommit"
# Our own PostgreSQL sessions never sit idle inside a transaction for long (bloat, locks).
PG_SESSION_OPTIONS = "-c idle_in_transaction_session_timeout=60000 -c lock_timeout=10000"
# Execution option of an autocommitted() connection whose statement may commit without
# waiting for its WAL to reach disk (PostgreSQL): see autocommitted(durable=False).
ASYNC_COMMIT_OPTION = "quorra_async_commit"
# Sent in the same simple-query message as the statement, so both run in one implicit
# transaction: the setting lasts until its commit, costs no round trip, and never leaks
# into the pooled session.
ASYNC_COMMIT_PREFIX = "SET LOCAL synchronous_commit TO off; "
# psycopg2 hands a uuid column over as the server's text, which is already canonical: Quorra
# keeps ids as text (Uuid(as_uuid=False)). SQLAlchemy registers psycopg2's uuid.UUID
# typecaster on every connection instead, and its Uuid type then turns each uuid.UUID back
# into text: a pure-Python object built and dropped per id, 13 % of the gRPC server's
# instructions per job in leases of 20 (bench/servicer_cost.py under callgrind). OIDs 2950
# and 2951: uuid and uuid[].
UUID_AS_TEXT = psycopg2.extensions.new_type((2950,), "QUORRA_UUID_TEXT", lambda value, _cursor: value)
UUID_ARRAY_AS_TEXT = psycopg2.extensions.new_array_type((2951,), "QUORRA_UUID_TEXT[]", UUID_AS_TEXT)


def make_engine(url: str, *, pool_size: int = 10, application_name: str = "quorra") -> Engine:
    """An engine for `url` with the settings each dialect needs to be a safe queue store.
    Size `pool_size` to the threads that use the engine at once, so no call opens a
    connection of its own; as many again may overflow briefly."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    if parsed.drivername == "postgresql":  # SQLAlchemy 2.1 would pick psycopg 3; we ship psycopg2
        parsed = parsed.set(drivername="postgresql+psycopg2")
    # Looked up at call time: OpenTelemetry's SQLAlchemy instrumentation, when tracing is on,
    # wraps sqlalchemy.create_engine after this module was imported.
    engine = sqlalchemy.create_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        # A call takes the session returned last (LIFO). Each session is a server process, and
        # one that has idled runs its next statement at several times the CPU (README, the
        # eighth round of issue 9): taking turns (FIFO, the default) kept every one of them cold.
        pool_use_lifo=True,
        connect_args={
            "options": PG_SESSION_OPTIONS,
            "application_name": application_name,
            "connect_timeout": 5,
        },
    )
    event.listen(engine, "connect", _read_uuids_as_text)  # after the dialect's own (uuid.UUID)
    event.listen(engine, "checkout", _refuse_dead_connection)
    event.listen(engine, "before_cursor_execute", STATEMENT_REWRITER, retval=True)
    return engine


def _read_uuids_as_text(dbapi_connection, _record) -> None:
    psycopg2.extensions.register_type(UUID_AS_TEXT, dbapi_connection)
    psycopg2.extensions.register_type(UUID_ARRAY_AS_TEXT, dbapi_connection)


# The execution option of a statement that runs with PLANNED_IN_INDEX_ORDER (the lease).
INDEX_ORDER_OPTION = "quorra_index_order"
PLANNED_IN_INDEX_ORDER = "SET LOCAL enable_bitmapscan = off; SET LOCAL jit = off; "


def _in_index_order(conn, cursor, statement: str, parameters, context, executemany: bool):
    """A statement with INDEX_ORDER_OPTION runs with bitmap scans and JIT compilation off,
    in the same round trip (the SETs and the statement share one transaction, implicit in
    autocommit). The lease's scans of a partition take max_jobs rows in index order; a bitmap
    scan would read all the rows of its priority level and sort them, and PostgreSQL's planner
    picks one when its estimate of a tenant's rows (from the average tenant: the tenant is
    read from a row) is a handful. Its recursive parts make the planner's cost estimate of a
    fleet lease large enough to JIT-compile it: some 250 ms for a statement of about 1 ms."""
    if context is not None and context.execution_options.get(INDEX_ORDER_OPTION):
        statement = PLANNED_IN_INDEX_ORDER + statement
    return statement, parameters


def _prefix_async_commit(conn, _cursor, statement, parameters, _context, executemany):
    """A connection of autocommitted(durable=False) runs its statement with synchronous_commit
    off, in the same round trip (see ASYNC_COMMIT_PREFIX)."""
    if not executemany and conn.get_execution_options().get(ASYNC_COMMIT_OPTION):
        return ASYNC_COMMIT_PREFIX + statement, parameters
    return statement, parameters


def _rewrite_statement(conn, cursor, statement, parameters, context, executemany):
    """Quorra's own prefixes of a statement, sent in its round trip: the lease's planner
    settings (INDEX_ORDER_OPTION), then a commit that need not wait for its WAL flush
    (ASYNC_COMMIT_OPTION). One listener, so quorra.store.direct can tell it from any other."""
    statement, parameters = _in_index_order(conn, cursor, statement, parameters, context, executemany)
    return _prefix_async_commit(conn, cursor, statement, parameters, context, executemany)


def statement_settings(*, index_order: bool, durable: bool) -> str:
    """The prefixes _rewrite_statement gives a statement, for those run without SQLAlchemy
    (quorra.store.direct): the same settings, in the same order."""
    return (PLANNED_IN_INDEX_ORDER if index_order else "") + ("" if durable else ASYNC_COMMIT_PREFIX)


# The statement listener every engine gets; it changes only statements run with the options
# above (quorra.store.direct runs its statements without SQLAlchemy otherwise).
STATEMENT_REWRITER = _rewrite_statement


def _refuse_dead_connection(dbapi_connection, _record, _proxy) -> None:
    """Instead of pool_pre_ping's round trip per checkout: a pooled session has nothing to
    read unless the server hung up on it (a restart sends a FATAL notice, then closes the
    socket). DisconnectionError makes the pool drop it and hand out a fresh connection."""
    if _has_hung_up(dbapi_connection):
        raise sa_exc.DisconnectionError("the database closed this pooled connection")


def _has_hung_up(dbapi_connection) -> bool:
    if dbapi_connection.closed:
        return True
    try:
        readable, _, _ = select.select([dbapi_connection.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _sqlite_engine(url: str) -> Engine:
    # check_same_thread=False: the pool hands one connection to one thread at a time.
    engine = sqlalchemy.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        # Take the write lock up front: two leasers can never read the same ready row.
        # A connection of autocommitted() runs its statement without a transaction, so no lock.
        if not connection.get_execution_options().get(AUTOCOMMIT_OPTION):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@contextmanager
def autocommitted(engine: Engine, *, durable: bool = True) -> Iterator[Connection]:
    """A connection for one statement that runs outside any transaction: no BEGIN and COMMIT
    round trips around it (PostgreSQL) and no write lock (SQLite). One statement is atomic
    and sees one snapshot on its own. SQLAlchemy's isolation_level="AUTOCOMMIT" would cost
    two more round trips on PostgreSQL when the connection goes back to the pool (SET SESSION
    CHARACTERISTICS, COMMIT), so psycopg2's own switch is flipped for the statement instead.

    `durable=False` (PostgreSQL): the statement commits with synchronous_commit off, so it
    is answered without waiting for the WAL flush (an fsync: 1 ms on a quiet disk, several
    on a busy one). A database crash can lose such a commit made in the last few hundred
    ms; only for writes whose loss the queue already survives (a lease: see Store)."""
    with engine.connect() as conn:
        if engine.dialect.name != "postgresql":
            # pysqlite runs without a transaction unless _begin_immediate starts one; it is told not to.
            yield conn.execution_options(**{AUTOCOMMIT_OPTION: True})
            return
        if not durable:
            conn.execution_options(**{ASYNC_COMMIT_OPTION: True})
        dbapi_connection = conn.connection.dbapi_connection
        dbapi_connection.autocommit = True
        try:
            yield conn
        finally:
            if not dbapi_connection.closed:  # a connection lost meanwhile is discarded anyway
                dbapi_connection.autocommit = False  # before the pool hands it to a transaction
