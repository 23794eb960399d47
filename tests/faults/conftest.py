"""Fixtures of the fault-injection suite: the executions side table, deployments of real
processes, and the figures each scenario measures (printed at the end of the run, kept as
junit properties, and written as JSON to $QUORRA_FAULTS_REPORT when it is set)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from quorra.store import Store
from tests.faults.executions import Executions
from tests.faults.processes import Deployment

FIGURES = pytest.StashKey[list]()
REPORT_ENV = "QUORRA_FAULTS_REPORT"


@pytest.fixture
def figures(request, record_property):
    """A dict the scenario fills with what it measured; the duration is added here."""
    measured: dict[str, object] = {}
    started = time.monotonic()
    yield measured
    measured["duration_s"] = round(time.monotonic() - started, 1)
    for name, value in measured.items():
        record_property(name, value)
    request.config.stash.setdefault(FIGURES, []).append((request.node.nodeid, measured))


def pytest_terminal_summary(terminalreporter, config):
    measured = config.stash.get(FIGURES, [])
    if not measured:
        return
    failed = {report.nodeid for report in terminalreporter.stats.get("failed", [])}
    terminalreporter.write_sep("=", "fault-injection figures")
    for nodeid, values in measured:
        outcome = "FAILED " if nodeid in failed else ""
        terminalreporter.write_line(
            f"{outcome}{nodeid.rpartition('::')[2]}: " + ", ".join(f"{k}={v}" for k, v in values.items())
        )
    if os.environ.get(REPORT_ENV):
        report = {nodeid: {"failed": nodeid in failed, **values} for nodeid, values in measured}
        Path(os.environ[REPORT_ENV]).write_text(json.dumps(report, indent=2) + "\n")


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
