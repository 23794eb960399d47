"""The bench's worker handler: it does nothing but note each execution, so that the bench can
count executions (none missing, none twice) and time submit -> handler start.

Loaded by `quorra-worker --handlers noop_handlers` with bench/ on PYTHONPATH. Each worker
process appends one line per execution to its own file in QUORRA_BENCH_RECORD_DIR:
`<job id> <handler start, unix seconds> <payload's submitted_at, or ->`. One O_APPEND write
per line, so the threads of a worker never interleave their lines."""

from __future__ import annotations

import os
import time

from quorra.worker import handler

JOB_TYPE = "bench.noop"


def _open_record_file() -> int:
    directory = os.environ.get("QUORRA_BENCH_RECORD_DIR")
    if not directory:
        raise RuntimeError("QUORRA_BENCH_RECORD_DIR is not set: the bench sets it for its workers")
    path = os.path.join(directory, f"{os.getpid()}.log")
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


_RECORD_FD = _open_record_file()


@handler(JOB_TYPE)
def noop(job) -> None:
    started = time.time()
    submitted = job.payload.get("submitted_at", "-")
    os.write(_RECORD_FD, f"{job.id} {started:.6f} {submitted}\n".encode())


@handler("bench.sleep")
def sleep(job) -> None:
    """Hold the job for the payload's `seconds` (the limits bench: jobs that stay in flight)."""
    noop(job)
    time.sleep(float(job.payload.get("seconds", 0)))
