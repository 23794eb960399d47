"""The gRPC server (`quorra grpc`): the worker service, the standard health service and
server reflection, on a threaded ``grpc.server``.

    create_server(settings, store, notifier, address) -> (server, port)   tests: "127.0.0.1:0"
    serve(settings)                                                        the process

Threads: each call holds one for its whole length, and a long poll holds it for up to
QUORRA_LEASE_WAIT_MAX. The pool has QUORRA_GRPC_THREADS; long polls may take all but a
quarter of them (the rest stay free for acks and heartbeats), and calls beyond the pool
are refused with RESOURCE_EXHAUSTED instead of queueing behind the polls.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Sequence
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from quorra.config import Settings, listen_address
from quorra.errors import DatabaseUnavailable, QuorraError
from quorra.migrate import ensure_at_head
from quorra.notify import Notifier, make_notifier
from quorra.rpc import quorra_pb2_grpc as pb2_grpc
from quorra.rpc.interceptors import ApiKeyInterceptor, ObservingInterceptor
from quorra.rpc.servicer import SERVICE_NAME, WorkerServicer
from quorra.shutdown import ShutdownSignal
from quorra.store import Store

logger = logging.getLogger(__name__)

HEALTH_CHECK_SECONDS = 2.0
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthMonitor:
    """Reports NOT_SERVING on grpc.health.v1 while the database does not answer."""

    def __init__(self, store: Store, servicer: health.HealthServicer, interval: float = HEALTH_CHECK_SECONDS):
        self.store = store
        self.servicer = servicer
        self.interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="quorra-rpc-health", daemon=True)
        self._status: int | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self.servicer.enter_graceful_shutdown()

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

    def __init__(self, server: grpc.Server, servicer: WorkerServicer, monitor: HealthMonitor):
        self.grpc_server = server
        self.servicer = servicer
        self.monitor = monitor

    def start(self) -> RpcServer:
        self.monitor.check()  # the first health answer is already the true one
        self.monitor.start()
        self.grpc_server.start()
        return self

    def stop(self, grace: float | None) -> None:
        """Refuse new calls, end long polls at once, let other calls finish within `grace`
        seconds, then cancel what is left. Closes the notifier."""
        self.monitor.stop()
        stopped = self.grpc_server.stop(grace)
        self.servicer.stop()
        stopped.wait()

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
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.grpc_threads, thread_name_prefix="quorra-rpc"),
        interceptors=[ObservingInterceptor(), ApiKeyInterceptor(settings.accepts_api_key)],
        maximum_concurrent_rpcs=settings.grpc_threads,
        # so_reuseport=0: a second server on a taken port must fail, not share it.
        options=[("grpc.so_reuseport", 0), *grpc_options],
    )
    pb2_grpc.add_WorkerServiceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(address)
    return RpcServer(server, servicer, HealthMonitor(store, health_servicer, health_interval)), port


def serve(settings: Settings) -> None:
    """`quorra grpc`: serve until SIGTERM or SIGINT, then stop gracefully and return (exit 0)."""
    # A connection per call thread, so no call opens one of its own (issue #9).
    store = Store.from_url(settings.database_url, pool_size=settings.grpc_threads, application_name="quorra-grpc")
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
