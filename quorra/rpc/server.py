"""The gRPC server (`quorra grpc`): the worker service, the standard health service and
server reflection, on a threaded ``grpc.server``.

    create_server(settings, store, notifier, address) -> (server, port)   tests: "127.0.0.1:0"
    serve(settings)                                                        the process

Threads: each call holds one for its whole length, and a long poll holds it for up to
QUORRA_LEASE_WAIT_MAX. The pool has QUORRA_GRPC_THREADS; long polls and other long calls may
take all but a quarter of them (the rest stay free for acks, nacks, extends and settles), and
health watches take none (``quorra.rpc.capacity``).

Shutdown (``RpcServer.stop``) drains before it stops: new leases are refused, long polls end
at once, and acks, nacks, extends and settles are served until every lease this server
delivered is settled or expired, or the grace period is over (``quorra.rpc.drain``). Then
the server stops, and connections that carry no call (idle, or a TCP probe that never
speaks HTTP/2) are dropped instead of holding the exit for the whole grace period.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Sequence
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from quorra import tracing
from quorra.access import Permission
from quorra.config import Settings, listen_address
from quorra.credentials import build_authenticator
from quorra.errors import DatabaseUnavailable, QuorraError
from quorra.migrate import ensure_at_head
from quorra.notify import Notifier, make_notifier
from quorra.rpc import quorra_pb2_grpc as pb2_grpc
from quorra.rpc.capacity import CallGate
from quorra.rpc.drain import LeaseLedger, LedgerInterceptor
from quorra.rpc.health import HealthServicer
from quorra.rpc.interceptors import ApiKeyInterceptor, ObservingInterceptor
from quorra.rpc.servicer import SERVICE_NAME, WorkerServicer
from quorra.shutdown import ShutdownSignal
from quorra.store import Store

logger = logging.getLogger(__name__)

HEALTH_CHECK_SECONDS = 2.0
FINAL_STOP_SECONDS = 5.0  # after every call is cancelled, for grpc core to finish its shutdown
HEALTH_STOP_SECONDS = 2.0  # at most this long telling health watchers of a shutdown
QUEUED_CALLS_PER_THREAD = 4
# What a caller's role must allow, by service; the health service needs no credential at all.
SERVICE_PERMISSIONS = {
    f"/{SERVICE_NAME}/": Permission.JOBS_WORK,
    f"/{reflection.SERVICE_NAME}/": Permission.JOBS_WORK,
}
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthMonitor:
    """Reports NOT_SERVING on grpc.health.v1 while the database does not answer."""

    def __init__(self, store: Store, servicer: HealthServicer, interval: float = HEALTH_CHECK_SECONDS):
        self.store = store
        self.servicer = servicer
        self.interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="quorra-rpc-health", daemon=True)
        self._status: int | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """NOT_SERVING to every watcher. Each send waits until it is out (or the watch has
        ended); shutdown must not wait on a slow watcher's connection, so the wait is bounded
        (the server's stop then cancels whatever send is left)."""
        self._stopped.set()
        announce = threading.Thread(
            target=self.servicer.enter_graceful_shutdown, name="quorra-rpc-health-stop", daemon=True
        )
        announce.start()
        announce.join(HEALTH_STOP_SECONDS)
        if announce.is_alive():
            logger.warning("health watchers not told of the shutdown in time", extra={"event": "rpc.health_stop_slow"})

    def check(self) -> None:
        status = _SERVING if self._database_answers() else _NOT_SERVING
        if status != self._status and not self._stopped.is_set():
            self._status = status
            for service in ("", SERVICE_NAME):
                self.servicer.set(service, status)
            logger.info(
                "health changed",
                extra={
                    "event": "rpc.health_changed",
                    "status": health_pb2.HealthCheckResponse.ServingStatus.Name(status),
                },
            )

    def _database_answers(self) -> bool:
        try:
            self.store.ping()
        except DatabaseUnavailable:
            return False
        except Exception:  # whatever stops the database answering, the monitor must live on
            logger.warning("database check failed", extra={"event": "rpc.health_check_failed"}, exc_info=True)
            return False
        return True

    def _run(self) -> None:
        while True:
            self.check()
            if self._stopped.wait(self.interval):
                return


class RpcServer:
    """The grpc.Server with what must start and stop alongside it."""

    def __init__(
        self,
        server: grpc.Server,
        servicer: WorkerServicer,
        monitor: HealthMonitor,
        gate: CallGate,
        ledger: LeaseLedger,
    ):
        self.grpc_server = server
        self.servicer = servicer
        self.monitor = monitor
        self.gate = gate
        self.ledger = ledger

    def start(self) -> RpcServer:
        self.monitor.check()  # the first health answer is already the true one
        self.monitor.start()
        self.grpc_server.start()
        return self

    def stop(self, grace: float | None) -> None:
        """Drain, then stop, within `grace` seconds: health says NOT_SERVING, new leases are
        refused and long polls end at once; acks, nacks, extends and settles are served until
        the leases this server delivered are settled (or expired), then the server refuses new
        calls, lets those in flight finish, cancels what is left at the end of `grace` and
        drops the connections that carry no call (grpc core would otherwise wait the whole
        grace for a connection that never completes HTTP/2 setup). Closes the notifier."""
        deadline = time.monotonic() + (grace or 0.0)
        self.monitor.stop()
        self.gate.drain()
        self.servicer.stop()  # long polls end now; a settle may still publish (the notifier reconnects)
        outstanding = self.ledger.outstanding()
        if outstanding:
            logger.info("grpc server draining", extra={"event": "rpc.draining", "outstanding_leases": outstanding})
        settled = self.ledger.wait_settled(deadline)
        stopped = self.grpc_server.stop(max(0.0, deadline - time.monotonic()))
        idle = self.gate.wait_idle(deadline)
        self.grpc_server.stop(0)  # cancels what is left and drops idle or half-open connections now
        if not stopped.wait(FINAL_STOP_SECONDS):  # a send stuck in grpcio (a health watch) must not hold the exit
            logger.warning("grpc server stop did not complete", extra={"event": "rpc.stop_slow"})
        logger.info(
            "grpc server drained",
            extra={"event": "rpc.drained", "unsettled_leases": self.ledger.outstanding(), "clean": settled and idle},
        )

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self.grpc_server.wait_for_termination(timeout)


def create_server(
    settings: Settings,
    store: Store,
    notifier: Notifier,
    address: str,
    *,
    health_interval: float = HEALTH_CHECK_SECONDS,
    grpc_options: Sequence[tuple[str, Any]] = (),
) -> tuple[RpcServer, int]:
    """A server bound to `address` (not started yet) and the port it got."""
    servicer = WorkerServicer(settings, store, notifier)
    gate, ledger = CallGate(settings.grpc_threads, settings.grpc_health_watches), LeaseLedger()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.grpc_threads, thread_name_prefix="quorra-rpc"),
        # Outermost first. The gate admits by kind of call, after the key check.
        interceptors=[
            ObservingInterceptor(),
            ApiKeyInterceptor(build_authenticator(settings, store)[0], SERVICE_PERMISSIONS),
            gate,
            LedgerInterceptor(ledger),
        ],
        # The gate bounds the calls that hold threads; this only bounds the calls queued for
        # a thread (memory): short calls, and health watches, which pass through the pool briefly.
        maximum_concurrent_rpcs=settings.grpc_threads * QUEUED_CALLS_PER_THREAD + settings.grpc_health_watches,
        # so_reuseport=0: a second server on a taken port must fail, not share it.
        options=[("grpc.so_reuseport", 0), *grpc_options],
    )
    pb2_grpc.add_WorkerServiceServicer_to_server(servicer, server)
    health_servicer = HealthServicer()  # not grpcio's: see quorra.rpc.health
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(address)
    monitor = HealthMonitor(store, health_servicer, health_interval)
    return RpcServer(server, servicer, monitor, gate, ledger), port


