"""`quorra scheduler` as a real subprocess whose JSON log lines are collected as they come."""

from __future__ import annotations

import sys

from tests.processes import LoggedProcess, LogLine, clean_environ

__all__ = ["LogLine", "SchedulerProcess"]


class SchedulerProcess(LoggedProcess):
    def __init__(self, database_url: str, interval: str = "0.2s", **env: str):
        defaults = {
            "DATABASE_URL": database_url,
            "QUORRA_SCHEDULER_INTERVAL": interval,
            "QUORRA_LOG_FORMAT": "json",
            "QUORRA_LOG_LEVEL": "info",
        }
        environ = clean_environ(**(defaults | env))
        super().__init__([sys.executable, "-m", "quorra.cli.admin", "scheduler"], environ)
