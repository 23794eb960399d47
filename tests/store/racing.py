"""Racers for the concurrency tests: lease (and ack) until the queue is empty. A module of
its own, free of pytest, so that spawned processes import it cheaply."""

from __future__ import annotations

import time

from quorra.errors import DatabaseUnavailable
from quorra.store import Store

QUEUE = "race"
BATCH = 5
UNAVAILABLE_RETRIES = 20
START_TIMEOUT_SECONDS = 180  # spawned processes import slowly on a busy machine


def lease_until_empty(store: Store, worker_id: str, start) -> list[str]:
    """Wait for the start signal, then lease and ack until no job is left; return the ids
    this racer leased. On PostgreSQL an empty lease can only mean that every job still
    ready is locked by another racer, which will lease it."""
    start.wait(timeout=START_TIMEOUT_SECONDS)
    leased_ids: list[str] = []
    while jobs := _patiently(store.lease_jobs, [QUEUE], worker_id, BATCH, 300):
        for job in jobs:
            _patiently(store.ack, job.id, job.lease_id)
            leased_ids.append(job.id)
    return leased_ids


def _patiently(call, *args):
    """Try again when the store answers 'unavailable', as a worker does: on a loaded machine
    one of 16 SQLite writers can wait out the busy timeout at BEGIN IMMEDIATE, before it
    wrote anything. Should a retried call find its first try applied after all, it fails
    (an ack of a settled job is a stale lease), so no double lease passes unseen."""
    for attempt in range(UNAVAILABLE_RETRIES + 1):
        try:
            return call(*args)
        except DatabaseUnavailable:
            if attempt == UNAVAILABLE_RETRIES:
                raise
            time.sleep(0.05)


def race_in_process(url: str, worker_id: str, start, results) -> None:
    """A process of its own, with its own Store (the spawn start method shares nothing)."""
    store = Store.from_url(url, pool_size=1)
    try:
        store.ping()  # connect before the start, so that all racers set off together
        results.put((worker_id, lease_until_empty(store, worker_id, start), None))
    except BaseException as exc:
        results.put((worker_id, [], repr(exc)))  # a repr: driver exceptions may not pickle
        raise
    finally:
        store.close()
