"""The worker SDK in-process against a real server: handlers, results and errors, slots,
heartbeats, reconnection, ack retries and graceful stop. Each test runs on both backends."""

from __future__ import annotations

import os
import threading
import time

import pytest

from quorra.jobs import JobStatus
from quorra.notify import make_notifier
from quorra.worker.worker import (
    MAX_JOBS_PER_LEASE,
    PREFETCH_BELOW_SECONDS,
    PREFETCH_MAX_FACTOR,
    PREFETCH_SECONDS,
    Slots,
    prefetch_for,
)
from tests import factories
from tests.conftest import free_port
from tests.rpc.support import running_server
from tests.worker.support import wait_until


def enqueue(store, notifier, **fields):
    job = factories.make_job(store, **({"queue": "work"} | fields))
    notifier.publish(job.queue)
    return job


def settled(store, job_id: str, timeout: float = 20.0):
    return wait_until(lambda: _final(store, job_id), timeout, what=f"job {job_id} settled")


def _final(store, job_id):
    job = store.get_job(job_id)
    return job if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.DEAD) else None


def test_a_handler_return_value_is_stored_as_the_result(grpc_server, store, make_worker):
    port, notifier = grpc_server
    seen = []
    make_worker(port, {"email_send": lambda job: seen.append(job) or {"to": job.payload["to"], "ok": True}})

    job = enqueue(store, notifier, payload={"to": "a@example.com"})

    done = settled(store, job.id)
    assert (done.status, done.attempts, done.result) == (JobStatus.SUCCEEDED, 1, {"to": "a@example.com", "ok": True})
    [received] = seen
    assert (received.id, received.type, received.queue, received.attempt) == (job.id, "email_send", "work", 1)
    assert received.payload == {"to": "a@example.com"} and not received.is_last_attempt


def test_a_result_that_is_not_json_is_dropped_and_the_job_still_succeeds(grpc_server, store, make_worker):
    port, notifier = grpc_server
    make_worker(port, {"email_send": lambda job: object()})

    job = enqueue(store, notifier)

    done = settled(store, job.id)
    assert (done.status, done.result) == (JobStatus.SUCCEEDED, None)


def test_a_raising_handler_nacks_with_the_message_and_a_traceback(grpc_server, store, make_worker):
    port, notifier = grpc_server

    def broken(job):
        raise ValueError(f"cannot send to {job.payload['to']}")

    make_worker(port, {"email_send": broken})

    job = enqueue(store, notifier, payload={"to": "nobody"}, max_retries=0)

    done = settled(store, job.id)
    assert done.status is JobStatus.DEAD
    assert done.last_error.startswith("ValueError: cannot send to nobody\n\nTraceback (most recent call last):")
    assert "in broken" in done.last_error


def test_an_unknown_job_type_is_nacked_with_a_clear_error(grpc_server, store, make_worker):
    port, notifier = grpc_server
    make_worker(port, {"email_send": lambda job: None})

    job = enqueue(store, notifier, type="resize_image", max_retries=0)

    done = settled(store, job.id)
    assert done.status is JobStatus.DEAD
    assert done.last_error == "no handler for job type 'resize_image' on worker test-worker (it handles: email_send)"


def test_the_worker_leases_only_as_many_jobs_as_it_has_free_slots(grpc_server, store, make_worker):
    port, notifier = grpc_server
    release = threading.Event()
    worker = make_worker(port, {"email_send": lambda job: release.wait(20)}, worker_max_jobs=2)
    jobs = [enqueue(store, notifier) for _ in range(5)]

    wait_until(lambda: worker.running_jobs == 2, what="two jobs running")
    time.sleep(0.3)  # time enough for a third lease, if the worker wrongly asked for one
    statuses = [store.get_job(job.id).status for job in jobs]

    assert statuses.count(JobStatus.LEASED) + statuses.count(JobStatus.PROCESSING) == 2
    assert statuses.count(JobStatus.PENDING) == 3
    release.set()
    assert all(settled(store, job.id).status is JobStatus.SUCCEEDED for job in jobs)


def test_a_job_run_by_the_thread_that_leased_it_does_not_hold_up_the_next_lease(grpc_server, store, make_worker):
    # Given an idle worker of 2 threads, running a job that waits to be released: an idle
    # worker's job runs on the thread that leased it, which passes the turn to lease on
    port, notifier = grpc_server
    release = threading.Event()
    started: list[str] = []

    def handler(job):
        started.append(job.id)
        release.wait(20)

    worker = make_worker(port, {"email_send": handler}, worker_max_jobs=2)
    first = enqueue(store, notifier)
    wait_until(lambda: started == [first.id], what="the first job running")

    # When another job comes while it still runs
    second = enqueue(store, notifier)

    # Then another thread leased it and runs it meanwhile, and both succeed once released
    wait_until(lambda: started == [first.id, second.id], what="the second job running beside the first")
    assert worker.running_jobs == 2
    release.set()
    assert [settled(store, job.id).status for job in (first, second)] == [JobStatus.SUCCEEDED] * 2


