"""Racing submissions, on both backends: many threads, each with its own connection (as two
web processes would be), submit the same job under one idempotency key, or the same unique
job, at the same moment. The database's unique indexes let exactly one create it; every
other answer names that job."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from quorra.store import Outcome, Store
from tests.factories import spec

pytestmark = pytest.mark.timeout(600)

THREADS = 16
ROUNDS = 5
RESULT_TIMEOUT_SECONDS = 300


def race(database_url: str, make_spec) -> list[list]:
    """ROUNDS rounds of THREADS threads submitting make_spec(round) at once, through a barrier."""
    store = Store.from_url(database_url, pool_size=THREADS)
    store.ping()
    try:
        rounds = []
        for round_number in range(ROUNDS):
            start = threading.Barrier(THREADS)

            def submit(_: int, n: int = round_number, start: threading.Barrier = start):
                start.wait(timeout=RESULT_TIMEOUT_SECONDS)
                return store.submit_many([make_spec(n)], scope="race")[0]

            with ThreadPoolExecutor(THREADS) as pool:
                rounds.append(list(pool.map(submit, range(THREADS), timeout=RESULT_TIMEOUT_SECONDS)))
        return rounds
    finally:
        store.close()


def assert_one_job_per_round(rounds: list[list], others: Outcome, database_url: str) -> None:
    for answers in rounds:
        assert len({answer.job.id for answer in answers}) == 1, "two jobs for one submission"
        outcomes = sorted(answer.outcome.value for answer in answers)
        assert outcomes == sorted([Outcome.CREATED.value] + [others.value] * (THREADS - 1))
    store = Store.from_url(database_url, pool_size=1)
    try:
        assert sum(count.count for count in store.queue_counts()) == ROUNDS
    finally:
        store.close()


def test_threads_retrying_under_one_idempotency_key_create_one_job(database_url):
    # Given 16 threads, each about to submit the same job under the same key
    # When they submit at once (five rounds, a key per round)
    rounds = race(database_url, lambda n: spec(idempotency_key=f"race-{n}", payload={"round": n}))
    # Then each round created one job, and every thread's answer is that job
    assert_one_job_per_round(rounds, Outcome.REPLAYED, database_url)


def test_threads_submitting_one_unique_job_create_one_job(database_url):
    rounds = race(database_url, lambda n: spec(unique={"key": f"race-{n}"}))
    assert_one_job_per_round(rounds, Outcome.DUPLICATE, database_url)
