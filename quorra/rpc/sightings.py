"""Which workers this gRPC server sees, from their leases and heartbeats, written to the
workers table cheaply: at most one upsert per worker every WORKER_SEEN_INTERVAL_SECONDS,
or at once when a worker tells something new (another queue, its handlers), however many
calls it makes meanwhile. A failed write is logged and never fails the worker's call."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

import grpc

from quorra.errors import QuorraError
from quorra.jobs import MAX_TYPE_CHARS
from quorra.manager import JobManager
from quorra.rpc import quorra_pb2 as pb2
from quorra.store import WorkerSighting

logger = logging.getLogger(__name__)

WORKER_SEEN_INTERVAL_SECONDS = 5.0
MAX_HANDLERS = 1000
MAX_HOST_CHARS = 255
MAX_TRACKED_WORKERS = 10_000  # past this many, workers not seen for a while are forgotten here


class Sightings:
    def __init__(
        self,
        manager: JobManager,
        interval_seconds: float = WORKER_SEEN_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.manager = manager
        self.interval_seconds = interval_seconds
        self.clock = clock
        # (tenant, worker) -> (when, all it told): a worker id is named within its tenant
        self._written: dict[tuple[str, str], tuple[float, WorkerSighting]] = {}
        self._lock = threading.Lock()

    def seen(self, sighting: WorkerSighting) -> bool:
        """Note a call of this worker; True when it was written to the database now."""
        if not self._due(sighting):
            return False
        try:
            self.manager.record_workers([sighting])
        except QuorraError as exc:
            logger.warning(
                "worker not recorded",
                extra={"event": "worker.record_failed", "worker_id": sighting.worker_id, "error": exc.message},
            )
            return False
        return True

    def _due(self, sighting: WorkerSighting) -> bool:
        now = self.clock()
        with self._lock:
            last = self._written.get((sighting.tenant, sighting.worker_id))
            if last is not None and now - last[0] < self.interval_seconds and not _news(sighting, last[1]):
                return False
            self._written[sighting.tenant, sighting.worker_id] = (now, _merged(last[1], sighting) if last else sighting)
            if len(self._written) > MAX_TRACKED_WORKERS:
                self._forget_before(now - 10 * self.interval_seconds)
        return True

    def _forget_before(self, moment: float) -> None:
        self._written = {worker: seen for worker, seen in self._written.items() if seen[0] >= moment}


_TOLD = ("host", "pid", "queues", "handlers")


def _news(sighting: WorkerSighting, known: WorkerSighting) -> bool:
    return any(getattr(sighting, name) not in (None, getattr(known, name)) for name in _TOLD)


def _merged(known: WorkerSighting, sighting: WorkerSighting) -> WorkerSighting:
    told = {name: getattr(sighting, name) for name in _TOLD if getattr(sighting, name) is not None}
    return dataclasses.replace(known, **told)


def lease_sighting(
    request: pb2.LeaseRequest, queues: tuple[str, ...], context: grpc.ServicerContext, tenant: str
) -> WorkerSighting:
    """What a lease tells of `tenant`'s worker: its queues, and its WorkerInfo if it sent
    one (the host defaults to the peer's address)."""
    info = request.worker if request.HasField("worker") else None
    host = (info.host if info is not None else "") or _peer_host(context.peer())
    return WorkerSighting(
        worker_id=request.worker_id,
        host=_clean(host, MAX_HOST_CHARS) or None,
        pid=info.pid if info is not None and info.pid > 0 else None,
        queues=tuple(sorted(queues)),
        handlers=_handlers(info) if info is not None else None,
        tenant=tenant,
    )


def _handlers(info: pb2.WorkerInfo) -> tuple[str, ...]:
    names = (_clean(name, MAX_TYPE_CHARS) for name in info.handlers[:MAX_HANDLERS])
    return tuple(sorted({name for name in names if name}))


def _clean(text: str, max_chars: int) -> str:
    """Storable on both databases (PostgreSQL refuses NUL) and bounded."""
    return text.replace("\x00", "")[:max_chars]


def _peer_host(peer: str | None) -> str:
    """'ipv4:10.0.0.5:51234' -> '10.0.0.5'; 'ipv6:[::1]:51234' -> '::1'; other forms as they are."""
    if not peer:
        return ""
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return address.rpartition(":")[0].strip("[]")
    return peer