def _fast_worker_counting_asks(grpc_server, make_worker, *, threads: int):
    """A worker of `threads` threads whose handlers return at once, its notifier, and the
    max_jobs of each lease it asks for (as they are asked)."""
    port, notifier = grpc_server
    worker = make_worker(port, {"email_send": lambda job: None}, worker_max_jobs=threads)
    asked: list[int] = []
    real = worker.client.settle_and_lease
    worker.client.settle_and_lease = lambda *args: asked.append(args[1]) or real(*args)
    return worker, notifier, asked


def test_fast_handlers_let_the_worker_lease_ahead_of_its_threads(grpc_server, store, make_worker):
    # Given a worker of 2 threads whose handlers return at once
    _, notifier, asked = _fast_worker_counting_asks(grpc_server, make_worker, threads=2)

    # When it has run enough of them to know they are fast
    jobs = [factories.make_job(store, queue="work") for _ in range(60)]
    notifier.publish("work")
    assert all(settled(store, job.id).status is JobStatus.SUCCEEDED for job in jobs)

    # Then it asked for more jobs than it has threads (PREFETCH_MAX_FACTOR times as many again,
    # at most), and ran each once
    assert 2 < max(asked) <= 2 * (1 + PREFETCH_MAX_FACTOR)
    assert [store.get_job(job.id).attempts for job in jobs] == [1] * 60


def test_a_worker_with_many_threads_never_asks_for_more_jobs_than_a_lease_may_hold(grpc_server, store, make_worker):
    # Given a worker of 200 threads whose handlers return at once
    worker, notifier, asked = _fast_worker_counting_asks(grpc_server, make_worker, threads=200)

    # When it has run enough of them to lease far ahead (with its prefetch, more than 1,000
    # jobs at once), and waits for more
    warm_up = [factories.make_job(store, queue="work") for _ in range(60)]
    notifier.publish("work")
    assert all(settled(store, job.id).status is JobStatus.SUCCEEDED for job in warm_up)
    wait_until(lambda: max(asked) >= MAX_JOBS_PER_LEASE, what="a lease asking for all a lease may hold")
    later = enqueue(store, notifier)

    # Then it asked for 1,000 at most (more is refused as invalid, which stopped the worker)
    # and leases on
    assert settled(store, later.id).status is JobStatus.SUCCEEDED
    assert max(asked) == MAX_JOBS_PER_LEASE
    assert worker.error is None


def test_the_faster_the_handlers_the_further_ahead_the_worker_leases():
    assert prefetch_for(PREFETCH_BELOW_SECONDS, threads=4) == 0  # slow: none
    assert prefetch_for(PREFETCH_SECONDS / 1.5, threads=4) == 4  # as many again as there are threads
    assert prefetch_for(PREFETCH_SECONDS / 3.5, threads=4) == 12  # whole multiples of the threads
    assert prefetch_for(0.0, threads=4) == 4 * PREFETCH_MAX_FACTOR  # at most this many


def test_a_prefetch_that_shrinks_while_the_lease_loop_lingers_waits_for_a_free_slot():
    # Given 4 threads with a prefetch of 40 and 43 jobs in hand: one slot is free, and the
    # lease loop lingers for more
    checked = threading.Event()
    slots = Slots(4, backlog_full=lambda: checked.set() or False)
    slots.set_prefetch(40)
    for _ in range(43):
        slots.take()
    asked = []
    loop = threading.Thread(target=lambda: asked.append(slots.wait_free(threading.Event(), 0.5)), daemon=True)
    loop.start()
    assert checked.wait(10)

    # When the prefetch shrinks to none meanwhile (a slow job raised the average): it takes
    # the lock that the loop holds until it lingers
    slots.set_prefetch(0)
    loop.join(3)  # the linger is over by now, with no slot free
    for _ in range(40):
        slots.give()
    loop.join(10)

    # Then the lease asks for the one slot free once some came free, never for 0 or fewer
    # jobs (a lease the server refuses as invalid, which stopped the worker)
    assert asked == [1]


def test_slow_handlers_get_no_prefetch(grpc_server, store, make_worker):
    port, notifier = grpc_server
    worker = make_worker(port, {"email_send": lambda job: time.sleep(0.05)}, worker_max_jobs=2)
    asked = []
    real = worker.client.settle_and_lease
    worker.client.settle_and_lease = lambda *args: asked.append(args[1]) or real(*args)

    jobs = [factories.make_job(store, queue="work") for _ in range(6)]
    notifier.publish("work")
    assert all(settled(store, job.id).status is JobStatus.SUCCEEDED for job in jobs)
    assert max(asked) <= 2


def test_heartbeats_keep_a_job_longer_than_its_ttl_leased(grpc_server, store, make_worker):
    port, notifier = grpc_server
    make_worker(port, {"email_send": lambda job: time.sleep(2.6)}, worker_lease_ttl_seconds=2)

    job = enqueue(store, notifier)

    wait_until(lambda: store.get_job(job.id).status is JobStatus.PROCESSING, what="the first heartbeat")
    done = settled(store, job.id)
    assert (done.status, done.attempts) == (JobStatus.SUCCEEDED, 1)  # the ack came after the 2 s TTL


