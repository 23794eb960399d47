"""The timing promises of the fault scenarios, measured and checked against their bounds.

The tests assert what must happen whatever the load (every lease reclaimed, exactly once,
by a live scheduler); how fast it happened is a figure they report (tests/figures.py).
This script runs those scenarios one at a time (no xdist, so that they do not slow each
other down), reads their figures from QUORRA_FAULTS_REPORT and checks each timing figure
against the bound the scenario reports with it (`bound_s`):

    takeover after the leader's kill -9          handover_max_s, reaped_after_kill_s    2 intervals
    reap after a lease expired, nobody leading    reap_after_expiry_max_s, reap_after_kill_max_s
    reclaim of a killed worker's leases           reclaim_max_s                          TTL + 2 intervals
    lease held past its expiry, server crash      held_past_expiry_max_s                 2 intervals

Run it on a quiet machine (the load average is printed alongside); it exits 1 when a
figure is over its bound plus --slack:

    .venv/bin/python bench/faults_bounds.py                  # every fault scenario
    .venv/bin/python bench/faults_bounds.py -k failover      # extra arguments go to pytest
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = [
    "tests/faults",
    "tests/scheduler/test_process.py::test_follower_takes_over_and_reaps_after_leader_is_killed",
]
TIMED = (
    "handover_max_s",
    "reaped_after_kill_s",
    "reap_after_expiry_max_s",
    "reap_after_kill_max_s",
    "reclaim_max_s",
    "held_past_expiry_max_s",
)


def run_scenarios(report: Path, pytest_args: list[str]) -> int:
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "0", *SCENARIOS, *pytest_args]
    environ = os.environ | {"QUORRA_FAULTS_REPORT": str(report)}
    return subprocess.run(command, check=False, cwd=REPO, env=environ).returncode


def over_bound(figures: dict, slack: float) -> list[str]:
    """The timing figures of one scenario that exceed its bound plus the slack."""
    bound = figures.get("bound_s")
    if bound is None:
        return []
    return [name for name in TIMED if figures.get(name) is not None and figures[name] > bound + slack]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slack", type=float, default=0.25, help="seconds allowed over each bound (default 0.25)")
    options, pytest_args = parser.parse_known_args()
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as directory:
        report = Path(directory) / "faults.json"
        tests_status = run_scenarios(report, pytest_args)
        measured = json.loads(report.read_text()) if report.exists() else {}
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    failures = 0
    print(f"\n{'scenario':<90} {'figure':<26} {'seconds':>8} {'bound':>6}")
    for nodeid, figures in measured.items():
        late = over_bound(figures, options.slack)
        failures += len(late)
        for name in TIMED:
            if figures.get(name) is not None:
                mark = "  OVER" if name in late else ""
                print(f"{nodeid:<90} {name:<26} {figures[name]:>8} {figures.get('bound_s', '-'):>6}{mark}")
    if tests_status != 0:
        print(f"the scenarios themselves failed (pytest exit code {tests_status})")
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
