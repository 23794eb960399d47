"""SIGTERM and SIGINT as a flag that a process's main thread polls.

A Python signal handler runs in the main thread between two bytecodes, possibly while that
thread holds the lock inside a ``threading.Event`` it is waiting on; calling ``Event.set()``
from the handler would then deadlock. So the handler only assigns an attribute."""

from __future__ import annotations

import signal
import time

POLL_SECONDS = 0.1


class ShutdownSignal:
    """Installs handlers for `signals` (main thread only) and remembers the first received."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)):
        self.received: int | None = None
        for signum in signals:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        if self.received is None:
            self.received = signum

    def wait(self, timeout: float) -> bool:
        """Sleep until a signal arrives or `timeout` passes; True once a signal arrived."""
        deadline = time.monotonic() + timeout
        while self.received is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(POLL_SECONDS, remaining))
        return True
