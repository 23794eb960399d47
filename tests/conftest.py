"""Fixtures on real services: SQLite files, PostgreSQL databases cloned from a migrated
template (one per test), and a Redis database flushed per test.

The suite runs in parallel (pytest-xdist, `make test`), so every shared resource is split
per xdist worker: PostgreSQL database names carry QUORRA_TEST_DB_PREFIX and the worker id,
and worker gwN uses Redis database (the number in QUORRA_TEST_REDIS_URL) + N. Tests that
need PostgreSQL or Redis skip when the service is unreachable, except when
QUORRA_REQUIRE_SERVICES=1 (CI), where such a skip is turned into a failure.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from quorra import migrate
from quorra.config import Settings
from quorra.db import make_engine
from quorra.store import Store
from tests.postgres_databases import CloneDatabases

pytest_plugins = ("tests.figures",)

PG_URL = os.environ.get("QUORRA_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
DB_PREFIX = os.environ.get("QUORRA_TEST_DB_PREFIX", "quorra")
REDIS_BASE_URL = os.environ.get("QUORRA_TEST_REDIS_URL", "redis://127.0.0.1:6379/12")
REQUIRE_SERVICES = os.environ.get("QUORRA_REQUIRE_SERVICES") == "1"
TEST_API_KEY = "test-api-key"
REPO = Path(__file__).resolve().parent.parent
# xdist names its workers gw0, gw1, ... in this variable; a run without xdist has none.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")

if not re.fullmatch(r"[a-z][a-z0-9_]{0,29}", DB_PREFIX):
    raise pytest.UsageError(f"QUORRA_TEST_DB_PREFIX={DB_PREFIX!r}: use 1 to 30 of a-z, 0-9 and _, a letter first")


def redis_url_for(base_url: str, xdist_worker: str) -> str:
    """The base URL's database number plus the xdist worker's number (gw3: + 3)."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("redis", "rediss"):
        return base_url
    number = int(parts.path.strip("/") or 0) + int(xdist_worker.removeprefix("gw") or 0)
    return urlunsplit(parts._replace(path=f"/{number}"))


REDIS_URL = redis_url_for(REDIS_BASE_URL, XDIST_WORKER)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- skips that CI refuses ----------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    needs_service = any(item.get_closest_marker(name) for name in ("postgres", "redis", "browser"))
    if REQUIRE_SERVICES and report.skipped and needs_service:
        report.outcome = "failed"
        report.longrepr = f"QUORRA_REQUIRE_SERVICES=1 but this test was skipped: {report.longrepr}"


# Each fault scenario runs a whole deployment (5 to 8 processes) flat out: they run in two
# lanes (xdist groups), one scenario at a time in each, beside the rest of the suite. The
# lanes hold about the same work. A scenario not listed goes to the last lane; LIGHT ones
# (a single job or two) run anywhere.
FAULTS = REPO / "tests" / "faults"
FAULT_LANES = {
    "faults-a": ("test_worker_crash", "test_server_crash[sqlite]", "test_database_restart"),
    "faults-b": ("test_race", "test_server_crash[postgres]", "test_redis_down", "test_scheduler_failover"),
}
LIGHT_FAULTS = ("test_worker_faults",)
# Besides the fault lanes, what takes longest (tens of seconds on an idle machine) is handed
# out first, so that the run does not end waiting on one long test.
LONG_RUNNING = (
    "tests/test_harness.py",
    "tests/api/test_openapi.py",
    "tests/store/test_concurrency.py",
    "tests/observability/test_metrics_end_to_end.py",
    "tests/api/test_server.py::test_a_chunked_body_over_the_limit_is_refused_by_the_real_server",
)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (it renames the items)
def pytest_collection_modifyitems(items):
    for item in items:
        params = getattr(item, "callspec", None)
        if params and "postgres" in params.params.values():
            item.add_marker(pytest.mark.postgres)
        if group := _fault_lane(item) or _shared_fixture_group(item):
            item.add_marker(pytest.mark.xdist_group(group))
    items[:] = longest_first(items)


class XdistGroupCheck:
    """Under --dist loadgroup, xdist sends a group to one worker by the `@group` it appends to
    each node id. Should it stop doing so (as with pytest 9.2, pytest-dev/pytest-xdist#1386),
    every group would be split silently: fault scenarios would run side by side and shared
    deployments be built once per worker. Each test of a group then fails at once instead."""

    def __init__(self) -> None:
        self.ungrouped: set[str] = set()

    @pytest.hookimpl(trylast=True)  # after xdist has (or has not) renamed the items
    def pytest_collection_modifyitems(self, config, items):
        if getattr(config.option, "loadgroup", False):
            self.ungrouped = {i.nodeid for i in items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item):
        if item.nodeid in self.ungrouped:
            pytest.fail("pytest-xdist did not group this test (see requirements-dev.txt)", pytrace=False)


def pytest_configure(config):
    config.pluginmanager.register(XdistGroupCheck(), "quorra-xdist-group-check")
    # xdist would sort the work units by their number of tests; longest_first has ordered them.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def _fault_lane(item) -> str | None:
    if FAULTS not in item.path.parents or item.path.stem in LIGHT_FAULTS:
        return None
    params = getattr(item, "callspec", None)
    name = f"{item.path.stem}[{params.id}]" if params else item.path.stem
    return next((lane for lane, tests in FAULT_LANES.items() if {name, item.path.stem} & set(tests)), "faults-b")


