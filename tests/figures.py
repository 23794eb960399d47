"""What tests measure, reported rather than asserted: a test fills the `figures` dict (the
fault-injection scenarios, takeover times), and the run ends with a `measured figures`
section; with QUORRA_FAULTS_REPORT=path they are also written there as JSON.

Timing claims (a takeover within two intervals, a reclaim within TTL + two intervals) are
printed next to their bound here, and checked by `bench/faults_bounds.py`, never asserted
in a test: a busy machine would fail them for no fault of Quorra's.

Figures travel as a user property of the test's teardown report, so that under xdist
they reach the controller process, which prints the summary."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

PROPERTY = "measured_figures"
REPORT_ENV = "QUORRA_FAULTS_REPORT"


@pytest.fixture
def figures(record_property):
    """A dict the test fills with what it measured; the duration is added here."""
    measured: dict[str, object] = {}
    started = time.monotonic()
    yield measured
    measured["duration_s"] = round(time.monotonic() - started, 1)
    record_property(PROPERTY, measured)


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # an xdist worker: its reports go to the controller
        config.pluginmanager.register(FigureSummary(), "quorra-measured-figures")


class FigureSummary:
    def __init__(self) -> None:
        self.measured: dict[str, dict] = {}

    def pytest_runtest_logreport(self, report) -> None:
        if report.when == "teardown":
            for name, value in report.user_properties:
                if name == PROPERTY:
                    self.measured[_plain(report.nodeid)] = value

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.measured:
            return
        failed = {_plain(report.nodeid) for report in terminalreporter.stats.get("failed", [])}
        terminalreporter.write_sep("=", "measured figures")
        for nodeid, values in sorted(self.measured.items()):
            outcome = "FAILED " if nodeid in failed else ""
            terminalreporter.write_line(f"{outcome}{nodeid}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
        if os.environ.get(REPORT_ENV):
            report = {
                nodeid: {"failed": nodeid in failed, **values} for nodeid, values in sorted(self.measured.items())
            }
            Path(os.environ[REPORT_ENV]).write_text(json.dumps(report, indent=2) + "\n")


def _plain(nodeid: str) -> str:
    """The node id without the `@group` suffix that xdist's loadgroup adds."""
    return nodeid.split("@", 1)[0]
