"""Process-wide logging: JSON lines (default) or text for humans. Entry points call
``configure_logging`` once; library code only uses ``logging.getLogger(__name__)``.

Every record carries the process ``role`` (web, grpc, scheduler, worker, cli) and, where
one is bound, the ``request_id`` of the HTTP request or RPC being served; and, while a span is
active (tracing on), its ``trace_id`` and ``span_id``."""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime

from pythonjsonlogger.json import JsonFormatter

from quorra.config import Settings

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
# While tracing is on (quorra.tracing): the trace and span ids of the span active in this
# thread, or None outside any span. None while tracing is off: no lookup per line.
trace_ids: Callable[[], tuple[str, str] | None] | None = None

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "role", "request_id", "taskName"}


class _Context(logging.Filter):
    def __init__(self, role: str):
        super().__init__()
        self.role = role

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = self.role
        bound = request_id.get()
        if bound is not None and not hasattr(record, "request_id"):
            record.request_id = bound
        if trace_ids is not None and not hasattr(record, "trace_id"):
            ids = trace_ids()
            if ids is not None:
                record.trace_id, record.span_id = ids
        return True


class TextFormatter(logging.Formatter):
    """`time level [role] message key=value ...` for a person at a terminal."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)-7s [%(role)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
        if getattr(record, "request_id", None):
            extras["request_id"] = record.request_id
        return line + "".join(f" {k}={v}" for k, v in extras.items())


class _JsonFormatter(JsonFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """ISO 8601 in UTC to the millisecond, as the API writes times: lines of several
        processes about one job can be put in order."""
        moment = datetime.fromtimestamp(record.created, UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_formatter() -> logging.Formatter:
    return _JsonFormatter(
        "%(asctime)s %(levelname)s %(role)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        json_ensure_ascii=False,
    )


def configure_logging(settings: Settings, role: str) -> None:
    """Send every logger's records to stderr in the configured format and level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter() if settings.log_format == "text" else json_formatter())
    handler.addFilter(_Context(role))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for noisy in ("alembic", "urllib3", "werkzeug"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    logging.captureWarnings(True)  # a library's warning is a log line too, not raw stderr text
