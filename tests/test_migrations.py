"""Schema and migrations: `quorra migrate` builds exactly the schema of quorra/schema.py on
both backends, downgrades to nothing and back on a database holding jobs, ships inside the
wheel, and the servers refuse a schema that is not at head (quorra.migrate.ensure_at_head)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import exc as sa_exc
from sqlalchemy import inspect, text

from quorra import migrate, schema
from quorra.db import make_engine
from quorra.errors import SchemaOutOfDate
from quorra.store import Store
from tests.conftest import REPO
from tests.factories import dead_job, leased_job, make_job

HEAD = "0012"
CLI_TIMEOUT_SECONDS = 60
# What `pip wheel` needs from a checkout; tests/, .venv/ and build debris stay out.
WHEEL_SOURCES = (
    "setup.py",
    "setup.cfg",
    "pyproject.toml",
    "MANIFEST.in",
    "README.md",
    "LICENSE",
    "quorra",
    "migrations",
)


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request, tmp_path) -> str:
    """A database with no schema at all, on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/empty.db"
    return request.getfixturevalue("empty_postgres_url")


@pytest.fixture
def engine_of():
    """make_engine(url), disposed after the test."""
    engines = []

    def make(url: str):
        engines.append(make_engine(url))
        return engines[-1]

    yield make
    for engine in engines:
        engine.dispose()


def run_quorra(*args: str, database_url: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url, "QUORRA_LOG_FORMAT": "text"}
    return subprocess.run(
        [sys.executable, "-m", "quorra.cli.admin", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )


def table_names(engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def schema_differences(engine) -> list:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), schema.metadata)


def indexes_and_checks(engine) -> tuple[list, list]:
    """What compare_metadata does not compare: partial index predicates, column order and
    sorting, CHECK constraints."""
    inspector = inspect(engine)
    tables = ("jobs", "audit_log", "api_keys")
    indexes = sorted((i for t in tables for i in inspector.get_indexes(t)), key=lambda index: index["name"])
    for index in indexes:  # SQLite reflects predicates as text() clauses: compare their SQL
        index["dialect_options"] = {key: str(value) for key, value in index["dialect_options"].items()}
    checks = sorted(inspector.get_check_constraints("jobs"), key=lambda check: check["name"])
    return indexes, checks


# -- upgrade ---------------------------------------------------------------------------------


def test_upgrade_to_head_builds_the_schema_of_quorra_schema(empty_database_url, engine_of):
    # Given an empty database
    engine = engine_of(empty_database_url)
    # When it is migrated to head
    migrate.upgrade(engine)
    # Then Alembic finds no difference from quorra.schema.metadata
    assert migrate.current_revision(engine) == HEAD
    assert schema_differences(engine) == []


