"""Fixtures of the fault-injection suite: the executions side table and deployments of real
processes. The figures each scenario measures go through the `figures` fixture
(tests/figures.py): printed at the end of the run, and written as JSON to
$QUORRA_FAULTS_REPORT when it is set."""

from __future__ import annotations

import pytest

from quorra.store import Store
from tests.faults.executions import Executions
from tests.faults.processes import Deployment


@pytest.fixture
def executions(tmp_path) -> Executions:
    return Executions(tmp_path / "executions.db")


@pytest.fixture
def deploy(executions):
    """Build deployments: deploy(database_url, ttl_seconds=2, interval_seconds=0.25, redis_url=None)."""
    made: list[Deployment] = []

    def make(database_url: str, **options) -> Deployment:
        made.append(Deployment(database_url, executions.path, **options))
        return made[-1]

    yield make
    for deployment in made:
        deployment.close()


@pytest.fixture
def postgres_store(postgres_url):
    """A store on this test's own PostgreSQL database (for scenarios run on PostgreSQL only)."""
    store = Store.from_url(postgres_url)
    yield store
    store.close()
