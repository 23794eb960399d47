"""Handlers for the workflow tests, run by a `bin/quorra-worker` process: each step records
when it started and finished (CLOCK_MONOTONIC, one clock for every process on the host)
in the file its payload names, and returns 1 + the sum of its parents' results, so the
sink of a DAG returns how many paths lead to it."""

import os
import time

from quorra.worker import handler


def _record(path: str, event: str, ref: str) -> None:
    line = f"{event} {ref} {time.monotonic_ns()}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one write of an O_APPEND file: lines never interleave
    finally:
        os.close(fd)


@handler("dag.step")
def step(job):
    _record(job.payload["log"], "start", job.ref)
    total = 1 + sum(result["paths"] for result in job.parent_results.values())
    _record(job.payload["log"], "finish", job.ref)
    return {"paths": total, "parents": sorted(job.parent_results)}


@handler("dag.fail")
def fail(job):
    raise RuntimeError("this step always fails")


@handler("dag.report")
def report(job):
    return {parent.ref: [parent.status.value, parent.last_error] for parent in job.parents}
