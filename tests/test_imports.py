"""The import rules of STYLE.md, checked in a fresh interpreter each: what a module pulls
in is what `sys.modules` holds after importing it and nothing else."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

IMPORT_TIMEOUT_SECONDS = 60


def top_level_modules_after(*modules: str) -> set[str]:
    """The top-level packages loaded by importing `modules` in a new interpreter."""
    code = (
        "import json, sys\n"
        + "".join(f"import {module}\n" for module in modules)
        + "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=IMPORT_TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_importing_the_store_loads_no_web_rpc_or_redis_library():
    assert top_level_modules_after("quorra.store") & {"flask", "grpc", "redis"} == set()


def test_importing_the_domain_errors_and_config_loads_no_database_or_edge_library():
    loaded = top_level_modules_after("quorra.jobs", "quorra.errors", "quorra.config")
    assert loaded & {"sqlalchemy", "alembic", "psycopg2", "flask", "grpc", "redis"} == set()


def test_importing_the_worker_sdk_loads_no_database_or_web_library():
    assert top_level_modules_after("quorra.worker") & {"sqlalchemy", "alembic", "psycopg2", "flask"} == set()


def test_importing_the_errors_loads_no_third_party_library():
    # errors.py is the root every layer imports: it stays free of third-party code
    assert top_level_modules_after("quorra.errors") & {"pydantic", "sqlalchemy", "flask", "grpc", "redis"} == set()


def test_importing_the_client_loads_no_server_library():
    loaded = top_level_modules_after("quorra.client")
    assert loaded & {"sqlalchemy", "alembic", "psycopg2", "flask", "grpc", "redis", "pydantic"} == set()
