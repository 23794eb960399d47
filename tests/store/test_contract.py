"""The store contract: every behaviour of quorra.store.Store, on SQLite and on PostgreSQL
(the `store` fixture is parametrised; each test gets a fresh database). Submitting,
reading, a person's verbs, statistics and pruning here; the worker's and the reaper's
verbs in test_contract_leases.py."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import exc as sa_exc

from quorra.errors import DatabaseUnavailable, IllegalTransition, InvalidArgument, JobNotFound
from quorra.jobs import MAX_BATCH_SIZE, JobSpec, JobStatus
from quorra.store import Store
from quorra.store.submitting import new_job_ids
from tests.conftest import free_port
from tests.factories import dead_job, job_in_status, leased_job, make_job, spec
from tests.store.support import canonical, later

S = JobStatus


# -- enqueue ---------------------------------------------------------------------------------


def test_enqueue_fills_in_the_defaults(store):
    # Given a spec with only a type and a payload
    # When it is enqueued
    job = store.enqueue(JobSpec.parse({"type": "email_send", "payload": {"to": "a@example.com"}}))
    # Then the job waits in the default queue with the default policy and no lease
    assert job.id == canonical(job.id)
    assert (job.queue, job.priority, job.max_retries) == ("default", 0, 3)
    assert (job.status, job.attempts) == (S.PENDING, 0)
    assert job.run_at == job.created_at == job.updated_at
    assert job.created_at.utcoffset() == timedelta(0)
    assert (job.lease_id, job.leased_by, job.leased_at, job.lease_expires_at) == (None, None, None, None)
    assert (job.last_error, job.result, job.finished_at) == (None, None, None)


def test_enqueue_keeps_every_given_field(store):
    # Given a spec that sets every field
    given = spec(type="image.resize", payload={"w": 10}, queue="media", priority=7, max_retries=9)
    # When it is enqueued and read back
    job = store.get_job(store.enqueue(given).id)
    # Then every field is as given
    assert (job.type, job.payload, job.queue, job.priority, job.max_retries) == (
        "image.resize",
        {"w": 10},
        "media",
        7,
        9,
    )


def test_enqueue_with_a_delay_runs_that_many_seconds_later(store):
    # Given a spec delayed by 90 seconds
    # When it is enqueued
    job = make_job(store, delay_seconds=90)
    # Then run_at is 90 seconds after its creation
    assert job.run_at - job.created_at == timedelta(seconds=90)


def test_enqueue_many_creates_every_job_in_order_with_one_created_at(store):
    # Given three specs
    specs = [spec(type=f"t{n}") for n in range(3)]
    # When they are enqueued as one batch
    created = store.enqueue_many(specs)
    # Then each exists, in the order given, all created at the same instant
    assert [job.type for job in created] == ["t0", "t1", "t2"]
    assert len({job.created_at for job in created}) == 1
    assert [store.get_job(job.id).type for job in created] == ["t0", "t1", "t2"]


def test_enqueue_many_accepts_a_full_batch(store):
    # Given the largest batch a client may send
    specs = [spec(payload={"n": n}) for n in range(MAX_BATCH_SIZE)]
    # When it is enqueued
    created = store.enqueue_many(specs)
    # Then every job exists
    assert len({job.id for job in created}) == MAX_BATCH_SIZE
    assert sum(c.count for c in store.queue_counts()) == MAX_BATCH_SIZE


def test_enqueue_returns_the_jobs_exactly_as_stored(store):
    # Given specs with and without a delay (nothing is read back: the store builds them itself)
    specs = [spec(payload={"n": 1, "text": "é"}, priority=-3, max_retries=7), spec(delay_seconds=3600)]
    # When they are enqueued
    created = store.enqueue_many(specs)
    # Then each returned job equals the one read back, field for field
    assert created == [store.get_job(job.id) for job in created]


def test_new_job_ids_are_distinct_random_uuids_in_canonical_form():
    # When many ids are made at once
    ids = new_job_ids(10_000)
    # Then each is a distinct version 4 (random) UUID, written as str(uuid.UUID) writes it
    parsed = [uuid.UUID(job_id) for job_id in ids]
    assert [str(u) for u in parsed] == ids and len(set(ids)) == len(ids)
    assert {(u.version, u.variant) for u in parsed} == {(4, uuid.RFC_4122)}


def test_enqueue_many_of_nothing_creates_nothing(store):
    # When an empty batch is enqueued
    created = store.enqueue_many([])
    # Then nothing is created
    assert created == [] and store.queue_counts() == []


def test_batch_with_a_job_the_database_refuses_creates_no_job(store):
    # Given a batch whose last job breaks the table's CHECK (built without validation,
    # the only way such a spec can reach the store)
    refused = JobSpec.model_construct(
        type="t", payload={}, queue="default", priority=0, delay_seconds=0, max_retries=-1
    )
    batch = [spec(), spec(), refused]
    # When the batch is enqueued
    with pytest.raises(sa_exc.IntegrityError):
        store.enqueue_many(batch)
    # Then not even the valid jobs were created
    assert store.list_jobs().jobs == []


# -- get -------------------------------------------------------------------------------------


def test_get_job_of_an_unknown_id_raises_job_not_found(store):
    with pytest.raises(JobNotFound):
        store.get_job(str(uuid.uuid4()))


@pytest.mark.parametrize("job_id", ["", "nope", "123", "00000000-0000-0000-0000-00000000000g", "' OR 1=1 --"])
def test_get_job_of_a_malformed_id_raises_job_not_found(store, job_id):
    with pytest.raises(JobNotFound):
        store.get_job(job_id)


def test_get_job_finds_a_job_by_any_spelling_of_its_uuid(store):
    # Given a job
    job = make_job(store)
    # When it is fetched by its id in capitals
    found = store.get_job(job.id.upper())
    # Then it is that job, with its canonical id
    assert found.id == job.id


# -- list ------------------------------------------------------------------------------------


def test_list_jobs_returns_the_newest_first(store):
    # Given jobs created one minute apart
    start = store.database_now()
    ids = [store.enqueue(spec(), now=start + timedelta(minutes=n)).id for n in range(4)]
    # When they are listed
    page = store.list_jobs()
    # Then the last created comes first
    assert [job.id for job in page.jobs] == ids[::-1]
    assert page.next_cursor is None


def test_list_jobs_filters_by_queue(store):
    # Given jobs in two queues
    wanted = make_job(store, queue="mail")
    make_job(store, queue="media")
    # When one queue is listed
    page = store.list_jobs(queue="mail")
    # Then only its jobs come back
    assert [job.id for job in page.jobs] == [wanted.id]


def test_list_jobs_filters_by_status(store):
    # Given a pending job and a dead one
    make_job(store)
    dead = dead_job(store)
    # When dead jobs are listed
    page = store.list_jobs(status="dead")
    # Then only the dead job comes back
    assert [job.id for job in page.jobs] == [dead.id]


def test_list_jobs_filters_by_type(store):
    # Given jobs of two types
    wanted = make_job(store, type="report")
    make_job(store, type="email_send")
    # When one type is listed
    page = store.list_jobs(type="report")
    # Then only jobs of that type come back
    assert [job.id for job in page.jobs] == [wanted.id]


def test_list_jobs_cursor_pages_through_jobs_that_share_created_at(store):
    # Given seven jobs of one batch (one created_at, so only the id orders them)
    batch = store.enqueue_many([spec() for _ in range(7)])
    everything = store.list_jobs(limit=7).jobs
    # When they are read three at a time, following the cursor
    pages, cursor = [], None
    for _ in range(3):
        page = store.list_jobs(limit=3, cursor=cursor)
        pages.append([job.id for job in page.jobs])
        cursor = page.next_cursor
    # Then the pages hold every job once, in the order of one big page, and end without a cursor
    assert [len(p) for p in pages] == [3, 3, 1]
    read = [job_id for page in pages for job_id in page]
    assert read == [job.id for job in everything]
    assert sorted(read) == sorted(job.id for job in batch)
    assert cursor is None


def test_list_jobs_without_bodies_leaves_payload_and_result_out(store):
    # Given a job with a payload and a result
    job = leased_job(store, payload={"big": "x" * 1000})
    store.ack(job.id, job.lease_id, {"answer": 42})
    # When the list is read without bodies
    [listed] = store.list_jobs(bodies=False).jobs
    # Then everything but the bodies is there
    assert (listed.id, listed.status, listed.payload, listed.result) == (job.id, JobStatus.SUCCEEDED, None, None)


def test_list_jobs_ends_a_page_early_at_the_byte_budget_and_the_cursor_continues(store):
    # Given five jobs of about 10 kB of payload each
    made = [make_job(store, payload={"blob": "x" * 10_000, "n": n}) for n in range(5)]
    # When they are listed with bodies and a budget of 25 kB, following the cursor
    pages, cursor = [], None
    for _ in range(5):
        page = store.list_jobs(limit=50, cursor=cursor, max_bytes=25_000)
        pages.append(page.jobs)
        if (cursor := page.next_cursor) is None:
            break
    # Then each page holds what fits (two jobs), and every job comes once, with its payload
    assert [len(page) for page in pages] == [2, 2, 1]
    listed = [job for page in pages for job in page]
    assert sorted(job.id for job in listed) == sorted(job.id for job in made)
    assert all(len(job.payload["blob"]) == 10_000 for job in listed)


def test_list_jobs_page_holds_one_job_even_if_it_alone_is_over_the_budget(store):
    make_job(store, payload={"blob": "x" * 5000})
    make_job(store, payload={"blob": "y" * 5000})

    page = store.list_jobs(max_bytes=100)

    assert len(page.jobs) == 1 and page.next_cursor is not None


@pytest.mark.parametrize("limit", [0, -1, 501])
def test_list_jobs_with_a_limit_out_of_range_raises_invalid_argument(store, limit):
    with pytest.raises(InvalidArgument):
        store.list_jobs(limit=limit)


def test_list_jobs_with_an_unknown_status_raises_invalid_argument(store):
    with pytest.raises(InvalidArgument):
        store.list_jobs(status="finished")


# -- cancel ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [S.PENDING, S.FAILED, S.LEASED, S.PROCESSING])
def test_cancel_stops_a_job_that_has_not_finished(store, status):
    # Given a job that is not finished
    job = job_in_status(store, status)
    # When a person cancels it
    cancelled = store.cancel(job.id)
    # Then it is cancelled, finished, and never leased again
    assert cancelled.status == S.CANCELLED and cancelled.finished_at is not None
    assert cancelled.lease_expires_at is None
    assert store.lease_jobs([job.queue], "worker-b", 1, 30, now=later(store, 86400)) == []


@pytest.mark.parametrize("status", [S.SUCCEEDED, S.DEAD, S.CANCELLED])
def test_cancel_of_a_finished_job_raises_illegal_transition(store, status):
    # Given a finished job
    job = job_in_status(store, status)
    # When a person cancels it
    with pytest.raises(IllegalTransition):
        store.cancel(job.id)
    # Then it is unchanged
    assert store.get_job(job.id) == job


def test_cancel_of_an_unknown_job_raises_job_not_found(store):
    with pytest.raises(JobNotFound):
        store.cancel(str(uuid.uuid4()))


# -- retry -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [S.DEAD, S.FAILED, S.CANCELLED])
def test_retry_puts_a_job_back_in_line_with_its_retries_renewed(store, status):
    # Given a dead, failed or cancelled job
    job = job_in_status(store, status)
    when = later(store, 5)
    # When a person retries it
    retried = store.retry(job.id, now=when)
    # Then it is pending now, with no attempts, no lease and no finish
    assert (retried.status, retried.attempts, retried.run_at) == (S.PENDING, 0, when)
    assert (retried.lease_id, retried.lease_expires_at, retried.finished_at) == (None, None, None)
    assert [j.id for j in store.lease_jobs([job.queue], "worker-b", 1, 30, now=when)] == [job.id]


@pytest.mark.parametrize("status", [S.PENDING, S.LEASED, S.PROCESSING, S.SUCCEEDED])
def test_retry_of_a_job_that_is_not_failed_raises_illegal_transition(store, status):
    job = job_in_status(store, status)
    with pytest.raises(IllegalTransition):
        store.retry(job.id)
    assert store.get_job(job.id) == job


def test_retry_of_an_unknown_job_raises_job_not_found(store):
    with pytest.raises(JobNotFound):
        store.retry(str(uuid.uuid4()))


# -- statistics ------------------------------------------------------------------------------


def test_queue_counts_counts_the_jobs_of_each_queue_in_each_status(store):
    # Given one leased mail job, two pending mail jobs and a dead media job
    leased_job(store, queue="mail")
    make_job(store, queue="mail")
    make_job(store, queue="mail")
    dead_job(store, queue="media")
    # When the queues are counted
    counts = store.queue_counts()
    # Then each (queue, status) has its count
    assert [(c.queue, c.status, c.count) for c in counts] == [
        ("mail", "leased", 1),
        ("mail", "pending", 2),
        ("media", "dead", 1),
    ]


def test_oldest_ready_at_is_the_run_at_of_the_longest_waiting_ready_job(store):
    # Given ready jobs of two queues, plus a delayed and a leased one that are not waiting
    start = store.database_now()
    oldest = store.enqueue(spec(queue="mail"), now=start - timedelta(minutes=5))
    store.enqueue(spec(queue="mail"), now=start - timedelta(minutes=1))
    media = store.enqueue(spec(queue="media"), now=start - timedelta(minutes=2))
    store.enqueue(spec(queue="later", delay_seconds=600), now=start)
    leased_job(store, queue="held")
    # When the oldest ready job per queue is asked for
    oldest_by_queue = store.oldest_ready_at(now=start)
    # Then each queue with a waiting job reports its oldest run_at
    assert oldest_by_queue == {"mail": oldest.run_at, "media": media.run_at}


def test_queues_due_between_names_the_queues_whose_jobs_became_ready(store):
    # Given jobs due in 10, 20 and 30 seconds in three queues
    start = store.database_now()
    for queue, delay in [("a", 10), ("b", 20), ("c", 30)]:
        store.enqueue(spec(queue=queue, delay_seconds=delay), now=start)
    # When asked which became due after 10 s and up to 20 s
    due = store.queues_due_between(start + timedelta(seconds=10), now=start + timedelta(seconds=20))
    # Then only the queue due at 20 s is named (the window is open at its start)
    assert due == ["b"]


# -- prune -----------------------------------------------------------------------------------


def test_prune_deletes_succeeded_and_cancelled_jobs_that_finished_before_the_cutoff(store):
    # Given a succeeded and a cancelled job
    done, cancelled = job_in_status(store, S.SUCCEEDED), job_in_status(store, S.CANCELLED)
    # When jobs finished before a later time are pruned
    deleted = store.prune(later(store, 60))
    # Then both are gone
    assert deleted == 2
    for job in (done, cancelled):
        with pytest.raises(JobNotFound):
            store.get_job(job.id)


def test_prune_keeps_dead_and_unfinished_jobs(store):
    # Given a dead job and jobs that have not finished
    kept = [job_in_status(store, status) for status in (S.DEAD, S.PENDING, S.LEASED, S.PROCESSING, S.FAILED)]
    # When everything older than a day from now is pruned
    deleted = store.prune(later(store, 86400))
    # Then all of them stay
    assert deleted == 0
    assert [store.get_job(job.id).status for job in kept] == [job.status for job in kept]


def test_prune_keeps_jobs_that_finished_after_the_cutoff(store):
    job = job_in_status(store, S.SUCCEEDED)
    assert store.prune(job.finished_at) == 0
    assert store.get_job(job.id).status == S.SUCCEEDED


def test_prune_deletes_at_most_limit_jobs_per_call(store):
    # Given five succeeded jobs
    for _ in range(5):
        job_in_status(store, S.SUCCEEDED)
    cutoff = later(store, 60)
    # When pruned with a limit of two, three times
    deleted = [store.prune(cutoff, limit=2) for _ in range(3)]
    # Then it goes two, two, one
    assert deleted == [2, 2, 1]


# -- the database ----------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def unreachable_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/no-such-directory/quorra.db"
    return f"postgresql://postgres@127.0.0.1:{free_port()}/quorra"


def test_store_on_an_unreachable_database_raises_database_unavailable(unreachable_url):
    # Given a store whose database cannot be reached (nothing listens on the port)
    store = Store.from_url(unreachable_url)
    # When it is used
    try:
        with pytest.raises(DatabaseUnavailable):
            store.get_job(str(uuid.uuid4()))
        with pytest.raises(DatabaseUnavailable):
            store.enqueue(spec())
    finally:
        store.close()


PAYLOAD = {
    "text": 'żółw 🐢 — ñ, 漢字, עברית, e\u0301, \u2028, "quoted" \\ back',
    "ключ": "unicode keys too",
    "nested": {"list": [1, [2, [3, {"deep": [True, False, None]}]]], "empty": {}, "none": []},
    "ints": [0, -1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63), 2**70],
    # Not here: -0.0 and integral floats from 1e16 up, which jsonb (numeric) gives back as 0.0 and ints.
    "floats": [0.1, -2.5, 1.0, 1e-7, 3.141592653589793, 123456.789, 2.2250738585072014e-308, 6.02214076e-23],
    "escapes": "tab\tnewline\nunit\u001f",
}


def test_payload_round_trips_identically(store):
    # Given a payload with unicode, nesting, big integers and floats
    job = make_job(store, payload=PAYLOAD)
    # When it is read back
    payload = store.get_job(job.id).payload
    # Then it is the same value with the same JSON types (key order aside: jsonb sorts keys)
    assert json.dumps(payload, sort_keys=True) == json.dumps(PAYLOAD, sort_keys=True)