def serve(settings: Settings) -> None:
    """`quorra grpc`: serve until SIGTERM or SIGINT, then stop gracefully and return (exit 0)."""
    tracing.setup("grpc")  # before the engine and the server are made, so that both are traced
    # A connection per call thread, so no call opens one of its own (issue #9).
    store = Store.from_url(
        settings.database_url,
        pool_size=settings.grpc_threads,
        application_name="quorra-grpc",
        durable_leases=settings.durable_leases,
    )
    try:
        store.ping()
        ensure_at_head(store.engine)
    except QuorraError as exc:
        store.close()
        sys.exit(f"quorra: {exc.message}")
    notifier = make_notifier(settings)
    try:
        server, port = create_server(settings, store, notifier, listen_address(settings.grpc_addr))
    except RuntimeError as exc:  # grpc: the port is taken or the address is not ours
        store.close()
        sys.exit(f"quorra: cannot listen on {settings.grpc_addr}: {exc}")
    shutdown = ShutdownSignal()
    server.start()
    logger.info(
        "grpc server started",
        extra={
            "event": "rpc.started",
            "port": port,
            "threads": settings.grpc_threads,
            "notifier": type(notifier).__name__,
        },
    )
    while not shutdown.wait(1.0):
        pass
    logger.info(
        "grpc server stopping", extra={"event": "rpc.stopping", "grace_seconds": settings.shutdown_grace_seconds}
    )
    server.stop(settings.shutdown_grace_seconds)
    store.close()
    logger.info("grpc server stopped", extra={"event": "rpc.stopped"})
