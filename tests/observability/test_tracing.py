"""Tracing from submit to ack (issue 13, section 3) inside one process: the REST API (Flask's
test client), a real gRPC server and a real worker on both backends, their spans caught by
the SDK's in-memory exporter. The trace context a job keeps is checked with tracing off too.
Across real processes: test_tracing_end_to_end.py."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import quorra.tracing
from quorra import logs
from quorra.api import create_app
from quorra.client import calls
from quorra.config import tracing_wanted
from quorra.jobs import TraceContext
from quorra.notify import make_notifier
from quorra.tracing import continues_submit_trace
from quorra.tracing.otel import Tracing, current_ids
from quorra.worker import HandlerRegistry, Worker
from tests.conftest import TEST_API_KEY
from tests.rpc.support import rpc_settings, running_server
from tests.worker.conftest import worker_settings
from tests.worker.support import wait_until

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN_ID}-01"
AUTH = {"X-API-Key": TEST_API_KEY}


@pytest.fixture
def exporter(monkeypatch):
    """Tracing on in this process, every span ending in the returned exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(quorra.tracing, "current", Tracing(provider, "web"))
    monkeypatch.setattr(logs, "trace_ids", current_ids)
    yield exporter
    provider.shutdown()


@pytest.fixture
def stack(settings, store):
    """The REST API's test client, a gRPC server, and a function that starts a worker of
    queue `work` whose `job` handler logs a line and fails when the payload says so."""
    server_settings = rpc_settings(settings)
    notifier = make_notifier(server_settings)
    app = create_app(server_settings, store=store, notifier=notifier)
    workers: list[Worker] = []
    with running_server(server_settings, store, notifier) as (_, port):

        def start_worker() -> Worker:
            registry = HandlerRegistry()
            registry.register("job", handle)
            registry.register("async_job", handle_async)
            worker = Worker(worker_settings(port), registry)
            workers.append(worker.start())
            return worker

        yield app.test_client(), start_worker
        for worker in workers:
            worker.stop(grace=5)
    notifier.close()


def handle(job):
    logging.getLogger("tests.handler").info("handling", extra={"event": "test.handling", "job_id": job.id})
    if job.payload.get("fail"):
        raise RuntimeError("asked to fail")
    if quorra.tracing.current is not None:
        with quorra.tracing.current.tracer.start_as_current_span("inner"):
            pass
    return {"ok": True}


async def handle_async(job):
    return handle(job)


def submit(client, headers=None, **job) -> str:
    body = {"type": "job", "queue": "work", "payload": {}} | job
    response = client.post("/v1/jobs", json=body, headers=AUTH | (headers or {}))
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


def named(exporter: InMemorySpanExporter, prefix: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name.startswith(prefix)]


def only(exporter: InMemorySpanExporter, prefix: str) -> ReadableSpan:
    found = wait_until(lambda: named(exporter, prefix), timeout=30, what=f"a {prefix!r} span")
    assert len(found) == 1, found
    return found[0]


# -- the context a job keeps (tracing off here) ----------------------------------------------------


def test_submit_keeps_the_traceparent_and_tracestate_headers_with_the_job(settings, store):
    client = create_app(settings, store=store, notifier=make_notifier(settings)).test_client()
    job_id = submit(client, {"traceparent": TRACEPARENT, "tracestate": "vendor=abc"})
    job = store.get_job(job_id)
    assert (job.traceparent, job.tracestate) == (TRACEPARENT, "vendor=abc")


def test_every_job_of_a_batch_keeps_the_trace_context(settings, store):
    client = create_app(settings, store=store, notifier=make_notifier(settings)).test_client()
    body = {"jobs": [{"type": "job", "payload": {"n": n}} for n in range(3)] + [{"type": "job", "payload": {}}]}
    body["jobs"][3]["idempotency_key"] = "keyed"  # the batch's slower path keeps it too
    response = client.post("/v1/jobs/batch", json=body, headers=AUTH | {"traceparent": TRACEPARENT})
    assert response.status_code == 201, response.get_json()
    ids = [item["id"] for item in response.get_json()["jobs"]]
    assert [store.get_job(job_id).traceparent for job_id in ids] == [TRACEPARENT] * 4


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0",  # too short
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # uppercase
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # forbidden version
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",  # version 00 with more
        "not a traceparent",
    ],
)
def test_an_invalid_traceparent_is_ignored_as_the_w3c_rules_ask(settings, store, traceparent):
    client = create_app(settings, store=store, notifier=make_notifier(settings)).test_client()
    job = store.get_job(submit(client, {"traceparent": traceparent, "tracestate": "vendor=abc"}))
    assert (job.traceparent, job.tracestate) == (None, None)


