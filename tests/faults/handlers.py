"""Test-only handlers for `quorra-worker --handlers tests.faults.handlers`: each records its
execution in the side table (tests/faults/executions.py) before doing anything else."""

from __future__ import annotations

import os
import time

from quorra.worker import handler
from tests.faults import executions


@handler("record")
def record(job):
    """Record, then sleep `seconds` (default 0) without watching the lease: a handler that
    does not know its lease was lost, so its ack is what must be refused."""
    executions.record(job.id, job.lease_id, job.attempt)
    time.sleep(float(job.payload.get("seconds", 0)))
    return {"pid": os.getpid()}
