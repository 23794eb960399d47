"""OpenTelemetry tracing from submit to ack (README, "Tracing"), off unless OpenTelemetry's
own environment variables ask for it (``quorra.config.tracing_wanted``).

Nothing here imports OpenTelemetry. While tracing is off ``current`` is None, and that is
all the hot paths look at: one None check per request, lease batch or job. ``setup(role)``,
called once by each process before it opens its database or gRPC channel, switches it on:
it imports ``quorra.tracing.otel`` (the ``quorra[otel]`` extra), which configures the SDK from
the environment, turns on the official Flask, gRPC and SQLAlchemy instrumentations, and
makes ``current`` the ``Tracing`` whose spans the web, the gRPC server and the worker open.

The trace context a job carries (``quorra.jobs.TraceContext``) is stored whether or not
tracing is on here: a worker that traces relates its handler to a submit made by a web
process that does not.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import TYPE_CHECKING

from quorra.config import tracing_wanted

if TYPE_CHECKING:
    from quorra.tracing.otel import Tracing

logger = logging.getLogger(__name__)

current: Tracing | None = None  # set by setup() when tracing is on in this process


def setup(role: str) -> Tracing | None:
    """Switch tracing on for this process (`role`: web, grpc or worker) if the environment
    asks for it; once per process. The SDK reads os.environ itself, so this does too."""
    global current
    if current is not None or not tracing_wanted(os.environ):
        return current
    try:
        from quorra.tracing import otel
    except ImportError as exc:
        logger.warning(
            "OTEL_* variables ask for traces, but OpenTelemetry is not installed: pip install 'quorra[otel]'",
            extra={"event": "tracing.unavailable", "error": str(exc)},
        )
        return None
    try:
        current = otel.configure(role, os.environ)
    except RuntimeError as exc:  # the SDK's own refusal, e.g. an exporter that is not installed
        logger.error(
            "tracing not started: the OTEL_* variables ask for what cannot be done",
            extra={"event": "tracing.failed", "error": str(exc)},
        )
        return None
    logger.info("tracing on", extra={"event": "tracing.started"})
    return current


def continues_submit_trace(attempt: int, created_at: datetime | None, run_at: datetime | None) -> bool:
    """Whether an attempt runs inside its submit's trace (its spans children of the submit)
    or in a trace of its own that links to it. Inside: the first attempt of a job that was
    due when it was submitted, however long it then waited in line (a backlog is part of
    the story of that request). Its own: a delayed job or a retry, which may run hours
    later, long after the request's trace was closed and sampled; the link keeps the way
    back to the submit (README, "Tracing": child or link)."""
    return attempt <= 1 and (created_at is None or run_at is None or run_at <= created_at)