def test_a_later_traceparent_version_is_read_as_version_00():
    later = f"01-{TRACE_ID}-{CLIENT_SPAN_ID}-01-what-comes-next"
    assert TraceContext.from_headers(later, "a=1" * 200) == TraceContext(TRACEPARENT, None)  # tracestate too long


def test_a_job_without_trace_context_runs_as_before(stack, store):
    client, start_worker = stack
    job_id = submit(client)
    start_worker()
    wait_until(lambda: store.get_job(job_id).status.value == "succeeded", timeout=30, what="job succeeded")
    assert store.get_job(job_id).traceparent is None


# -- spans, tracing on -------------------------------------------------------------------------------


def test_one_trace_from_the_submit_to_the_settle(exporter, stack, store):
    client, start_worker = stack
    job_id = submit(client, {"traceparent": TRACEPARENT})
    start_worker()

    submit_span = only(exporter, "submit")
    lease, process, settle = only(exporter, "lease"), only(exporter, "process"), only(exporter, "settle")
    assert {hex_ids(span)[0] for span in (submit_span, lease, process, settle)} == {TRACE_ID}
    [request] = [span for span in exporter.get_finished_spans() if span.context.span_id == submit_span.parent.span_id]
    assert (request.name, request.kind) == ("POST /v1/jobs", SpanKind.SERVER)  # Flask's instrumentation
    assert format(request.parent.span_id, "016x") == CLIENT_SPAN_ID
    assert (lease.parent.span_id, process.parent.span_id, settle.parent.span_id) == (
        submit_span.context.span_id,
        lease.context.span_id,
        process.context.span_id,
    )
    assert (submit_span.kind, process.kind, settle.kind) == (SpanKind.PRODUCER, SpanKind.CONSUMER, SpanKind.CLIENT)
    assert submit_span.name == lease.name.replace("lease", "submit") == "submit work"
    for span, operation in ((lease, "receive"), (process, "process"), (settle, "settle")):
        assert span.attributes["messaging.operation.type"] == operation
        assert span.attributes["messaging.message.id"] == job_id
        assert span.attributes["messaging.destination.name"] == "work"
        assert span.attributes["quorra.job.type"] == "job"
        assert span.attributes["quorra.job.attempt"] == 1
        assert span.attributes["messaging.client.id"] == "test-worker"
    assert submit_span.attributes["messaging.message.id"] == job_id
    assert settle.attributes["messaging.operation.name"] == "ack"
    assert settle.attributes["quorra.job.status"] == "succeeded"
    # the consumer links to the creation context (messaging conventions), here also its trace
    assert [link.context.span_id for link in process.links] == [submit_span.context.span_id]
    # the job keeps the submit span's context, not the client's
    assert store.get_job(job_id).traceparent == f"00-{TRACE_ID}-{hex_ids(submit_span)[1]}-01"


def test_a_submit_without_traceparent_starts_the_trace(exporter, stack):
    client, start_worker = stack
    submit(client)
    start_worker()
    submit_span, request = only(exporter, "submit"), only(exporter, "POST /v1/jobs")
    assert request.parent is None and submit_span.parent.span_id == request.context.span_id
    assert only(exporter, "process").context.trace_id == submit_span.context.trace_id


def test_a_delayed_job_runs_in_a_trace_of_its_own_linked_to_its_submit(exporter, stack, store):
    client, start_worker = stack
    job_id = submit(client, {"traceparent": TRACEPARENT}, delay_seconds=1)
    start_worker()
    submit_span, lease, process = only(exporter, "submit"), only(exporter, "lease"), only(exporter, "process")
    assert lease.parent is None and lease.context.trace_id != submit_span.context.trace_id
    assert submit_span.context.span_id in [link.context.span_id for link in lease.links]
    assert process.parent.span_id == lease.context.span_id
    assert [link.context.span_id for link in process.links] == [submit_span.context.span_id]
    wait_until(lambda: store.get_job(job_id).status.value == "succeeded", timeout=30, what="job succeeded")


@pytest.mark.parametrize(
    "job",
    [
        {"type": "job"},
        {"type": "job", "timeout_seconds": 30},  # the handler runs on a thread of its own
        {"type": "async_job"},  # on the worker's event loop
        {"type": "async_job", "timeout_seconds": 30},
    ],
    ids=["sync", "sync-timeout", "async", "async-timeout"],
)
def test_spans_a_handler_opens_are_children_of_its_process_span(exporter, stack, job):
    client, start_worker = stack
    submit(client, **job)
    start_worker()
    process, inner = only(exporter, "process"), only(exporter, "inner")
    assert inner.parent.span_id == process.context.span_id


def test_a_failed_handler_marks_its_span_and_the_nack(exporter, stack):
    client, start_worker = stack
    submit(client, payload={"fail": True}, max_retries=0)
    start_worker()
    process, settle = only(exporter, "process"), only(exporter, "settle")
    assert process.status.status_code is StatusCode.ERROR
    assert "asked to fail" in process.status.description
    assert settle.attributes["messaging.operation.name"] == "nack"
    assert settle.attributes["quorra.job.status"] == "dead"


