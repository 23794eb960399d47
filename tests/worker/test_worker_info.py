"""A worker tells the server its host, pid and handlers, shown by GET /v1/workers."""

from __future__ import annotations

import os
import socket

from tests.store.support import later
from tests.worker.support import wait_until


def test_the_worker_sdk_sends_its_host_pid_and_handlers(make_worker, grpc_server, store):
    port, _ = grpc_server
    make_worker(port, {"send": lambda job: None, "bill": lambda job: None}, worker_id="sdk-worker")
    wait_until(lambda: store.recent_workers(later(store, -60)), timeout=60)
    [worker] = store.recent_workers(later(store, -60))
    assert (worker.id, worker.host, worker.pid, worker.handlers) == (
        "sdk-worker",
        socket.gethostname(),
        os.getpid(),
        ["bill", "send"],
    )
