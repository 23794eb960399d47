"""The store contract for idempotent submission and unique jobs, on SQLite and PostgreSQL:
what a retry under the same idempotency key gets, how long a key lives, and when a unique
job's slot is held and let go as the job moves through its states."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from quorra.errors import IdempotencyKeyReused, IllegalTransition
from quorra.jobs import JobStatus
from quorra.store import Outcome
from tests.factories import job_in_status, spec
from tests.store.support import later, lease_one

S = JobStatus
SCOPE = "a" * 64
DAY = 86400.0


def submit(store, *specs, scope=SCOPE, **options):
    return store.submit_many(list(specs), scope=scope, **options)


def job_count(store) -> int:
    return sum(count.count for count in store.queue_counts())


# -- idempotency keys ---------------------------------------------------------------------------


def test_a_retry_with_the_same_key_and_job_returns_the_first_job(store):
    # Given a job submitted with an idempotency key
    [first] = submit(store, spec(idempotency_key="order-1"))
    # When the same job is submitted again with the same key
    [again] = submit(store, spec(idempotency_key="order-1"))
    # Then the first submission created it, and the retry got the same job back
    assert (first.outcome, again.outcome) == (Outcome.CREATED, Outcome.REPLAYED)
    assert again.job.id == first.job.id
    assert job_count(store) == 1


def test_a_retry_spelled_differently_is_the_same_job(store):
    # Given a job submitted with its defaults left out
    [first] = submit(store, spec(idempotency_key="k", payload={"a": 1, "b": 2}))
    # When a retry spells the defaults out and orders the payload's keys otherwise
    retry = spec(idempotency_key="k", payload={"b": 2, "a": 1}, queue="default", priority=0, max_retries=3)
    [again] = submit(store, retry)
    # Then it is a replay of the same job
    assert (again.outcome, again.job.id) == (Outcome.REPLAYED, first.job.id)


def test_the_same_key_for_a_different_job_is_refused_naming_the_key(store):
    # Given a key used for one job
    [first] = submit(store, spec(idempotency_key="order-1", payload={"n": 1}))
    # When another job is submitted under the same key
    with pytest.raises(IdempotencyKeyReused, match="order-1") as refused:
        submit(store, spec(idempotency_key="order-1", payload={"n": 2}))
    # Then it is a conflict that names the key and the job it was used for
    assert isinstance(refused.value, IllegalTransition)
    assert refused.value.details == {"idempotency_key": "order-1", "job_id": first.job.id}
    assert job_count(store) == 1


def test_a_refused_key_fails_its_whole_batch(store):
    # Given a key used for one job
    submit(store, spec(idempotency_key="k", payload={"n": 1}))
    # When a batch holds a new job and a different job under that key
    with pytest.raises(IdempotencyKeyReused):
        submit(store, spec(payload={"new": True}), spec(idempotency_key="k", payload={"n": 2}))
    # Then none of the batch was created
    assert job_count(store) == 1


def test_keys_are_scoped(store):
    # Given a key used in one scope
    [first] = submit(store, spec(idempotency_key="k"), scope="1" * 64)
    # When the same key and job come in another scope
    [other] = submit(store, spec(idempotency_key="k"), scope="2" * 64)
    # Then that is another job
    assert other.outcome == Outcome.CREATED and other.job.id != first.job.id


def test_a_key_used_twice_in_one_batch_is_one_job(store):
    # When a batch holds the same job twice under one key, between two plain jobs
    results = submit(store, spec(), spec(idempotency_key="k"), spec(idempotency_key="k"), spec())
    # Then the second is a replay of the first; results keep the batch's order
    outcomes = [result.outcome for result in results]
    assert outcomes == [Outcome.CREATED, Outcome.CREATED, Outcome.REPLAYED, Outcome.CREATED]
    assert results[1].job.id == results[2].job.id
    assert job_count(store) == 3


def test_a_keyed_batch_retried_with_more_jobs_replays_the_old_and_creates_the_new(store):
    # Given a batch of 50 jobs, each under a key of its own (as the Python client sends them)
    first = submit(store, *[spec(idempotency_key=f"batch-1:{n}", payload={"n": n}) for n in range(50)])
    # When it is retried with 25 more jobs in between
    retry = [spec(idempotency_key=f"batch-1:{n}", payload={"n": n}) for n in range(75)]
    again = submit(store, *retry[::2], *retry[1::2])
    # Then the 50 are replayed with their ids, in the order sent, and the 25 created
    by_key = {spec.idempotency_key: result for spec, result in zip(retry[::2] + retry[1::2], again, strict=True)}
    assert [by_key[f"batch-1:{n}"].job.id for n in range(50)] == [result.job.id for result in first]
    assert {by_key[f"batch-1:{n}"].outcome for n in range(50)} == {Outcome.REPLAYED}
    assert {by_key[f"batch-1:{n}"].outcome for n in range(50, 75)} == {Outcome.CREATED}
    assert job_count(store) == 75


def test_a_replay_answers_with_the_job_as_it_is_now(store):
    # Given a job submitted under a key, then leased
    [first] = submit(store, spec(idempotency_key="k", queue="q-replay-now"))
    lease_one(store, "q-replay-now")
    # When the submission is retried
    [again] = submit(store, spec(idempotency_key="k", queue="q-replay-now"))
    # Then the answer is that job, leased
    assert (again.job.id, again.job.status) == (first.job.id, S.LEASED)


def test_an_expired_key_creates_a_new_job(store):
    # Given a key kept for a day
    [first] = submit(store, spec(idempotency_key="k"), key_ttl_seconds=DAY)
    # When the same submission comes a day and a second later
    [late] = submit(store, spec(idempotency_key="k", payload={"other": 1}), now=later(store, DAY + 1))
    # Then the expired key was taken over by a new job (even for another body)
    assert late.outcome == Outcome.CREATED and late.job.id != first.job.id
    [again] = submit(store, spec(idempotency_key="k", payload={"other": 1}), now=later(store, DAY + 2))
    assert (again.outcome, again.job.id) == (Outcome.REPLAYED, late.job.id)


def test_pruning_deletes_expired_keys_only(store):
    # Given two keys, one kept an hour and one a day
    submit(store, spec(idempotency_key="short"), key_ttl_seconds=3600)
    submit(store, spec(idempotency_key="long"), key_ttl_seconds=DAY)
    # When keys are pruned two hours later
    pruned = store.prune_idempotency_keys(now=later(store, 7200))
    # Then only the expired one went: its retry creates a new job, the other's replays
    assert pruned == 1
    assert submit(store, spec(idempotency_key="short"))[0].outcome == Outcome.CREATED
    assert submit(store, spec(idempotency_key="long"))[0].outcome == Outcome.REPLAYED


def test_pruning_keys_deletes_at_most_limit_per_call(store):
    for n in range(5):
        submit(store, spec(idempotency_key=f"k{n}"), key_ttl_seconds=60)
    cutoff = later(store, 120)
    assert [store.prune_idempotency_keys(now=cutoff, limit=2) for _ in range(3)] == [2, 2, 1]


def test_a_finished_job_stays_while_a_key_names_it(store):
    # Given a job submitted under a key, then succeeded
    [first] = submit(store, spec(idempotency_key="k", queue="q-kept"))
    leased = lease_one(store, "q-kept")
    store.ack(leased.id, leased.lease_id)
    # When finished jobs are pruned while the key lives
    assert store.prune(later(store, 60)) == 0
    # Then a retry still finds the job; once the key is pruned, so is the job
    assert submit(store, spec(idempotency_key="k", queue="q-kept"))[0].job.id == first.job.id
    assert store.prune_idempotency_keys(now=later(store, DAY + 60)) == 1
    assert store.prune(later(store, 60)) == 1


# -- unique jobs ----------------------------------------------------------------------------------


def test_a_unique_job_is_returned_instead_of_a_duplicate(store):
    # Given a unique job, waiting
    [first] = submit(store, spec(unique={"key": "report-42"}))
    # When another job with the same unique key is submitted
    [second] = submit(store, spec(unique={"key": "report-42"}, payload={"other": True}))
    # Then the answer is the first job, marked a duplicate
    assert (first.outcome, second.outcome) == (Outcome.CREATED, Outcome.DUPLICATE)
    assert second.job.id == first.job.id
    assert job_count(store) == 1


def test_the_default_unique_key_is_type_queue_and_payload(store):
    [first] = submit(store, spec(unique={}, payload={"n": 1}))
    assert submit(store, spec(unique={}, payload={"n": 1}))[0].job.id == first.job.id
    assert submit(store, spec(unique={}, payload={"n": 2}))[0].outcome == Outcome.CREATED
    assert submit(store, spec(unique={}, payload={"n": 1}, queue="other"))[0].outcome == Outcome.CREATED
    assert submit(store, spec(unique={}, payload={"n": 1}, type="other"))[0].outcome == Outcome.CREATED


def test_a_given_unique_key_is_scoped_by_job_type(store):
    submit(store, spec(unique={"key": "k"}))
    assert submit(store, spec(unique={"key": "k"}, type="another_type"))[0].outcome == Outcome.CREATED


def test_plain_jobs_hold_no_unique_slot(store):
    job = store.enqueue(spec())
    assert (job.unique_key, job.unique_states) == (None, None)


@pytest.mark.parametrize("status", [S.PENDING, S.LEASED, S.PROCESSING, S.FAILED])
def test_a_unique_job_holds_its_slot_in_every_live_state(store, status):
    # Given a unique job moved to a live state
    job = job_in_status(store, status, unique={"key": "k"})
    # When the same unique job is submitted
    [again] = submit(store, spec(unique={"key": "k"}, queue=job.queue))
    # Then it is that job
    assert (again.outcome, again.job.id) == (Outcome.DUPLICATE, job.id)


@pytest.mark.parametrize("status", [S.SUCCEEDED, S.DEAD, S.CANCELLED])
def test_a_unique_job_lets_its_slot_go_when_it_ends(store, status):
    # Given a unique job (default states) that ended
    job = job_in_status(store, status, unique={"key": "k"})
    # When the same unique job is submitted
    [again] = submit(store, spec(unique={"key": "k"}, queue=job.queue))
    # Then a new job is created
    assert again.outcome == Outcome.CREATED and again.job.id != job.id


@pytest.mark.parametrize("status", [S.SUCCEEDED, S.DEAD, S.CANCELLED])
def test_a_unique_job_keeps_its_slot_in_the_end_states_it_lists(store, status):
    states = ["pending", "leased", "processing", "failed", status.value]
    job = job_in_status(store, status, unique={"key": "k", "states": states})
    [again] = submit(store, spec(unique={"key": "k"}, queue=job.queue))
    assert (again.outcome, again.job.id) == (Outcome.DUPLICATE, job.id)


def test_a_handed_back_lease_keeps_the_slot(store):
    # Given a unique job leased, then handed back (never delivered)
    job = job_in_status(store, S.LEASED, unique={"key": "k"})
    store.release(job.id, job.lease_id)
    # Then it still holds the slot
    assert submit(store, spec(unique={"key": "k"}, queue=job.queue))[0].job.id == job.id


def test_retrying_a_unique_job_whose_slot_was_taken_is_a_conflict(store):
    # Given a cancelled unique job, and a new job that took its slot
    cancelled = job_in_status(store, S.CANCELLED, unique={"key": "k"})
    [taker] = submit(store, spec(unique={"key": "k"}, queue=cancelled.queue))
    # When a person retries the cancelled job
    with pytest.raises(IllegalTransition, match="unique key"):
        store.retry(cancelled.id)
    # Then it stays cancelled; once the slot is free again, the retry goes through
    assert store.get_job(cancelled.id).status == S.CANCELLED
    store.cancel(taker.job.id)
    assert store.retry(cancelled.id).status == S.PENDING


def test_a_period_makes_one_job_per_period(store):
    # Given an hour-long period, and a time 10 minutes into an hour
    hour = datetime.fromtimestamp(store.database_now().timestamp() // 3600 * 3600 + 3600, UTC)
    unique = {"key": "hourly", "states": ["pending", "leased", "processing", "failed", "succeeded"]}
    unique["period_seconds"] = 3600
    # When the job is submitted twice in that hour and once in the next
    [first] = submit(store, spec(unique=unique), now=hour + timedelta(minutes=10))
    [same] = submit(store, spec(unique=unique), now=hour + timedelta(minutes=50))
    [next_hour] = submit(store, spec(unique=unique), now=hour + timedelta(minutes=70))
    # Then the second is the first, and the next hour has a job of its own
    assert (same.outcome, same.job.id) == (Outcome.DUPLICATE, first.job.id)
    assert next_hour.outcome == Outcome.CREATED


def test_a_batch_mixes_unique_jobs_with_and_without_a_period(store):
    hourly, moment = {"key": "hourly", "period_seconds": 3600}, store.database_now()  # both in one hour
    first = submit(store, spec(unique=hourly), spec(unique={"key": "plain"}), spec(), now=moment)
    again = submit(store, spec(unique=hourly), spec(unique={"key": "plain"}), spec(), now=moment)
    assert [r.outcome for r in first] == [Outcome.CREATED] * 3
    assert [r.outcome for r in again] == [Outcome.DUPLICATE, Outcome.DUPLICATE, Outcome.CREATED]
    assert [r.job.id for r in again[:2]] == [r.job.id for r in first[:2]]


def test_a_unique_job_under_an_idempotency_key_replays_the_holder(store):
    # Given a unique job, and a second submission of it under an idempotency key
    [holder] = submit(store, spec(unique={"key": "k"}))
    [duplicate] = submit(store, spec(unique={"key": "k"}, idempotency_key="retry-me"))
    # When that submission is retried
    [again] = submit(store, spec(unique={"key": "k"}, idempotency_key="retry-me"))
    # Then the key names the holder
    assert duplicate.outcome == Outcome.DUPLICATE
    assert (again.outcome, again.job.id) == (Outcome.REPLAYED, holder.job.id)


def test_a_unique_job_twice_in_one_batch_is_one_job(store):
    results = submit(store, spec(unique={"key": "k"}), spec(unique={"key": "k"}))
    assert [r.outcome for r in results] == [Outcome.CREATED, Outcome.DUPLICATE]
    assert results[0].job.id == results[1].job.id


def test_bulk_retry_leaves_a_dead_unique_job_whose_slot_is_taken_dead(store):
    # Given a dead unique job whose slot a new job took, and a dead plain job, in one queue
    plain = job_in_status(store, S.DEAD, queue="payments")
    taken = job_in_status(store, S.DEAD, unique={"key": "k"}, queue="payments")
    [taker] = submit(store, spec(unique={"key": "k"}, queue="payments"))
    # When the queue's dead jobs are retried in bulk
    retried = store.retry_dead("payments")
    # Then the plain one is back in line; the unique one stays dead, its slot with the taker
    assert retried == {"email_send": 1}
    assert (store.get_job(plain.id).status, store.get_job(taken.id).status) == (S.PENDING, S.DEAD)
    assert store.get_job(taker.job.id).status == S.PENDING


def test_bulk_retry_of_dead_unique_jobs_sharing_a_slot_retries_one(store):
    # Given two dead unique jobs with the same key (the second created once the first died)
    first = job_in_status(store, S.DEAD, unique={"key": "k"}, queue="payments")
    second = job_in_status(store, S.DEAD, unique={"key": "k"}, queue="payments")
    # When the queue's dead jobs are retried in bulk
    assert store.retry_dead("payments") == {"email_send": 1}
    # Then exactly one of them holds the slot again
    statuses = sorted(store.get_job(job.id).status.value for job in (first, second))
    assert statuses == ["dead", "pending"]
