"""Logs beyond the end-to-end run (which checks the JSON lines of every process):
QUORRA_LOG_FORMAT=text for people, QUORRA_LOG_LEVEL, and warnings as log lines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from quorra.store import Store
from tests import factories
from tests.conftest import REPO
from tests.scheduler.processes import SchedulerProcess
from tests.worker.support import wait_until

TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) +\[scheduler\] \S.*")
LOG_EVERY_LEVEL = (
    "import logging, warnings\n"
    "from quorra.config import Settings\n"
    "from quorra.logs import configure_logging\n"
    "configure_logging(Settings.from_env(), 'cli')\n"
    "for level in ('debug', 'info', 'warning', 'error'):\n"
    "    getattr(logging.getLogger('quorra.test'), level)('at ' + level, extra={'event': 'test.' + level})\n"
    "warnings.warn('a library complains')\n"
)


def test_text_format_gives_human_lines_that_carry_the_job_id(sqlite_url):
    store = Store.from_url(sqlite_url)
    job = factories.leased_job(store, ttl_seconds=0.001, worker_id="worker-a")
    scheduler = SchedulerProcess(sqlite_url, QUORRA_LOG_FORMAT="text")
    try:
        reaped = wait_until(
            lambda: [line for line in scheduler.other_output if "event=lease.expired" in line],
            what="a text line about the reaped lease",
        )
    finally:
        assert scheduler.stop() == 0
        store.close()

    lines = scheduler.output().splitlines()
    assert scheduler.lines == [] and lines
    assert all(TEXT_LINE.fullmatch(line) for line in lines), lines
    assert f"job_id={job.id}" in reaped[0] and f"queue={job.queue}" in reaped[0] and "worker_id=worker-a" in reaped[0]


@pytest.mark.parametrize(
    ("level", "shown"),
    [
        ("debug", ["debug", "info", "warning", "error"]),
        ("info", ["info", "warning", "error"]),
        ("warning", ["warning", "error"]),
        ("error", ["error"]),
    ],
)
def test_log_level_hides_the_lower_levels(level, shown):
    records = _log_every_level(QUORRA_LOG_LEVEL=level)

    assert [r["message"] for r in records if r["logger"] == "quorra.test"] == [f"at {name}" for name in shown]


def test_a_library_warning_is_a_json_log_line_too():
    [warning] = [record for record in _log_every_level() if record["logger"] == "py.warnings"]

    assert (warning["level"], warning["role"]) == ("WARNING", "cli")
    assert "a library complains" in warning["message"]


def _log_every_level(**env: str) -> list[dict]:
    """Every stderr line of a process that logs once at each level, parsed as JSON."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("QUORRA_")} | env
    done = subprocess.run(
        [sys.executable, "-c", LOG_EVERY_LEVEL],
        env=environ,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in done.stderr.splitlines()]