def longest_first(items: list) -> list:
    """The items in the order xdist (--dist loadgroup) should hand out their work units (a
    group, or a single test): the fault lanes, then the long-running tests, then the
    largest groups; the same order in every xdist worker."""
    units: dict[str, list] = {}
    for item in items:
        marker = item.get_closest_marker("xdist_group")
        units.setdefault(marker.args[0] if marker else item.nodeid, []).append(item)

    def rank(unit: tuple[int, tuple[str, list]]):
        position, (name, members) = unit
        lanes = list(FAULT_LANES)
        if name in lanes:
            return (0, lanes.index(name))
        long = any(m.get_closest_marker("slow") or m.nodeid.startswith(LONG_RUNNING) for m in members)
        return (1 if long else 2, -len(members), position)

    return [item for _, (_, members) in sorted(enumerate(units.items()), key=rank) for item in members]


def _shared_fixture_group(item) -> str | None:
    """Tests sharing a module- or class-scoped fixture run on one xdist worker (under
    `--dist loadgroup`), so that the fixture is built once, not once per worker."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    shared = sorted(
        name
        for name, definitions in info.name2fixturedefs.items()
        if definitions and definitions[-1].scope in ("module", "class", "package")
    )
    if not shared:
        return None
    params = getattr(item, "callspec", None)
    variant = ",".join(f"{name}={params.params[name]}" for name in shared if params and name in params.params)
    # Not "module[variant]": xdist takes a node id ending in "]" for a parametrised test
    # without a group, and would hand each of these tests out on its own.
    return f"{item.module.__name__}({variant})" if variant else item.module.__name__


def pytest_report_header(config):
    return (
        f"quorra test services: PostgreSQL {make_url(PG_URL).render_as_string()} (database prefix {DB_PREFIX!r}),"
        f" Redis {REDIS_BASE_URL} (+ the xdist worker number), QUORRA_REQUIRE_SERVICES={int(REQUIRE_SERVICES)}"
    )


# -- PostgreSQL -----------------------------------------------------------------------------


def _admin_url() -> str:
    url = make_url(PG_URL).set(database="postgres", drivername="postgresql+psycopg2")
    return url.render_as_string(hide_password=False)


def _database_url(name: str) -> str:
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


def database_name(kind: str) -> str:
    """A database name of this suite, this xdist worker and this process: unique on a
    server shared with other suites (each with its own QUORRA_TEST_DB_PREFIX)."""
    return f"{DB_PREFIX}_{kind}_{XDIST_WORKER or 'main'}_{os.getpid()}_{next(_numbers)}"


_numbers = itertools.count()


@pytest.fixture(scope="session")
def pg_admin():
    """An autocommit connection to the server, and a migrated template database."""
    try:
        engine = create_engine(_admin_url(), isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        conn = engine.connect()
    except Exception as exc:  # noqa: BLE001 - any failure to reach the server is a skip
        pytest.skip(f"PostgreSQL unreachable at {PG_URL}: {exc}")
    template = database_name("template")
    conn.execute(text(f'CREATE DATABASE "{template}"'))
    template_engine = make_engine(_database_url(template))
    migrate.upgrade(template_engine)
    template_engine.dispose()
    yield conn, template
    conn.execute(text(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)'))
    conn.close()
    engine.dispose()


@pytest.fixture(scope="session")
def pg_clones(pg_admin):
    """Clones of the template, each handed to one test at a time (see CloneDatabases)."""
    conn, template = pg_admin
    clones = CloneDatabases(conn, template, _database_url, lambda: database_name("test"))
    yield clones
    clones.close()


@pytest.fixture(scope="session")
def worker_id(request):
    """xdist's worker id ('gw0'...), or 'main' without xdist."""
    return getattr(request.config, "workerinput", {}).get("workerid", "main")


@pytest.fixture
def postgres_url(pg_clones):
    """A migrated PostgreSQL database of this test's own, as the template left it: no
    other test uses it at the same time, and it holds no row and no session of another."""
    name = pg_clones.acquire()
    yield _database_url(name)
    pg_clones.release(name)


@pytest.fixture
def empty_postgres_url(pg_admin):
    """A PostgreSQL database with no schema at all."""
    conn, _ = pg_admin
    name = database_name("empty")
    conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield _database_url(name)
    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# -- SQLite ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()  # closing the last connection checkpoints the WAL into the file
    return path


@pytest.fixture
def sqlite_url(tmp_path, sqlite_template) -> str:
    """A migrated SQLite file of this test's own (a file, so threads share it)."""
    path = tmp_path / "quorra.db"
    path.write_bytes(sqlite_template.read_bytes())
    return f"sqlite:///{path}"


# -- either backend ---------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request) -> str:
    """Every store behaviour runs on both backends."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def store(database_url):
    store = Store.from_url(database_url)
    yield store
    store.close()


@pytest.fixture
def settings(database_url) -> Settings:
    return Settings(database_url=database_url, api_keys=(TEST_API_KEY,), log_format="text")


# -- Redis ------------------------------------------------------------------------------------


@pytest.fixture
def redis_url():
    """This xdist worker's Redis database, flushed before and after the test."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ResponseError as exc:  # the server is there, the database number is not
        pytest.fail(f"Redis {REDIS_URL}: {exc}; lower the number in QUORRA_TEST_REDIS_URL or run fewer workers")
    except redis.RedisError as exc:
        pytest.skip(f"Redis unreachable at {REDIS_URL}: {exc}")
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()
