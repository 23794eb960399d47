"""A handler that ignores its timeout, for `--handlers tests.worker.stubborn_handlers`."""

import time

from quorra.worker import handler


@handler("stubborn")
def stubborn(job):
    """Sleeps its `seconds` whatever happens: ignores job.timed_out (its thread is abandoned)."""
    time.sleep(job.payload["seconds"])
