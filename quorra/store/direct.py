"""The statements that run once per REST request or lease, run straight on a pooled DBAPI
connection of PostgreSQL, prepared once per session.

SQLAlchemy Core builds each statement once, at import, and compiles it once per dialect.
Running it through a ``Connection`` still costs about 80 µs of Python a call (a Connection,
an execution context, a cursor result and its row), more than the round trip to PostgreSQL:
for ``GET /v1/jobs/{id}`` that was a fifth of the web process's CPU. A ``DirectStatement``
takes a pooled connection (the pool's checkout listeners still run), switches it to autocommit
for its one statement, as ``quorra.db.autocommitted`` does, and reads plain tuples; the values
go through the same bind and result processors as SQLAlchemy's own rows.

On PostgreSQL the statement is also prepared on each session the first time that session runs
it (``PREPARE``, then ``EXECUTE`` with the values): the server parses and plans it once per
session instead of once per call. A session that loses it (a transaction-pooling PgBouncer
hands out another server connection, a ``DEALLOCATE``, a plan invalidated by a migration)
runs the plain statement from then on.

The lease is prepared with a generic plan (``plan_cache_mode = force_generic_plan``, sent with
each ``EXECUTE``): planned once per session, never again for the values of a call; its plan was
2 to 3 ms of PostgreSQL's CPU per lease, several times the statement's run. A generic plan is
kept however the table grows after it was made, so the same settings rule out sequential
scans, hash joins, merge joins and sorts while it is made (GENERIC_PLAN): the lease reaches
jobs by probes of ix_jobs_ready, in its order. The settle is prepared with custom plans
(planned for each call's values and the table as it is then): its best plan depends on how
many jobs the table holds, and a plan made on a nearly empty table would read every job of
the tenant once the table is full.
tests/store/test_query_plans.py checks the lease's generic plan in every shape, one made
on a nearly empty table once the table is full, and ones made on a table of finished jobs,
analysed or not.

Whenever anything listens to the engine's statement events (OpenTelemetry's SQLAlchemy
instrumentation, when tracing is on), the statement goes through SQLAlchemy instead, so every
statement is still seen; Quorra's own listener (quorra.db's lease planner settings) does
nothing to these statements and does not count. SQLite always takes SQLAlchemy's path."""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.types import NullType

from quorra.db import INDEX_ORDER_OPTION, STATEMENT_REWRITER, autocommitted, statement_settings

# What a session's connection record keeps: the names it prepared, or False once it runs plain.
PREPARED_INFO_KEY = "quorra_prepared"
# SQLSTATEs after which a session runs the plain statement: invalid_sql_statement_name (not
# prepared on this server session), feature_not_supported (a cached plan whose result type
# changed), duplicate_prepared_statement.
_PREPARE_LOST = frozenset({"26000", "0A000", "42P05"})
_PLACEHOLDER = re.compile(r"%(?:\((\w+)\)s|%)")
_names = itertools.count(1)
# One plan per session for every call's values, and for every size of the tables: a generic
# plan is made once, from the statistics of that moment (a fresh database's empty table, where
# a sequential scan or a hash join over the whole table looks cheapest), and kept as the table
# grows. The statement given one reaches jobs by index only (ix_jobs_ready probes, primary-key
# lookups), so scans and joins that would read a whole table are ruled out while it is planned,
# and so are sorts: ix_jobs_ready hands each partition's jobs over in the lease's order, and
# the plans that sorted instead read another index whole (made on a table full of finished
# jobs, without statistics: the tenant's index of every job, the queue's whole history; from
# statistics that counted few waiting jobs: ix_jobs_due, every ready job of every queue).
GENERIC_PLAN = (
    "SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off; "
    "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; "
    "SET LOCAL enable_sort = off; SET LOCAL enable_incremental_sort = off; "
)
CUSTOM_PLANS = "SET LOCAL plan_cache_mode = force_custom_plan; "
_PLAN_SETTINGS = {"auto": "", "generic": GENERIC_PLAN, "custom": CUSTOM_PLANS}

Processor = Callable[[Any], Any]


class PreparedStatementLost(Exception):
    """This session no longer held a statement it had prepared (quorra.store.direct's module
    text), inside a transaction that the error aborted: run the transaction again (its
    session now runs the plain statement)."""


@dataclass(frozen=True)
class Compiled:
    plain: str  # the statement as psycopg2 takes it, with %(name)s placeholders
    prepare: str  # PREPARE <name> AS the statement with $1, $2, ...
    execute: str  # EXECUTE <name>(%(first)s, %(second)s, ...)
    constants: Mapping[str, Any]  # the values bound in the statement itself, processed
    binds: Mapping[str, Processor]  # the given parameters' bind processors, where they have one
    columns: Sequence[tuple[int, Processor]]  # (position, processor) of the columns that have one