def test_stop_finishes_running_jobs_within_the_grace_and_acks_them(grpc_server, store, make_worker):
    port, notifier = grpc_server
    started = threading.Event()
    worker = make_worker(port, {"email_send": lambda job: started.set() or time.sleep(0.5)})
    job = enqueue(store, notifier)
    assert started.wait(20)

    clean = worker.stop(grace=10)

    assert clean is True
    assert store.get_job(job.id).status is JobStatus.SUCCEEDED
    later = enqueue(store, notifier)
    time.sleep(0.3)
    assert store.get_job(later.id).status is JobStatus.PENDING  # a stopped worker leases nothing


def test_stop_ends_an_idle_workers_long_poll_at_once(server_settings, store, make_worker):
    # Given an idle worker whose long poll (30 s) waits on a server that allows it
    server_settings = server_settings.model_copy(update={"lease_wait_max_seconds": 60.0})
    notifier = make_notifier(server_settings)
    with running_server(server_settings, store, notifier) as (server, port):
        worker = make_worker(port, {"email_send": lambda job: None})
        wait_until(lambda: server.servicer.waiting == 1, what="the worker's long poll waiting")

        # When it stops
        began = time.monotonic()
        clean = worker.stop(grace=30)

        # Then the long poll ended on the server too, long before its 30 s, and leases nothing more
        assert clean is True
        assert time.monotonic() - began < 15
        assert worker._leasing_ended.is_set()
        wait_until(lambda: server.servicer.waiting == 0, what="the long poll ended on the server")
        later = enqueue(store, notifier)
        time.sleep(0.5)
        assert store.get_job(later.id).status is JobStatus.PENDING


def test_jobs_still_running_after_the_grace_are_nacked(grpc_server, store, make_worker):
    port, notifier = grpc_server
    started, release = threading.Event(), threading.Event()
    worker = make_worker(port, {"email_send": lambda job: started.set() or release.wait(20)})
    job = enqueue(store, notifier)
    assert started.wait(20)

    clean = worker.stop(grace=0.2)
    release.set()

    failed = store.get_job(job.id)
    assert clean is False
    assert failed.status is JobStatus.FAILED
    assert failed.last_error == "worker test-worker stopped before the job finished"


def test_the_worker_waits_for_a_late_server_and_its_ack_outlives_a_restart(server_settings, store, make_worker):
    # Given a worker started before any server listens on its port
    port = free_port()
    address = f"127.0.0.1:{port}"
    started, release = threading.Event(), threading.Event()
    make_worker(port, {"email_send": lambda job: None, "slow": lambda job: started.set() or release.wait(20)})
    first = factories.make_job(store, queue="work")

    # When the server comes up, the worker connects and works
    with running_server(server_settings, store, make_notifier(server_settings), address):
        assert settled(store, first.id).status is JobStatus.SUCCEEDED
        second = factories.make_job(store, queue="work", type="slow")
        assert started.wait(20)
    # ... the server goes away while a job runs, and the job finishes meanwhile
    release.set()
    time.sleep(0.5)  # the ack fails (UNAVAILABLE) and is retried

    # Then once the server is back, the ack lands: nothing ran twice
    with running_server(server_settings, store, make_notifier(server_settings), address):
        done = settled(store, second.id)
    assert (done.status, done.attempts) == (JobStatus.SUCCEEDED, 1)


def test_a_result_that_cannot_be_encoded_is_dropped_and_the_job_still_succeeds(grpc_server, store, make_worker):
    port, notifier = grpc_server
    make_worker(port, {"email_send": lambda job: {"file": os.fsdecode(b"report-\xff.csv")}})

    job = enqueue(store, notifier)

    done = settled(store, job.id)
    assert (done.status, done.attempts, done.result) == (JobStatus.SUCCEEDED, 1, None)


def test_an_error_that_cannot_be_encoded_is_escaped_and_the_job_nacked(grpc_server, store, make_worker):
    port, notifier = grpc_server

    def broken(job):
        raise FileNotFoundError(os.fsdecode(b"report-\xff.csv"))

    make_worker(port, {"email_send": broken})

    job = enqueue(store, notifier, max_retries=0)

    done = settled(store, job.id)
    assert (done.status, done.attempts) == (JobStatus.DEAD, 1)
    assert done.last_error.startswith("FileNotFoundError: report-\\udcff.csv\n\nTraceback")


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no text for you")


@pytest.mark.parametrize(
    ("raised", "error"),
    [
        (Unprintable(), "Unprintable: <exception str() failed>"),
        (SystemExit(3), "SystemExit: 3"),
    ],
)
def test_whatever_a_handler_raises_the_job_is_nacked_and_the_thread_lives_on(
    grpc_server, store, make_worker, raised, error
):
    port, notifier = grpc_server

    def broken(job):
        raise raised

    make_worker(port, {"broken": broken, "fine": lambda job: "ok"}, worker_max_jobs=1)

    failed = enqueue(store, notifier, type="broken", max_retries=0)
    assert settled(store, failed.id).last_error.startswith(f"{error}\n\nTraceback")
    fine = enqueue(store, notifier, type="fine")
    assert settled(store, fine.id).result == "ok"  # the only job thread survived
