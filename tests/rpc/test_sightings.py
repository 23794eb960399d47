"""The gRPC server records the workers it sees, at most once per worker every few seconds
unless the worker tells something new; and a real worker tells its host, pid and handlers."""

from __future__ import annotations

from quorra.manager import JobManager
from quorra.notify import PollingNotifier
from quorra.rpc import quorra_pb2 as pb2
from quorra.rpc.sightings import Sightings, _peer_host
from quorra.store import WorkerSighting
from tests.rpc.support import AUTH
from tests.store.support import later


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def sightings_on(store) -> tuple[Sightings, Clock]:
    clock = Clock()
    return Sightings(JobManager(store, PollingNotifier(0.5)), interval_seconds=5, clock=clock), clock


def test_a_worker_is_written_at_most_once_per_interval(store):
    sightings, clock = sightings_on(store)
    lease = WorkerSighting("w1", host="box", queues=("q",))
    assert sightings.seen(lease) is True
    assert [sightings.seen(lease) for _ in range(50)] == [False] * 50  # a busy worker: no writes
    assert sightings.seen(WorkerSighting("w1")) is False  # a heartbeat tells nothing new
    clock.now = 5.0
    assert sightings.seen(WorkerSighting("w1")) is True


def test_news_from_a_worker_is_written_at_once(store):
    sightings, _ = sightings_on(store)
    sightings.seen(WorkerSighting("w1", queues=("q",)))
    assert sightings.seen(WorkerSighting("w1", queues=("q", "r"))) is True
    assert store.recent_workers(later(store, -60))[0].queues == ["q", "r"]


def test_peer_addresses_become_hosts():
    assert _peer_host("ipv4:10.0.0.5:51234") == "10.0.0.5"
    assert _peer_host("ipv6:[::1]:51234") == "::1"
    assert _peer_host("unix:/tmp/sock") == "unix:/tmp/sock"


def test_a_lease_records_its_worker_with_what_it_sent(stub, store):
    info = pb2.WorkerInfo(host="box-1", pid=77, handlers=["send", "bill\x00"])
    request = pb2.LeaseRequest(worker_id="w-info", queues=["a", "b"], max_jobs=1, worker=info)
    list(stub.LeaseJobs(request, metadata=AUTH, timeout=10))
    [worker] = store.recent_workers(later(store, -60))
    assert (worker.id, worker.host, worker.pid, worker.queues, worker.handlers) == (
        "w-info",
        "box-1",
        77,
        ["a", "b"],
        ["bill", "send"],
    )


def test_a_lease_without_worker_info_records_the_peer_address(stub, store):
    list(stub.LeaseJobs(pb2.LeaseRequest(worker_id="w-old", queue="a"), metadata=AUTH, timeout=10))
    [worker] = store.recent_workers(later(store, -60))
    assert (worker.host, worker.handlers) == ("127.0.0.1", None)
