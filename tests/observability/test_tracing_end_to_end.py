"""Issue 13, section 3, across real processes: `quorra web` (gunicorn), `quorra grpc` and
`bin/quorra-worker`, each switched on by OTEL_EXPORTER_OTLP_ENDPOINT alone and exporting to a
local OTLP/HTTP collector (collector.py). A job submitted by quorra.client inside a span of
the test's own makes one trace: the client's span, the web's request and submit spans, the
gRPC server's lease span, the worker's handler (process) and settle spans. With tracing
off, a whole submit-to-ack in one fresh interpreter imports nothing of OpenTelemetry (beyond
what redis-py imports by itself) and exports nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from opentelemetry.sdk.trace import TracerProvider

from quorra.client import Client
from tests.api.test_server import web_env
from tests.conftest import REPO, TEST_API_KEY, free_port
from tests.observability.collector import Collector
from tests.processes import QuorraProcess
from tests.worker.support import WorkerProcess, wait_until

START_TIMEOUT_SECONDS = 60.0
HANDLERS = "tests.worker.handlers_module"


@pytest.fixture
def database(tmp_path, sqlite_template) -> str:
    path = tmp_path / "quorra.db"
    path.write_bytes(sqlite_template.read_bytes())
    return f"sqlite:///{path}"


def otel_env(collector: Collector) -> dict[str, str]:
    """Only the standard variables: the endpoint switches tracing on; spans leave at once."""
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "50"}


@pytest.fixture
def traced_stack(database):
    """(collector, web base URL, worker process): every process tracing to the collector."""
    with Collector() as collector:
        grpc_port, http_port = free_port(), free_port()
        env = web_env(database, http_port, QUORRA_GRPC_ADDR=f"127.0.0.1:{grpc_port}", QUORRA_LOG_LEVEL="info")
        env |= otel_env(collector)
        servers = [QuorraProcess("web", env), QuorraProcess("grpc", env)]
        worker = WorkerProcess(grpc_port, "--handlers", HANDLERS, "--id", "traced-worker", **otel_env(collector))
        try:
            servers[1].wait_for("rpc.started", timeout=START_TIMEOUT_SECONDS)
            worker.wait_for("worker.started", timeout=START_TIMEOUT_SECONDS)
            base = f"http://127.0.0.1:{http_port}"
            wait_until(lambda: _healthy(base), timeout=START_TIMEOUT_SECONDS, what="quorra web healthy")
            yield collector, base, worker
        finally:
            for process in (worker, *servers):
                process.stop()


def _healthy(base: str) -> bool:
    import requests

    try:
        return requests.get(f"{base}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_one_trace_from_the_client_to_the_settle_across_the_processes(traced_stack):
    collector, base, worker = traced_stack
    tracer = TracerProvider().get_tracer("test")  # the caller's own span; quorra.client sends its context
    with Client(base, TEST_API_KEY) as client, tracer.start_as_current_span("caller") as caller:
        job_id = client.enqueue("greet", {"name": "trace"}).id
        assert client.wait(job_id, timeout=60).status == "succeeded"
    trace_id = format(caller.get_span_context().trace_id, "032x")

    spans = collector.wait_for(trace_id, {"POST /v1/jobs", "submit", "lease", "process", "settle"})
    request, submit, lease = spans["POST /v1/jobs"], spans["submit"], spans["lease"]
    process, settle = spans["process"], spans["settle"]
    assert request.parent_span_id == format(caller.get_span_context().span_id, "016x")
    assert (request.service, request.kind) == ("quorra-web", "SPAN_KIND_SERVER")
    assert (submit.service, submit.kind, submit.parent_span_id) == ("quorra-web", "SPAN_KIND_PRODUCER", request.span_id)
    assert (lease.service, lease.parent_span_id) == ("quorra-grpc", submit.span_id)
    assert (process.service, process.kind, process.parent_span_id) == (
        "quorra-worker",
        "SPAN_KIND_CONSUMER",
        lease.span_id,
    )
    assert (settle.service, settle.kind, settle.parent_span_id) == (
        "quorra-worker",
        "SPAN_KIND_CLIENT",
        process.span_id,
    )
    assert (trace_id, submit.span_id) in process.links
    for span in (submit, lease, process, settle):
        assert span.attributes["messaging.system"] == "quorra"
        assert span.attributes["messaging.message.id"] == job_id
        assert span.attributes["messaging.destination.name"] == "default"
        assert span.attributes["quorra.job.type"] == "greet"
    for span in (lease, process, settle):
        assert span.attributes["quorra.job.attempt"] == 1
        assert span.attributes["messaging.client.id"] == "traced-worker"
    assert settle.attributes["quorra.job.status"] == "succeeded"

    # The official instrumentations: the INSERT under the submit, the lease RPC linked from the lease span
    statements = [span for span in collector.in_trace(trace_id) if span.parent_span_id == submit.span_id]
    assert any(span.attributes.get("db.system") == "sqlite" for span in statements), statements
    rpc_spans = {(span.trace_id, span.span_id): span for span in collector.spans if span.service == "quorra-grpc"}
    linked = [rpc_spans[link] for link in lease.links if link in rpc_spans]
    assert [span.name for span in linked] == ["/quorra.v1.WorkerService/SettleAndLease"]
    # ... whose parent is the worker's call: gRPC metadata carries each call's context
    calls = wait_until(
        lambda: [span for span in collector.spans if span.span_id == linked[0].parent_span_id],
        timeout=30,
        what="the worker's SettleAndLease span",
    )
    assert [(span.service, span.kind) for span in calls] == [("quorra-worker", "SPAN_KIND_CLIENT")]

    # The worker's log lines inside the handler carry its trace and span ids
    started = worker.wait_for("job.started", job_id=job_id)
    assert (started.record["trace_id"], started.record["span_id"]) == (trace_id, process.span_id)


OFF_SCRIPT = """
import json, sys, threading
import redis  # redis-py 8 imports OpenTelemetry's metrics SDK by itself when it is installed
brought_by_redis = {name for name in sys.modules if name.startswith("opentelemetry")}
from quorra.api import create_app
from quorra.config import Settings
from quorra.notify import make_notifier
from quorra.rpc.server import create_server
from quorra.store import Store
from quorra.worker import HandlerRegistry, Worker