@pytest.fixture(params=["sqlite", "postgres"])
def migrated_and_empty_urls(request, tmp_path) -> tuple[str, str]:
    """A database migrated to head and an empty one, on the same backend."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url"), f"sqlite:///{tmp_path}/declared.db"
    return request.getfixturevalue("postgres_url"), request.getfixturevalue("empty_postgres_url")


def test_upgrade_builds_the_same_indexes_and_checks_as_the_schema(migrated_and_empty_urls, engine_of):
    # Given one database migrated to head and one created straight from quorra.schema
    migrated, declared = (engine_of(url) for url in migrated_and_empty_urls)
    schema.metadata.create_all(declared)
    # When their indexes (with partial predicates) and CHECK constraints are reflected
    # Then they are the same
    assert indexes_and_checks(migrated) == indexes_and_checks(declared)


def test_ready_index_covers_exactly_the_leasable_statuses(database_url, engine_of):
    # Given a migrated database
    indexes, _ = indexes_and_checks(engine_of(database_url))
    # When the lease query's partial index is reflected
    [ready] = [index for index in indexes if index["name"] == "ix_jobs_ready"]
    predicate = next(iter(ready["dialect_options"].values()))
    # Then it holds ready jobs, best first within a queue, and only pending and failed ones
    assert ready["column_names"] == ["queue", "tenant", "priority", "run_at", "id"]
    assert "'pending'" in predicate and "'failed'" in predicate
    assert not any(f"'{s}'" in predicate for s in ("leased", "processing", "succeeded", "dead", "cancelled"))


def test_status_column_refuses_an_unknown_status(database_url, engine_of):
    # Given a migrated database with a job in it
    engine = engine_of(database_url)
    job = make_job(Store(engine))
    # When something writes a status Quorra does not know
    # Then the database's CHECK refuses it
    with pytest.raises(sa_exc.IntegrityError), engine.begin() as conn:
        conn.execute(schema.jobs.update().where(schema.jobs.c.id == job.id).values(status="finished"))


@pytest.mark.postgres
def test_postgres_jobs_table_keeps_room_for_updates_and_vacuums_early(postgres_url, engine_of):
    # Given a migrated PostgreSQL database
    engine = engine_of(postgres_url)
    # When the jobs table's storage options are read
    with engine.connect() as conn:
        options = conn.execute(text("SELECT reloptions FROM pg_class WHERE relname = 'jobs'")).scalar_one()
    # Then it has a fillfactor and its own autovacuum thresholds
    assert {"fillfactor=80", "autovacuum_vacuum_scale_factor=0.02"} <= set(options)


# -- downgrade -------------------------------------------------------------------------------


def test_downgrade_to_base_drops_a_schema_holding_jobs_and_upgrade_rebuilds_it(database_url, engine_of):
    # Given a migrated database holding jobs in several states
    engine = engine_of(database_url)
    store = Store(engine)
    make_job(store), leased_job(store), dead_job(store)
    # When it is downgraded to base
    migrate.downgrade(engine, "base")
    # Then the jobs table is gone and no revision is recorded
    assert "jobs" not in table_names(engine)
    assert migrate.current_revision(engine) is None
    # And upgrading again gives the full, empty schema back
    migrate.upgrade(engine)
    assert schema_differences(engine) == []
    assert store.list_jobs().jobs == []
    assert make_job(store).status == "pending"


# -- the `quorra migrate` command --------------------------------------------------------------


def test_quorra_migrate_upgrades_an_empty_database_to_head(empty_database_url, engine_of):
    # Given an empty database
    # When `quorra migrate` runs against it
    done = run_quorra("migrate", database_url=empty_database_url)
    # Then it exits 0, says where the schema is, and the schema is at head
    assert done.returncode == 0, done.stderr
    assert f"schema at {HEAD}" in done.stdout
    assert migrate.current_revision(engine_of(empty_database_url)) == HEAD


def test_quorra_migrate_downgrade_base_empties_the_schema(database_url, engine_of):
    # Given a migrated database holding a job
    engine = engine_of(database_url)
    make_job(Store(engine))
    # When `quorra migrate --downgrade base` runs
    done = run_quorra("migrate", "--downgrade", "base", database_url=database_url)
    # Then it exits 0 and the jobs table is gone
    assert done.returncode == 0, done.stderr
    assert "schema at base" in done.stdout
    assert "jobs" not in table_names(engine)


@pytest.mark.postgres
def test_quorra_migrate_accepts_the_postgres_url_spelling(empty_postgres_url, engine_of):
    # Given GoQuorra's spelling of the URL, postgres:// (SQLAlchemy only knows postgresql://)
    goquorra_url = empty_postgres_url.replace("postgresql://", "postgres://", 1)
    # When `quorra migrate` runs with it
    done = run_quorra("migrate", database_url=goquorra_url)
    # Then the database is migrated
    assert done.returncode == 0, done.stderr
    assert migrate.current_revision(engine_of(empty_postgres_url)) == HEAD


def test_quorra_migrate_with_an_invalid_database_url_exits_2(tmp_path):
    done = run_quorra("migrate", database_url="mysql://localhost/quorra")
    assert done.returncode == 2
    assert "DATABASE_URL" in done.stderr


def test_quorra_migrate_on_an_unreachable_database_says_so_without_a_traceback(tmp_path):
    # Given a database that cannot be opened
    # When `quorra migrate` runs against it
    done = run_quorra("migrate", database_url=f"sqlite:///{tmp_path}/missing-directory/quorra.db")
    # Then it exits 1 with one line that names the database and the reason
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "cannot reach the database" in done.stderr and "missing-directory" in done.stderr


def test_quorra_migrate_runs_from_an_installed_wheel(tmp_path, engine_of):
    # Given Quorra built as a wheel and installed into a directory of its own
    wheel = _build_wheel(tmp_path)
    target = tmp_path / "installed"
    _pip("install", "--no-deps", "--no-index", "--target", str(target), str(wheel))
    database_url = f"sqlite:///{tmp_path}/wheel.db"
    # When `quorra migrate` runs from there, with no checkout on the path
    done = _run_installed(target, database_url, cwd=tmp_path)
    # Then the migrations it ran came from the wheel, and the schema is at head
    assert done.returncode == 0, done.stderr
    assert f"migrations from {target}" in done.stdout
    assert migrate.current_revision(engine_of(database_url)) == HEAD


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--quiet", *args], check=True, timeout=CLI_TIMEOUT_SECONDS)


def _build_wheel(tmp_path: Path) -> Path:
    source, dist = tmp_path / "source", tmp_path / "dist"
    source.mkdir()
    for name in WHEEL_SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif path.exists():
            shutil.copy2(path, source / name)
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "--wheel-dir", str(dist), str(source))
    [wheel] = dist.glob("quorra-*.whl")
    return wheel


INSTALLED_MIGRATE = """
import sys
import quorra.migrations
from quorra.cli.admin import main
print("migrations from", quorra.migrations.__file__, flush=True)
sys.argv = ["quorra", "migrate"]
main()
"""


def _run_installed(target: Path, database_url: str, cwd: Path) -> subprocess.CompletedProcess:
    # -S: no site processing, so no .pth file (an editable install's among them) puts the
    # checkout on the path; dependencies come from this interpreter's site-packages.
    paths = sysconfig.get_paths()
    python_path = os.pathsep.join(dict.fromkeys([str(target), paths["purelib"], paths["platlib"]]))
    env = {**os.environ, "PYTHONPATH": python_path, "DATABASE_URL": database_url, "QUORRA_LOG_FORMAT": "text"}
    return subprocess.run(
        [sys.executable, "-S", "-c", INSTALLED_MIGRATE],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )


# -- ensure_at_head --------------------------------------------------------------------------


def test_ensure_at_head_accepts_a_migrated_database(database_url, engine_of):
    migrate.ensure_at_head(engine_of(database_url))


def test_ensure_at_head_refuses_an_empty_database_naming_quorra_migrate(empty_database_url, engine_of):
    with pytest.raises(SchemaOutOfDate, match="quorra migrate"):
        migrate.ensure_at_head(engine_of(empty_database_url))


def test_ensure_at_head_refuses_a_schema_behind_head(database_url, engine_of):
    # Given a database taken back to base (the version table stays, empty)
    engine = engine_of(database_url)
    migrate.downgrade(engine, "base")
    # When a server checks it
    # Then it refuses, naming the command that fixes it
    with pytest.raises(SchemaOutOfDate, match="quorra migrate"):
        migrate.ensure_at_head(engine)


def test_ensure_at_head_refuses_a_schema_from_a_newer_quorra(database_url, engine_of):
    # Given a database migrated by a newer Quorra (a revision this code does not know)
    engine = engine_of(database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_newer'"))
    # When a server checks it
    # Then it refuses
    with pytest.raises(SchemaOutOfDate, match="9999_newer"):
        migrate.ensure_at_head(engine)
