"""PostgreSQL test databases: clones of a migrated template, emptied and reused.

CREATE DATABASE ... TEMPLATE and DROP DATABASE cost about a second each on a busy 2-core
machine (each writes and fsyncs the whole database), against some 50 ms to empty one. So a
clone that a test hands back exactly as the template built it (the same schema, the same
migration revision, the same database settings, no prepared transaction) is emptied and
handed to the next test: every session on it ended, every table but alembic_version
truncated, every sequence restarted. Any other clone (a test migrated it down, changed a
table, or closed the database to connections) is dropped. What a clone may carry over is
what no test observes: planner statistics of an ANALYZE, and pg_stat counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Connection, Engine, create_engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

SESSIONS_END_TIMEOUT_SECONDS = 30.0

_USER_NAMESPACES = """
    SELECT oid, nspname FROM pg_namespace
    WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname !~ '^pg_(toast|temp)'
"""

# Everything a migration or a test could change in a database's schema, as one digest.
_SCHEMA_DIGEST = text(f"""
WITH ns AS ({_USER_NAMESPACES})
SELECT md5(coalesce(string_agg(item, E'\\n' ORDER BY item), '')) FROM (
    SELECT 'schema ' || nspname FROM ns
  UNION ALL
    SELECT concat_ws(' ', 'relation', ns.nspname, c.relname, c.relkind, c.relpersistence, c.reloptions::text,
                     CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END)
    FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
  UNION ALL
    SELECT concat_ws(' ', 'column', c.oid::regclass::text, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
                     a.attnotnull, a.attidentity, a.attgenerated, pg_get_expr(d.adbin, d.adrelid))
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN ns ON ns.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
    SELECT concat_ws(' ', 'constraint', conrelid::regclass::text, conname, pg_get_constraintdef(oid))
    FROM pg_constraint WHERE connamespace IN (SELECT oid FROM ns)
  UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relnamespace IN (SELECT oid FROM ns)
  UNION ALL
    SELECT 'trigger ' || pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal
  UNION ALL
    SELECT concat_ws(' ', 'function', p.oid::regprocedure::text, md5(p.prosrc))
    FROM pg_proc p WHERE p.pronamespace IN (SELECT oid FROM ns)
  UNION ALL
    SELECT concat_ws(' ', 'type', t.oid::regtype::text, t.typtype) FROM pg_type t WHERE t.typnamespace IN (SELECT oid FROM ns)
  UNION ALL
    SELECT concat_ws(' ', 'enum', enumtypid::regtype::text, enumsortorder, enumlabel) FROM pg_enum
  UNION ALL
    SELECT concat_ws(' ', 'extension', extname, extversion) FROM pg_extension
  UNION ALL
    SELECT concat_ws(' ', 'policy', polrelid::regclass::text, polname) FROM pg_policy
) AS shape(item)
""")

_TABLES = text(f"""
WITH ns AS ({_USER_NAMESPACES})
SELECT quote_ident(ns.nspname) || '.' || quote_ident(c.relname)
FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND c.relname <> 'alembic_version'
ORDER BY 1
""")

_SEQUENCES = text(f"""
WITH ns AS ({_USER_NAMESPACES})
SELECT quote_ident(ns.nspname) || '.' || quote_ident(c.relname)
FROM pg_class c JOIN ns ON ns.oid = c.relnamespace WHERE c.relkind = 'S'
""")

# What the template and a clone must agree on at the level of the database itself.
_DATABASE_STATE = text("""
SELECT d.datallowconn, d.datconnlimit, d.datistemplate, d.datdba,
       (SELECT count(*) FROM pg_db_role_setting s WHERE s.setdatabase = d.oid) AS settings,
       (SELECT count(*) FROM pg_prepared_xacts x WHERE x.database = d.datname) AS prepared
