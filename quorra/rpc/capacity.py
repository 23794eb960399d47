"""How the gRPC server shares its threads between kinds of call, so that no kind of call can
take what another needs: unauthenticated health watches once held every call slot, and
long polls must never leave acks waiting.

    settle calls     AckJob, NackJob, ExtendLease, SettleJobs, and Health/Check: short, never
                     limited here; the held calls leave them a reserve of threads
                     (a quarter of QUORRA_GRPC_THREADS, at least 2)
    health watches   Health/Watch: answered without a thread (grpc's non-blocking handler),
                     at most QUORRA_GRPC_HEALTH_WATCHES open at once
    held calls       everything else (LeaseJobs and SettleAndLease with their long polls,
                     reflection): at most
                     QUORRA_GRPC_THREADS minus the reserve at once

A call over its kind's limit is refused at once with RESOURCE_EXHAUSTED. While the server
drains at shutdown, new leases are refused with UNAVAILABLE and everything else is served.
The gate also counts the calls running on threads until their answers are sent, so the server
knows when none is left.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from quorra.rpc.interceptors import Behavior, is_non_blocking, wrap_handler
from quorra.rpc.servicer import SERVICE_NAME

LEASE_METHODS = frozenset(f"/{SERVICE_NAME}/{name}" for name in ("LeaseJobs", "SettleAndLease"))
SETTLE_METHODS = frozenset(f"/{SERVICE_NAME}/{name}" for name in ("AckJob", "NackJob", "ExtendLease", "SettleJobs"))
SHORT_METHODS = SETTLE_METHODS | {"/grpc.health.v1.Health/Check"}


def settle_reserve(threads: int) -> int:
    """Threads that held calls (long polls above all) can never take."""
    return max(2, threads // 4)


def held_call_limit(threads: int) -> int:
    return max(1, threads - settle_reserve(threads))


class Slots:
    """A counting limit that refuses instead of waiting."""

    def __init__(self, limit: int):
        self.limit = limit
        self.taken = 0
        self._lock = threading.Lock()

    def try_take(self) -> bool:
        with self._lock:
            if self.taken >= self.limit:
                return False
            self.taken += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.taken -= 1


class CallGate(grpc.ServerInterceptor):
    """Admits each call by its kind (see the module's docstring); goes after the API-key
    check, so a refused caller never takes a slot."""

    def __init__(self, threads: int, health_watches: int):
        self.held = Slots(held_call_limit(threads))
        self.watches = Slots(health_watches)
        self.draining = False
        self._running = 0
        self._idle = threading.Condition()

    def drain(self) -> None:
        """Shutdown has begun: refuse new leases from now on."""
        self.draining = True

    @property
    def running(self) -> int:
        """Calls running on a thread or still sending their answer (health watches hold none)."""
        return self._running

    def wait_idle(self, deadline: float) -> bool:
        """Block until every call has been answered, or until `deadline` (time.monotonic)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, max(0.0, deadline - time.monotonic()))

    def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = continuation(details)
        if handler is None:
            return None
        return wrap_handler(handler, lambda behavior, streaming: self._guarded(behavior, streaming, details.method))

    def _guarded(self, behavior: Behavior, streaming: bool, method: str) -> Behavior:
        if is_non_blocking(behavior):
            return self._watch(behavior)

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            with self._running_call(context), self._admitted(method, context):
                return behavior(request, context)

        def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            with self._running_call(context), self._admitted(method, context):
                yield from behavior(request, context)

        return stream if streaming else unary

    def _watch(self, behavior: Behavior) -> Behavior:
        """A health watch holds no thread, only its slot, until the stream ends."""

        def watch(request: Any, context: grpc.ServicerContext, send_response: Any) -> Any:
            if not self.watches.try_take():
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"too many health watches are open (at most {self.watches.limit}); use Check or retry later",
                )
            if not context.add_callback(self.watches.give_back):
                self.watches.give_back()  # the call had ended already
            return behavior(request, context, send_response)

        return watch

    @contextmanager
    def _running_call(self, context: grpc.ServicerContext) -> Iterator[None]:
        """Counts the call as running until grpc has sent its answer (callbacks run once the
        RPC has terminated), not just until the handler returns: a server stopping the moment
        it is idle must not cancel a reply still on its way out (an ack that landed, reported
        to the worker as UNAVAILABLE)."""
        with self._idle:
            self._running += 1
        try:
            yield
        finally:
            if not context.add_callback(self._call_ended):
                self._call_ended()  # the call had terminated already (cancelled)

    def _call_ended(self) -> None:
        with self._idle:
            self._running -= 1
            self._idle.notify_all()

    @contextmanager
    def _admitted(self, method: str, context: grpc.ServicerContext) -> Iterator[None]:
        if method in SHORT_METHODS:
            yield
            return
        if self.draining and method in LEASE_METHODS:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; lease from another server")
        if not self.held.try_take():
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the server is busy ({self.held.limit} long calls at once); retry shortly",
            )
        try:
            yield
        finally:
            self.held.give_back()
