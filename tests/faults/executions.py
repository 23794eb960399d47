"""The side table where test handlers record every execution: a SQLite file of the test's
own, apart from Quorra's database (which a scenario may stop) and never written through
Quorra's store. Worker processes find it through QUORRA_FAULTS_EXECUTIONS.

A row is written, and committed, when a handler starts, so an execution cut short by
kill -9 still counts."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ENV = "QUORRA_FAULTS_EXECUTIONS"
SCHEMA = """CREATE TABLE IF NOT EXISTS executions (
    job_id TEXT NOT NULL, lease_id TEXT NOT NULL, attempt INTEGER NOT NULL,
    pid INTEGER NOT NULL, started_at REAL NOT NULL)"""
_local = threading.local()


def connect(path: str | Path) -> sqlite3.Connection:
    # WAL + synchronous=OFF: a commit survives kill -9 of its process (only a power cut
    # could lose it), and 16 writers in 4 processes do not wait on fsync.
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    return conn


@contextmanager
def opened(path: str | Path) -> Iterator[sqlite3.Connection]:
    conn = connect(path)
    try:
        yield conn
    finally:
        conn.close()


def create(path: Path) -> Path:
    with opened(path) as conn:
        conn.execute(SCHEMA)
    return path


def record(job_id: str, lease_id: str, attempt: int) -> None:
    """Called by a handler in a worker process: one row per execution, committed at once."""
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = connect(os.environ[ENV])
    conn.execute("INSERT INTO executions VALUES (?, ?, ?, ?, ?)", (job_id, lease_id, attempt, os.getpid(), time.time()))


@dataclass(frozen=True)
class Execution:
    job_id: str
    lease_id: str
    attempt: int
    pid: int
    started_at: float  # time.time()


class Executions:
    """The test's view of the side table."""

    def __init__(self, path: Path):
        self.path = create(path)

    def all(self) -> list[Execution]:
        with opened(self.path) as conn:
            rows = conn.execute("SELECT job_id, lease_id, attempt, pid, started_at FROM executions").fetchall()
        return [Execution(*row) for row in rows]

    def count(self) -> int:
        with opened(self.path) as conn:
            return conn.execute("SELECT count(*) FROM executions").fetchone()[0]

    def of(self, job_id: str) -> list[Execution]:
        return [e for e in self.all() if e.job_id == job_id]


def per_job(executions: list[Execution]) -> Counter[str]:
    return Counter(e.job_id for e in executions)


def duplicates(executions: list[Execution]) -> int:
    """Executions beyond one per job."""
    return len(executions) - len(per_job(executions))


def leases_run_twice(executions: list[Execution]) -> list[tuple[str, str]]:
    """(job, lease) pairs that ran more than once: a lease must never run twice."""
    counts = Counter((e.job_id, e.lease_id) for e in executions)
    return [pair for pair, n in counts.items() if n > 1]
