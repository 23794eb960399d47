"""The standard health service (grpc.health.v1): Check, and Watch streams that hold no
thread while they are open.

Why not grpcio's own `grpc_health.v1.health.HealthServicer`: it holds its lock while it
sends a status to a watcher, and the callback that forgets a watcher whose stream ended
takes that same lock. grpcio runs such callbacks on the server's one polling thread, which
is also the thread that reports a send complete. So a watch that ends while another
watcher's status is on its way deadlocks the whole server: the sender waits for the poller,
the poller for the lock, and no call is served again (seen as a cancelled watch whose slot
in quorra.rpc.capacity never came back, and a shutdown that hung).

Here the registry lock is never held across a send, so the polling thread can always take
it; sends are kept in order by a second lock, which the polling thread never takes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SendResponse = Callable[[Any], None]
_Response = health_pb2.HealthCheckResponse


class HealthServicer(health_pb2_grpc.HealthServicer):
    """Statuses by service name ("" is the server as a whole, SERVING from the start)."""

    def __init__(self) -> None:
        self._statuses: dict[str, int] = {"": _Response.SERVING}
        self._watchers: dict[str, set[SendResponse]] = {}
        self._registry = threading.Lock()  # statuses and watchers; never held while sending
        self._sending = threading.Lock()  # one status change sent at a time, in order
        self._shutting_down = False

    def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext) -> Any:
        with self._registry:
            status = self._statuses.get(request.service)
        if status is None:
            context.set_code(grpc.StatusCode.NOT_FOUND)
            return _Response()
        return _Response(status=status)

    def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext, send_response: SendResponse
    ) -> None:
        """The current status at once, then each change, until the caller goes away. The
        first answer is sent under `_sending`, so a change made meanwhile follows it."""
        service = request.service
        with self._sending:
            with self._registry:
                status = self._statuses.get(service, _Response.SERVICE_UNKNOWN)
                self._watchers.setdefault(service, set()).add(send_response)
            send_response(_Response(status=status))
        if not context.add_callback(lambda: self._forget(service, send_response)):
            self._forget(service, send_response)  # the call had ended already

    # grpcio calls it with `send_response` and frees the thread once it returns
    Watch.experimental_non_blocking = True  # type: ignore[attr-defined]

    def set(self, service: str, status: int) -> None:
        """Set a service's status and tell its watchers (ignored once shutting down)."""
        with self._sending:
            with self._registry:
                if self._shutting_down:
                    return
                self._statuses[service] = status
                watchers = list(self._watchers.get(service, ()))
            _send_each(watchers, _Response(status=status))

    def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING for good, told to every watcher."""
        with self._sending:
            with self._registry:
                if self._shutting_down:
                    return
                self._shutting_down = True
                self._statuses = dict.fromkeys(self._statuses, _Response.NOT_SERVING)
                watchers = [send for sends in self._watchers.values() for send in sends]
            _send_each(watchers, _Response(status=_Response.NOT_SERVING))

    def _forget(self, service: str, send_response: SendResponse) -> None:
        """Runs on grpcio's polling thread when a watch ends: must never wait for a send."""
        with self._registry:
            watchers = self._watchers.get(service, set())
            watchers.discard(send_response)
            if not watchers:
                self._watchers.pop(service, None)


def _send_each(watchers: list[SendResponse], response: Any) -> None:
    """grpcio's send returns once the message is out, or at once when the watch has ended."""
    for send in watchers:
        send(response)