FROM pg_database d WHERE d.datname = :name
""")

JANITOR = "quorra-tests-janitor"  # the application_name of the session that empties a clone
_OTHER_SESSIONS = text("SELECT pid FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()")
# A janitor's session may linger a moment after it closed; any other one is a test's.
_TEST_SESSIONS = text(
    "SELECT pid FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()"
    f" AND application_name IS DISTINCT FROM '{JANITOR}'"
)


class CloneDatabases:
    """Clones of `template`, each handed to one test at a time; dropped at close()."""

    def __init__(self, admin: Connection, template: str, url_of: Callable[[str], str], new_name: Callable[[], str]):
        self.admin = admin
        self.template = template
        self.url_of = url_of
        self.new_name = new_name
        self.idle: list[str] = []
        self.created: set[str] = set()
        self.template_state = self._database_state(template)
        self.template_schema, seeded = self._inspect(template)
        # A migration that seeds rows would need them back after TRUNCATE: always clone then.
        self.reusable = not seeded

    def acquire(self) -> str:
        if self.idle:
            return self.idle.pop()
        name = self.new_name()
        self.admin.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        self.created.add(name)
        return name

    def release(self, name: str) -> None:
        """Empty the clone for the next test, or drop it when it is not as the template built it."""
        try:
            reused = self.reusable and self._end_sessions(name) and self._reset(name)
        except SQLAlchemyError:
            reused = False
        if reused:
            self.idle.append(name)
        else:
            self._drop(name)

    def close(self) -> None:
        for name in sorted(self.created):
            self._drop(name)

    # -- inside -------------------------------------------------------------------------------

    def _database_state(self, name: str) -> tuple:
        row = self.admin.execute(_DATABASE_STATE, {"name": name}).one()
        return tuple(row)

    def _end_sessions(self, name: str) -> bool:
        """End every session on the clone (as DROP DATABASE ... WITH (FORCE) would); False
        when some would not end."""
        deadline = time.monotonic() + SESSIONS_END_TIMEOUT_SECONDS
        while pids := self.admin.execute(_OTHER_SESSIONS, {"name": name}).scalars().all():
            if time.monotonic() > deadline:
                return False
            for pid in pids:
                self.admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            time.sleep(0.01)
        return True

    def _reset(self, name: str) -> bool:
        if self._database_state(name) != self.template_state:
            return False
        engine = self._engine(name)
        try:
            with engine.begin() as conn:
                if self._schema(conn) != self.template_schema:
                    return False
                self._empty(conn)
        finally:
            engine.dispose()
        # A session that came back while the clone was being emptied belongs to a process
        # the test left running: that clone is not given to another test.
        return not self.admin.execute(_TEST_SESSIONS, {"name": name}).first()

    def _inspect(self, name: str) -> tuple[tuple, bool]:
        """The template's schema, and whether any of its tables holds rows."""
        engine = self._engine(name)
        try:
            with engine.connect() as conn:
                tables = conn.execute(_TABLES).scalars().all()
                seeded = any(conn.execute(text(f"SELECT EXISTS (SELECT FROM {table})")).scalar() for table in tables)
                return self._schema(conn), seeded
        finally:
            engine.dispose()

    def _engine(self, name: str) -> Engine:
        url = make_url(self.url_of(name)).set(drivername="postgresql+psycopg2")
        return create_engine(url, poolclass=NullPool, connect_args={"application_name": JANITOR})

    @staticmethod
    def _schema(conn: Connection) -> tuple:
        digest = conn.execute(_SCHEMA_DIGEST).scalar_one()
        has_versions = conn.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL")).scalar_one()
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() if has_versions else []
        return digest, tuple(sorted(versions))

    @staticmethod
    def _empty(conn: Connection) -> None:
        if tables := conn.execute(_TABLES).scalars().all():
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY"))
        for sequence in conn.execute(_SEQUENCES).scalars().all():
            conn.execute(text(f"ALTER SEQUENCE {sequence} RESTART"))

    def _drop(self, name: str) -> None:
        self.admin.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.created.discard(name)
        if name in self.idle:
            self.idle.remove(name)