settings = Settings(database_url=sys.argv[1], api_keys=("key",), log_format="text", poll_interval_seconds=0.05)
store = Store.from_url(settings.database_url)
notifier = make_notifier(settings)
client = create_app(settings, store=store, notifier=notifier).test_client()
traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
answer = client.post("/v1/jobs", json={"type": "t", "payload": {}}, headers={"X-API-Key": "key", "traceparent": traceparent})
server, port = create_server(settings, store, notifier, "127.0.0.1:0")
server.start()
done = threading.Event()
registry = HandlerRegistry()
registry.register("t", lambda job: done.set())
worker = Worker(settings.model_copy(update={"grpc_addr": f"127.0.0.1:{port}"}), registry).start()
assert done.wait(60), "the job did not run"
worker.stop(grace=5)
server.stop(0)
job = store.get_job(answer.get_json()["id"])
print(json.dumps({
    "traceparent": job.traceparent,
    "opentelemetry": sorted(name for name in sys.modules if name.startswith("opentelemetry") and name not in brought_by_redis),
    "quorra.tracing.otel": "quorra.tracing.otel" in sys.modules,
}))
"""


@pytest.mark.parametrize(
    "variables",
    [
        {},  # nothing asks for traces
        {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"},  # asked, and disabled
    ],
    ids=["unset", "sdk-disabled"],
)
def test_with_tracing_off_nothing_of_opentelemetry_is_imported_or_exported(database, variables):
    with Collector() as collector:
        env = {k: v for k, v in web_env(database, free_port()).items() if not k.startswith("OTEL_")}
        env |= variables | ({"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url} if variables else {})
        done = subprocess.run(
            [sys.executable, "-c", OFF_SCRIPT, database],
            check=False,
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout.strip().splitlines()[-1])
        assert seen["opentelemetry"] == [] and not seen["quorra.tracing.otel"]
        assert seen["traceparent"] == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"  # still kept
        assert collector.requests == 0