class DirectStatement:
    """One Core statement that returns rows (a SELECT, whose CTE may hold the write, or an
    UPDATE ... RETURNING) run on the DBAPI cursor on PostgreSQL, through SQLAlchemy
    elsewhere; thread-safe. `plans`: "generic" (planned once per session), "custom" (for each
    call) or "auto" (PostgreSQL's choice, for statements whose plan is the same either way);
    see the module."""

    def __init__(self, statement: Executable, *, plans: Literal["auto", "generic", "custom"] = "auto"):
        self.statement = statement
        self.name = f"quorra_direct_{next(_names)}"
        self.column_names = tuple(column.key for column in statement.exported_columns)
        self._index_order = bool(statement.get_execution_options().get(INDEX_ORDER_OPTION))
        self._plan_settings = _PLAN_SETTINGS[plans]
        self._compiled: Compiled | None = None
        self._lock = threading.Lock()

    def rows(self, engine: Engine, parameters: Mapping[str, Any], *, durable: bool = True) -> list[tuple]:
        """The result rows, as tuples of the values SQLAlchemy's rows would hold. Not
        `durable`: committed without waiting for the WAL flush (quorra.db.autocommitted)."""
        if engine.dialect.name != "postgresql" or _has_statement_listeners(engine):
            with autocommitted(engine, durable=durable) as conn:
                return [tuple(row) for row in conn.execute(self.statement, dict(parameters))]
        compiled, values, settings = self.bound(engine, parameters, durable=durable)
        return [_processed(row, compiled.columns) for row in self._run(engine, compiled, values, settings)]

    def named(self, row: tuple) -> dict[str, Any]:
        """One of rows()'s rows as a dict of its columns by name."""
        return dict(zip(self.column_names, row, strict=True))

    def bound(
        self, engine: Engine, parameters: Mapping[str, Any], *, durable: bool = True
    ) -> tuple[Compiled, dict[str, Any], str]:
        """What rows() sends to PostgreSQL for `parameters`: the compiled texts, the values
        for them, and the settings sent before the statement."""
        compiled = self._compiled or self._compile(engine)
        values = dict(compiled.constants)
        for key, value in parameters.items():
            process = compiled.binds.get(key)
            values[key] = value if process is None or value is None else process(value)
        settings = statement_settings(index_order=self._index_order, durable=durable)
        return compiled, values, settings + self._plan_settings

    def _run(self, engine: Engine, compiled: Compiled, values: dict[str, Any], settings: str) -> list[tuple]:
        dbapi = engine.dialect.loaded_dbapi
        try:
            connection = engine.raw_connection()  # the pool's checkout listeners run here
        except dbapi.Error as exc:
            raise _wrapped(exc, compiled, values, engine) from exc
        dbapi_connection = connection.dbapi_connection
        try:
            dbapi_connection.autocommit = True
            with dbapi_connection.cursor() as cursor:
                self._execute(cursor, connection.info, compiled, values, dbapi, settings)
                return cursor.fetchall()
        except dbapi.Error as exc:
            if engine.dialect.is_disconnect(exc, dbapi_connection, None):
                connection.invalidate(exc)  # as SQLAlchemy does: the pool drops this session
            raise _wrapped(exc, compiled, values, engine) from exc
        finally:
            if not dbapi_connection.closed:
                dbapi_connection.autocommit = False  # before the pool hands it to a transaction
            connection.close()

    def rows_in(self, conn: Connection, parameters: Mapping[str, Any]) -> list[tuple]:
        """rows(), run in `conn`'s transaction (a statement with others after it that must
        commit with it: a settle and the release of its dependants). A session that lost the
        prepared statement cannot run the plain one in the same transaction, which the error
        has aborted: it runs plain from then on, and PreparedStatementLost asks the caller to
        run its transaction again."""
        engine = conn.engine
        if engine.dialect.name != "postgresql" or _has_statement_listeners(engine):
            return [tuple(row) for row in conn.execute(self.statement, dict(parameters))]
        compiled, values, settings = self.bound(engine, parameters)
        dbapi = engine.dialect.loaded_dbapi
        connection = conn.connection
        try:
            with connection.dbapi_connection.cursor() as cursor:
                self._execute(cursor, connection.info, compiled, values, dbapi, settings, in_transaction=True)
                rows = cursor.fetchall()
        except dbapi.Error as exc:
            if engine.dialect.is_disconnect(exc, connection.dbapi_connection, None):
                conn.invalidate(exc)
            raise _wrapped(exc, compiled, values, engine) from exc
        return [_processed(row, compiled.columns) for row in rows]

    def _execute(
        self,
        cursor,
        info: dict,
        compiled: Compiled,
        values: dict[str, Any],
        dbapi,
        settings: str,
        *,
        in_transaction=False,
    ) -> None:
        """The statement, after `settings` (SET LOCALs) in the same message: one implicit
        transaction (or the caller's), one round trip."""
        prepared = info.setdefault(PREPARED_INFO_KEY, set())
        if prepared is False:
            cursor.execute(settings + compiled.plain, values)
            return
        try:
            if self.name not in prepared:
                cursor.execute(compiled.prepare)
                prepared.add(self.name)
            cursor.execute(settings + compiled.execute, values)
        except dbapi.Error as exc:
            if getattr(exc, "pgcode", None) not in _PREPARE_LOST:
                raise
            info[PREPARED_INFO_KEY] = False
            if in_transaction:
                raise PreparedStatementLost(self.name) from exc
            cursor.execute(settings + compiled.plain, values)

    def _compile(self, engine: Engine) -> Compiled:
        with self._lock:
            if self._compiled is None:
                self._compiled = compile_for(self.statement, engine, self.name)
            return self._compiled


