"""The gRPC server's Python cost per job, without gRPC, the network or other processes: the
servicer's SettleAndLease called in a loop in this one thread, as a worker would call it
(the settlements of the last batch go with the next lease), against a throwaway PostgreSQL
database. Prints this thread's CPU per job (time.thread_time), which a busy machine inflates
far less than the CPU of a whole multi-process run; under valgrind it counts instructions,
which no load changes:

    python bench/servicer_cost.py                       # 5,000 no-op jobs, batches of 20
    python bench/servicer_cost.py --jobs 2000 --batch 10
    valgrind --tool=callgrind --callgrind-out-file=/tmp/servicer.cg python bench/servicer_cost.py --jobs 1000

Wake-ups go through a process-local notifier (no Redis or NOTIFY round trip is counted), and
the jobs are enqueued before the clock starts. Not part of the test run; it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import time

from lease_throughput import throwaway_postgres  # bench/ is on sys.path: run as `python bench/...`

from quorra import migrate
from quorra.config import Settings
from quorra.jobs import JobSpec
from quorra.notify import PollingNotifier
from quorra.rpc import quorra_pb2 as pb2
from quorra.rpc.servicer import WorkerServicer
from quorra.store import Store

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
QUEUE = "bench_servicer"


class Context:
    """The little of grpc.ServicerContext the servicer asks of a call that is never cancelled."""

    def is_active(self) -> bool:
        return True

    def time_remaining(self) -> None:
        return None

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"

    def abort(self, code, details):
        raise RuntimeError(f"{code}: {details}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=20, help="max_jobs of each lease")
    options = parser.parse_args()
    with throwaway_postgres(os.environ.get("QUORRA_BENCH_DATABASE_URL", DEFAULT_POSTGRES)) as url:
        store = Store.from_url(url)
        migrate.upgrade(store.engine)
        try:
            measure(store, url, options)
        finally:
            store.close()


def measure(store: Store, url: str, options: argparse.Namespace) -> None:
    settings = Settings(database_url=url, log_level="warning")
    servicer = WorkerServicer(settings, store, PollingNotifier(settings.poll_interval_seconds))
    store.enqueue_many([JobSpec.parse({"type": "noop", "queue": QUEUE, "payload": {}})] * options.jobs)
    context, settlements, done, calls = Context(), [], 0, 0
    cpu, wall = time.thread_time(), time.perf_counter()
    while done < options.jobs:
        lease = pb2.LeaseRequest(worker_id="bench", queues=[QUEUE], max_jobs=options.batch, lease_ttl_seconds=30)
        reply = servicer.SettleAndLease(pb2.SettleAndLeaseRequest(lease=lease, settlements=settlements), context)
        done += len(reply.results)
        settlements = [pb2.Settlement(job_id=job.id, lease_id=job.lease_id, success=True) for job in reply.jobs]
        calls += 1
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    jobs = options.jobs
    print(f"{jobs} no-op jobs, leases of {options.batch}, {calls} SettleAndLease calls")
    print(f"  servicer CPU/job: {cpu / jobs * 1e6:7.1f} us (this thread; {cpu:.2f} s)")
    print(f"  wall/job:         {wall / jobs * 1e6:7.1f} us (round trips to PostgreSQL included)")


if __name__ == "__main__":
    main()
