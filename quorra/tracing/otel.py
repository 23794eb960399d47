"""Everything that imports OpenTelemetry (the ``quorra[otel]`` extra), loaded only once
tracing is on (``quorra.tracing.setup``).

The SDK is configured by its own code from its own variables, as ``opentelemetry-instrument``
would: exporters (OTEL_TRACES_EXPORTER; with only an OTLP endpoint given, OTLP), protocol,
endpoint, headers, sampler, resource and service name. Two defaults differ from the Python
SDK's: OTLP goes over HTTP/protobuf (the OpenTelemetry specification's default, and the
exporter the extra installs), and the service is named `quorra-<role>` unless
OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) names it.

Spans (attributes after the messaging semantic conventions where they fit; `quorra.job.*`
where they have none):

    submit {queue}   web, PRODUCER, child of the request's span (Flask's) or of its traceparent
    lease {queue}    gRPC server, one per job leased: child of the submit, or the first span of
                     the attempt's own trace (quorra.tracing.continues_submit_trace); links to the submit
    process {queue}  worker, CONSUMER, the handler: child of the lease (else of the submit, or a
                     trace of its own); links to the submit
    settle {queue}   worker, CLIENT, child of the process span: from the handler's return to the
                     server's answer
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.trace import Link, Span, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import quorra
from quorra import logs
from quorra.jobs import Job, JobSpec, TraceContext
from quorra.tracing import continues_submit_trace

SYSTEM = "quorra"
# The names `opentelemetry-instrument` gives these instrumentations; each can be turned off
# with OTEL_PYTHON_DISABLED_INSTRUMENTATIONS, as there.
INSTRUMENTATIONS = {
    "web": ("flask", "sqlalchemy"),
    "grpc": ("grpc_server", "sqlalchemy"),
    "worker": ("grpc_client",),
}
# Probes and scrapes make no spans unless OTEL_PYTHON_FLASK_EXCLUDED_URLS says otherwise.
DEFAULT_EXCLUDED_URLS = "healthz,readyz,metrics"
_W3C = TraceContextTextMapPropagator()


def configure(role: str, environ: Mapping[str, str]) -> Tracing:
    """Configure the SDK for this process from the environment, turn on the instrumentations
    of `role`, and return the Tracing its spans come from."""
    if not (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")):
        # The SDK reads the protocol from the environment only (for OTEL_TRACES_EXPORTER=otlp;
        # unset, it would pick gRPC, which the extra does not install).
        os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
    _OTelSDKConfigurator().configure(
        trace_exporter_names=[] if environ.get("OTEL_TRACES_EXPORTER") else ["otlp_proto_http"],
        resource_attributes=_default_resource(role, environ),
    )
    tracing = Tracing(trace.get_tracer_provider(), role, _disabled(environ))
    tracing.instrument()
    logs.trace_ids = current_ids
    return tracing


def _default_resource(role: str, environ: Mapping[str, str]) -> dict[str, str]:
    named = environ.get("OTEL_SERVICE_NAME") or "service.name=" in environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    return {} if named else {"service.name": f"quorra-{role}"}


def _disabled(environ: Mapping[str, str]) -> frozenset[str]:
    return frozenset(name.strip() for name in environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(","))


def current_ids() -> tuple[str, str] | None:
    """The trace and span ids of the span active in this thread, for log lines."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def context_of(span: Span) -> TraceContext:
    """A span's context as a job carries it (W3C traceparent and tracestate)."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=trace.set_span_in_context(span))
    return TraceContext(carrier["traceparent"], carrier.get("tracestate"))


def _remote(traceparent: str, tracestate: str | None) -> Context:
    carrier = {"traceparent": traceparent, **({"tracestate": tracestate} if tracestate else {})}
    return _W3C.extract(carrier)


def _link_to(traceparent: str, tracestate: str | None) -> list[Link]:
    context = trace.get_current_span(_remote(traceparent, tracestate)).get_span_context()
    return [Link(context)] if context.is_valid else []


def _job_attributes(operation: str, kind: str, queue: str, job_id: str, job_type: str) -> dict[str, Any]:
    return {
        "messaging.system": SYSTEM,
        "messaging.operation.name": operation,
        "messaging.operation.type": kind,
        "messaging.destination.name": queue,
        "messaging.message.id": job_id,
        "quorra.job.type": job_type,
    }


class Tracing:
    """The spans Quorra opens itself, from one tracer provider."""

    def __init__(self, provider: trace.TracerProvider, role: str, disabled: frozenset[str] = frozenset()):
        self.provider = provider
        self.role = role
        self.disabled = disabled
        self.tracer = provider.get_tracer("quorra", quorra.__version__)

    # -- the official instrumentations ----------------------------------------------------------

    def instrument(self) -> None:
        """The process-wide ones (gRPC, SQLAlchemy), before any channel, server or engine is
        made; Flask's is per app (instrument_app)."""
        wanted = [name for name in INSTRUMENTATIONS[self.role] if name not in self.disabled]
        if "sqlalchemy" in wanted:  # engines made from now on (quorra.db calls sqlalchemy.create_engine)
            from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

            # It declares SQLAlchemy < 2.1; its event listeners work on 2.1 (tests/observability).
            SQLAlchemyInstrumentor().instrument(tracer_provider=self.provider, skip_dep_check=True)
        if "grpc_server" in wanted:
            from opentelemetry.instrumentation.grpc import GrpcInstrumentorServer, filters

            plumbing = filters.any_of(filters.health_check(), filters.service_prefix("grpc.reflection"))
            GrpcInstrumentorServer(filter_=filters.negate(plumbing)).instrument(tracer_provider=self.provider)
        if "grpc_client" in wanted:
            from opentelemetry.instrumentation.grpc import GrpcInstrumentorClient

            GrpcInstrumentorClient().instrument(tracer_provider=self.provider)

    def instrument_app(self, app: Any) -> None:
        if "flask" in INSTRUMENTATIONS[self.role] and "flask" not in self.disabled:
            from opentelemetry.instrumentation.flask import FlaskInstrumentor

            excluded = os.environ.get("OTEL_PYTHON_FLASK_EXCLUDED_URLS", DEFAULT_EXCLUDED_URLS)
            FlaskInstrumentor().instrument_app(app, excluded_urls=excluded, tracer_provider=self.provider)

    # -- web: the submit ---------------------------------------------------------------------------

    @contextmanager
    def submitting(
        self, specs: Sequence[JobSpec], incoming: TraceContext | None
    ) -> Iterator[tuple[Span, TraceContext]]:
        """The submit span, and the context its jobs keep. A child of the request's span
        (Flask's instrumentation); without one, of the request's own traceparent."""
        parent = None
        if incoming is not None and not trace.get_current_span().get_span_context().is_valid:
            parent = _remote(*incoming)
        queues = sorted({spec.queue for spec in specs})
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.name": "submit",
            "messaging.operation.type": "send",
        }
        if len(queues) == 1:
            attributes["messaging.destination.name"] = queues[0]
        if len(specs) > 1:
            attributes["messaging.batch.message_count"] = len(specs)
        name = f"submit {queues[0]}" if len(queues) == 1 else "submit"
        with self.tracer.start_as_current_span(
            name, context=parent, kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            yield span, context_of(span)

    @staticmethod
    def submitted(span: Span, jobs: Sequence[Job]) -> None:
        if len(jobs) == 1:
            span.set_attributes({"messaging.message.id": jobs[0].id, "quorra.job.type": jobs[0].type})

    # -- gRPC server: the lease --------------------------------------------------------------------

    def leased(self, job: Job, started_ns: int, message: Any) -> None:
        """One job's lease span, from the lease statement to the job's message: in the
        submit's trace, or the first span of the attempt's own trace (continues_submit_trace),
        linked to the submit either way, and to the RPC that leased it. The handler's span
        becomes its child (the message's parent_traceparent)."""
        inside = continues_submit_trace(job.attempts, job.created_at, job.run_at)
        links = _link_to(job.traceparent, job.tracestate)
        rpc = trace.get_current_span().get_span_context()
        if rpc.is_valid:
            links.append(Link(rpc))
        attributes = _job_attributes("lease", "receive", job.queue, job.id, job.type)
        attributes["quorra.job.attempt"] = job.attempts
        if job.leased_by:
            attributes["messaging.client.id"] = job.leased_by
        span = self.tracer.start_span(
            f"lease {job.queue}",
            context=_remote(job.traceparent, job.tracestate) if inside else Context(),
            kind=SpanKind.INTERNAL,
            links=links,
            attributes=attributes,
            start_time=started_ns,
        )
        span.end()
        message.parent_traceparent = context_of(span).traceparent

    # -- worker: the handler and its settle -----------------------------------------------------------

    @contextmanager
    def processing(self, job: Any, worker_id: str) -> Iterator[Span]:
        """The handler's span (`job`: a quorra.worker.LeasedJob): a child of the context the
        server sent as its parent, else the first span of a trace of its own; linked to the
        submit. Log lines written inside it carry its trace_id and span_id."""
        parent = _remote(job.parent_traceparent, job.tracestate) if job.parent_traceparent else Context()
        links = _link_to(job.traceparent, job.tracestate) if job.traceparent else []
        attributes = _job_attributes("process", "process", job.queue, job.id, job.type)
        attributes |= {"quorra.job.attempt": job.attempt, "messaging.client.id": worker_id}
        with self.tracer.start_as_current_span(
            f"process {job.queue}",
            context=parent,
            kind=SpanKind.CONSUMER,
            links=links,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span

    @staticmethod
    def processed(span: Span, succeeded: bool, error: str) -> None:
        if not succeeded:
            span.set_status(StatusCode.ERROR, error.partition("\n")[0][:500])

    def settling(self, job: Any, worker_id: str, process: Span, succeeded: bool) -> Callable[[str, str], None]:
        """Start the settle span of a handled job (a child of its handler's span); the
        function returned ends it once the server answered: with the job's new status, or
        with why the settle failed."""
        attributes = _job_attributes("ack" if succeeded else "nack", "settle", job.queue, job.id, job.type)
        attributes |= {"quorra.job.attempt": job.attempt, "messaging.client.id": worker_id}
        span = self.tracer.start_span(
            f"settle {job.queue}",
            context=trace.set_span_in_context(process),
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )

        def settled(status: str = "", error: str = "") -> None:
            if status:
                span.set_attribute("quorra.job.status", status)
            if error:
                span.set_status(StatusCode.ERROR, error[:500])
            span.end(time.time_ns())

        return settled