def test_without_a_tracing_server_the_handler_is_a_child_of_the_submit(exporter, stack, monkeypatch):
    """A web and a worker that trace, a gRPC server that does not: the job's own context
    still reaches the handler."""
    client, start_worker = stack
    submit(client, {"traceparent": TRACEPARENT})
    submit_span = only(exporter, "submit")
    original = quorra.tracing.current
    monkeypatch.setattr("quorra.rpc.servicer.tracing", _Untraced())  # the server module sees tracing off
    start_worker()
    process = only(exporter, "process")
    assert not named(exporter, "lease")
    assert process.parent.span_id == submit_span.context.span_id
    assert quorra.tracing.current is original


class _Untraced:
    """quorra.tracing as a process without tracing sees it."""

    current = None
    continues_submit_trace = staticmethod(quorra.tracing.continues_submit_trace)


def test_log_lines_inside_a_span_carry_its_trace_and_span_ids(exporter, stack, monkeypatch):
    client, start_worker = stack
    submit(client, {"traceparent": TRACEPARENT})
    handler = logging.StreamHandler()
    handler.addFilter(logs._Context("worker"))
    records: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "emit", records.append)  # the filter runs before emit, as for the real handler
    logger = logging.getLogger("tests.handler")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        start_worker()
        process = only(exporter, "process")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    [record] = [r for r in records if getattr(r, "event", None) == "test.handling"]
    assert (record.trace_id, record.span_id) == hex_ids(process)
    line = logs.json_formatter().format(record)
    assert f'"trace_id": "{TRACE_ID}"' in line


def test_no_trace_ids_in_log_lines_outside_any_span(exporter):
    record = logging.makeLogRecord({"msg": "x"})
    logs._Context("web").filter(record)
    assert not hasattr(record, "trace_id")


def test_the_python_client_sends_the_current_span_context(exporter):
    tracer = quorra.tracing.current.tracer
    assert "traceparent" not in calls.submit({"type": "job", "payload": {}}).headers
    with tracer.start_as_current_span("caller") as span:
        headers = calls.submit_batch([{"type": "job", "payload": {}}]).headers
    flags = int(span.get_span_context().trace_flags)
    assert headers["traceparent"] == f"00-{hex_ids(span)[0]}-{hex_ids(span)[1]}-{flags:02x}"
    assert trace.get_current_span() is trace.INVALID_SPAN


# -- what switches tracing on ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "shop"}, False),  # names the service, asks for nothing
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, True),
    ],
)
def test_only_opentelemetrys_own_variables_switch_tracing_on(environ, wanted):
    assert tracing_wanted(environ) is wanted


@pytest.mark.parametrize(
    ("attempt", "delay", "inside"),
    [(1, 0, True), (1, 5, False), (2, 0, False)],
    ids=["due-at-once", "delayed", "retry"],
)
def test_only_the_first_attempt_of_a_job_due_at_once_continues_its_submit_trace(attempt, delay, inside):
    created = datetime(2026, 12, 2, tzinfo=UTC)
    assert continues_submit_trace(attempt, created, created + timedelta(seconds=delay)) is inside


def test_every_job_of_a_workflow_keeps_the_trace_context(settings, store):
    client = create_app(settings, store=store, notifier=make_notifier(settings)).test_client()
    body = {
        "jobs": [
            {"ref": "a", "type": "job", "payload": {}},
            {"ref": "b", "type": "job", "payload": {}, "depends_on": ["a"]},
        ]
    }
    response = client.post("/v1/workflows", json=body, headers=AUTH | {"traceparent": TRACEPARENT})
    assert response.status_code == 201, response.get_json()
    ids = [job["id"] for job in response.get_json()["jobs"].values()]
    assert [store.get_job(job_id).traceparent for job_id in ids] == [TRACEPARENT] * 2


def test_a_workflow_submit_is_one_span(exporter, settings, store):
    client = create_app(settings, store=store, notifier=make_notifier(settings)).test_client()
    body = {"jobs": [{"ref": "a", "type": "job", "payload": {}}, {"ref": "b", "type": "job", "payload": {}}]}
    response = client.post("/v1/workflows", json=body, headers=AUTH | {"traceparent": TRACEPARENT})
    assert response.status_code == 201, response.get_json()
    submit_span = only(exporter, "submit")
    assert submit_span.attributes["messaging.batch.message_count"] == 2
    job_id = response.get_json()["jobs"]["a"]["id"]
    assert store.get_job(job_id).traceparent == f"00-{TRACE_ID}-{hex_ids(submit_span)[1]}-01"
