"""Paused queues: a lease never takes a job of a paused queue, on both backends."""

from __future__ import annotations

import pytest

from quorra.errors import InvalidArgument
from quorra.jobs import JobStatus
from tests.factories import make_job


def test_a_paused_queue_is_never_leased_and_its_jobs_wait(store):
    # Given a paused queue with a ready job
    job = make_job(store, queue="mail")
    store.set_queue_paused("mail", True)
    # When a worker leases from it
    leased = store.lease_jobs(["mail"], "worker-a", 10, 30)
    # Then it gets nothing, and the job is still pending
    assert leased == []
    assert store.get_job(job.id).status is JobStatus.PENDING


def test_a_resumed_queue_is_leased_again(store):
    job = make_job(store, queue="mail")
    store.set_queue_paused("mail", True)
    store.set_queue_paused("mail", False)
    assert [leased.id for leased in store.lease_jobs(["mail"], "worker-a", 10, 30)] == [job.id]


def test_a_paused_queue_does_not_hold_back_the_other_queues_of_a_lease(store):
    # Given jobs of every priority in a paused queue and a lower one elsewhere
    make_job(store, queue="paused", priority=9)
    other = make_job(store, queue="open", priority=1)
    store.set_queue_paused("paused", True)
    # When a worker leases from both
    leased = store.lease_jobs(["paused", "open"], "worker-a", 10, 30)
    # Then it gets the open queue's job only
    assert [job.id for job in leased] == [other.id]


def test_a_queue_can_be_paused_before_it_has_jobs(store):
    # Given a queue paused before any job was submitted to it
    state = store.set_queue_paused("future", True)
    assert (state.queue, state.is_paused, state.paused_at is not None) == (
        "future",
        True,
        True,
    )
    # When its first job comes
    make_job(store, queue="future")
    # Then it waits
    assert store.lease_jobs(["future"], "worker-a", 1, 30) == []
    assert store.paused_queues().keys() == {"future"}


def test_pause_and_resume_are_idempotent(store):
    first = store.set_queue_paused("mail", True)
    again = store.set_queue_paused("mail", True)
    assert again.paused_at == first.paused_at  # pausing again keeps since when
    assert store.set_queue_paused("mail", False).is_paused is False
    assert store.set_queue_paused("mail", False) == store.set_queue_paused("mail", False)
    assert store.paused_queues() == {}


def test_resuming_a_queue_never_paused_is_fine(store):
    state = store.set_queue_paused("never", False)
    assert (state.is_paused, state.paused_at) == (False, None)


def test_an_invalid_queue_name_cannot_be_paused(store):
    with pytest.raises(InvalidArgument):
        store.set_queue_paused("bad name", True)
