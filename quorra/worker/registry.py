"""Handlers by job type.

Two ways to declare one. On a worker, in a script::

    worker = Worker.from_env()

    @worker.handler("email_send")
    def send_email(job): ...

Or in a module loaded with ``quorra-worker --handlers myapp.jobs``::

    from quorra.worker import handler

    @handler("email_send")
    def send_email(job): ...

``handler`` only marks the function; ``HandlerRegistry.include_module`` finds the marked
functions of a module. No global registry: two workers in one process stay apart.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from quorra.errors import InvalidConfig

Handler = Callable[[Any], Any]
_MARK = "__quorra_job_types__"


def handler(job_type: str) -> Callable[[Handler], Handler]:
    """Mark a module-level function as the handler of `job_type` (may be stacked)."""

    def mark(function: Handler) -> Handler:
        setattr(function, _MARK, (*getattr(function, _MARK, ()), job_type))
        return function

    return mark


class HandlerRegistry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, job_type: str, function: Handler) -> None:
        current = self._handlers.get(job_type)
        if current is not None and current is not function:
            raise InvalidConfig(f"two handlers for job type {job_type!r}: {_name(current)} and {_name(function)}")
        self._handlers[job_type] = function

    def get(self, job_type: str) -> Handler | None:
        return self._handlers.get(job_type)

    @property
    def job_types(self) -> list[str]:
        return sorted(self._handlers)

    def __len__(self) -> int:
        return len(self._handlers)

    def include_module(self, module: ModuleType | str) -> int:
        """Register every function of `module` marked with @handler; return how many."""
        if isinstance(module, str):
            module = _import(module)
        found = [(job_type, value) for value in vars(module).values() for job_type in getattr(value, _MARK, ())]
        for job_type, function in found:
            self.register(job_type, function)
        return len(found)

    def include_modules(self, names: Iterable[str]) -> None:
        for name in names:
            if self.include_module(name) == 0:
                raise InvalidConfig(f"module {name!r} has no function marked with @quorra.worker.handler(...)")


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise InvalidConfig(f"cannot import handler module {name!r}: {exc}") from exc


def _name(function: Handler) -> str:
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', repr(function))}"