def compile_for(statement: Executable, engine: Engine, name: str) -> Compiled:
    """The statement compiled for the engine's dialect (pyformat placeholders), as plain,
    PREPARE and EXECUTE texts, with the processors of its parameters and columns."""
    dialect = engine.dialect
    compiled = statement.compile(dialect=dialect)
    given = {key for key, parameter in compiled.binds.items() if parameter.required}
    # with the literal_execute values (quorra.store.base.status_in) inline, as at execution
    expanded = compiled.construct_expanded_state(dict.fromkeys(given))
    order: list[str] = []

    def numbered(match: re.Match) -> str:
        key = match.group(1)
        if key is None:
            return "%"  # an escaped percent sign: PREPARE's text is sent as it is
        if key not in order:
            order.append(key)
        return f"${order.index(key) + 1}"

    body = _PLACEHOLDER.sub(numbered, expanded.statement)
    binds = {
        key: process
        for key, parameter in compiled.binds.items()
        if (process := parameter.type.dialect_impl(dialect).bind_processor(dialect)) is not None
    }
    constants = {
        key: value if key not in binds or value is None else binds[key](value)
        for key, value in expanded.parameters.items()
        if key not in given
    }
    processors = [
        column.type.dialect_impl(dialect).result_processor(dialect, None) for column in statement.exported_columns
    ]
    columns = [(position, process) for position, process in enumerate(processors) if process is not None]
    # (an expanding IN's values have keys of their own, not in binds: left to PostgreSQL)
    types = ", ".join(_parameter_type(compiled.binds.get(key), dialect, key in given) for key in order)
    return Compiled(
        plain=expanded.statement,
        prepare=f"PREPARE {name} ({types}) AS {body}" if order else f"PREPARE {name} AS {body}",
        execute=f"EXECUTE {name}({', '.join(f'%({key})s' for key in order)})" if order else f"EXECUTE {name}",
        constants=constants,
        binds=binds,
        columns=columns,
    )


def _parameter_type(parameter: BindParameter | None, dialect: Dialect, given: bool) -> str:
    """A parameter's type as PREPARE declares it: a constant's own (psycopg2 sends it as a
    typed literal in the plain statement, while PREPARE would take one with no context, as
    in `$1 AS position`, for text); a given value's is left for PostgreSQL to infer from
    where it stands, as it is in the plain statement (`json_to_recordset($1)`: json)."""
    if given or parameter is None or isinstance(parameter.type, NullType):
        return "unknown"
    return dialect.type_compiler_instance.process(parameter.type.dialect_impl(dialect))


def _processed(row: tuple, processors: Sequence[tuple[int, Processor]]) -> tuple:
    values = list(row)
    for position, process in processors:
        values[position] = process(values[position])
    return tuple(values)


def _has_statement_listeners(engine: Engine) -> bool:
    """Whether anything but Quorra's own statement rewriter (quorra.db, which leaves a
    statement without its execution option as it is) listens to the engine's statements."""
    return any(listener is not STATEMENT_REWRITER for listener in engine.dispatch.before_cursor_execute) or bool(
        engine.dispatch.after_cursor_execute
    )


def _wrapped(exc: Exception, compiled: Compiled, values: dict[str, Any], engine: Engine) -> Exception:
    """The DBAPI error as SQLAlchemy raises it (OperationalError, IntegrityError, ...), so
    the store translates it as it translates any other."""
    return sa_exc.DBAPIError.instance(
        compiled.plain, values, exc, engine.dialect.loaded_dbapi.Error, hide_parameters=True, dialect=engine.dialect
    )
