"""Async handlers: one event loop, in a thread of its own, runs every coroutine handler of
a worker.

A job thread that gets a coroutine from its handler hands it to the loop
(`asyncio.run_coroutine_threadsafe`) and waits for its result, so an async job holds its
slot, its lease and its heartbeats exactly as a sync one does. One loop for all jobs, not
one per job: async clients (an aiohttp session, an asyncpg pool) are bound to the loop
they were made on, so handlers can share them, and no loop is built per job. The price: a
coroutine that blocks (time.sleep, a sync driver) stalls every async job of the worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import threading
from collections.abc import Awaitable
from typing import Any

logger = logging.getLogger(__name__)

CLOSE_SECONDS = 2.0  # how long cancelled coroutines get to unwind at close


class TimedOut(Exception):
    """A job's handler ran past its timeout_seconds."""


class CoroutineRunner:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._running: set[concurrent.futures.Future] = set()
        self._lock = threading.Lock()
        self._closed = False

    def run(self, awaitable: Awaitable[Any], timeout: float | None = None) -> Any:
        """Await `awaitable` on the loop; return its value or raise its exception
        (concurrent.futures.CancelledError once `cancel_all` or `close` cancelled it).
        Past `timeout` seconds the task is cancelled (CancelledError raised inside it) and
        TimedOut raised here."""
        future = self._submit(awaitable)
        try:
            concurrent.futures.wait([future], timeout)
            if not future.done():
                future.cancel()
                raise TimedOut()
            return future.result()
        finally:
            with self._lock:
                self._running.discard(future)

    def cancel_all(self) -> None:
        with self._lock:
            running = list(self._running)
        for future in running:
            future.cancel()  # cancels the task on the loop, which raises CancelledError inside it

    def close(self) -> None:
        """Cancel what still runs, stop the loop and wait (bounded) for its thread."""
        with self._lock:
            self._closed = True
            loop, thread = self._loop, self._thread
        self.cancel_all()
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(CLOSE_SECONDS + 1)

    def _submit(self, awaitable: Awaitable[Any]) -> concurrent.futures.Future:
        with self._lock:
            if self._closed:
                _discard(awaitable)
                raise concurrent.futures.CancelledError("the worker has stopped")
            future = asyncio.run_coroutine_threadsafe(
                _await(awaitable, contextvars.copy_context()), self._started_loop()
            )
            self._running.add(future)
            return future

    def _started_loop(self) -> asyncio.AbstractEventLoop:
        """The loop, started on first use: a worker without async handlers has no loop."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._serve, name="quorra-asyncio", daemon=True)
            self._thread.start()
        return self._loop

    def _serve(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            loop.run_until_complete(_cancel_remaining())
            loop.run_until_complete(loop.shutdown_asyncgens())
        except Exception:  # the loop ends with the worker either way
            logger.exception("event loop ended badly", extra={"event": "worker.loop_failed"})
        finally:
            loop.close()


async def _await(awaitable: Awaitable[Any], context: contextvars.Context) -> Any:
    """Await it with the job thread's context variables (the handler's span, when tracing
    is on): a task starts with the loop thread's own."""
    for variable, value in context.items():
        variable.set(value)
    return await awaitable


async def _cancel_remaining() -> None:
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=CLOSE_SECONDS)


def _discard(awaitable: Awaitable[Any]) -> None:
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()  # a coroutine that will never run: no "never awaited" warning
