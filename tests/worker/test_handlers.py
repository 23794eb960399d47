"""Declaring handlers, loading them by module, the CLI's configuration, the package's
import rule and the built-in example handlers."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from click.testing import CliRunner

from quorra.errors import InvalidConfig
from quorra.worker import HandlerRegistry, LeasedJob, Worker, examples
from quorra.worker.cli import main
from tests.conftest import free_port
from tests.worker.conftest import worker_settings
from tests.worker.support import WorkerProcess


def leased(job_type: str = "t", payload: dict | None = None, attempt: int = 1) -> LeasedJob:
    return LeasedJob(
        id="00000000-0000-0000-0000-000000000001",
        type=job_type,
        queue="q",
        payload=payload or {},
        priority=0,
        attempt=attempt,
        max_retries=3,
        lease_id="l",
        lease_expires_at=None,
        created_at=None,
        run_at=None,
    )


def test_a_module_s_marked_functions_are_its_handlers():
    registry = HandlerRegistry()

    found = registry.include_module("tests.worker.handlers_module")

    assert found == 3
    assert registry.job_types == ["greet", "shout", "yell"]
    assert registry.get("yell")(leased(payload={"text": "hi"})) == "HI"


def test_two_handlers_for_one_job_type_are_refused():
    registry = HandlerRegistry()
    registry.register("greet", lambda job: 1)

    with pytest.raises(InvalidConfig, match="two handlers for job type 'greet'"):
        registry.include_module("tests.worker.handlers_module")


@pytest.mark.parametrize(("module", "problem"), [("json", "no function marked"), ("no.such.module", "cannot import")])
def test_a_module_without_handlers_is_refused(module, problem):
    with pytest.raises(InvalidConfig, match=problem):
        HandlerRegistry().include_modules([module])


def test_the_worker_decorator_registers_and_marks_the_function():
    worker = Worker(worker_settings(free_port()))

    @worker.handler("email_send")
    def send(job):
        return None

    script = types.ModuleType("script")  # a script written for Worker.run(), given to --handlers
    script.send = send
    registry = HandlerRegistry()
    registry.include_module(script)

    assert worker.registry.get("email_send") is send
    assert registry.get("email_send") is send


def test_importing_the_sdk_loads_no_database_or_web_code():
    code = (
        "import sys, quorra.worker; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'flask', 'psycopg2', 'alembic'}))"
    )

    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    assert output.strip() == "[]"


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--max-jobs", "0"], "QUORRA_WORKER_MAX_JOBS"),
        (["--lease-ttl", "soon"], "QUORRA_WORKER_LEASE_TTL"),
        (["--queues", "bad name"], "QUORRA_WORKER_QUEUES"),
        (["--handlers", "no.such.module"], "cannot import"),
    ],
)
def test_bad_configuration_exits_2_with_the_reason(args, problem):
    result = CliRunner().invoke(main, args, env={"QUORRA_GRPC_ADDR": f"127.0.0.1:{free_port()}"})

    assert result.exit_code == 2
    assert problem in result.output


def test_flags_win_over_the_environment():
    worker = WorkerProcess(
        free_port(),
        "--id",
        "from-flag",
        "--queues",
        "a,b",
        "--max-jobs",
        "7",
        QUORRA_WORKER_ID="from-env",
        QUORRA_WORKER_QUEUES="env",
        QUORRA_WORKER_MAX_JOBS="2",
    )
    try:
        started = worker.wait_for("worker.started").record
    finally:
        assert worker.stop() == 0

    assert (started["worker_id"], started["queues"], started["max_jobs"]) == ("from-flag", ["a", "b"], 7)
    assert started["job_types"] == [
        "email_send",
        "fail",
        "reminder",
        "sleep",
        "webhook_call",
    ]  # the examples by default


# -- the built-in examples ------------------------------------------------------------------------


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict, str]]] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Receiver.received.append((self.path, body, self.headers["Idempotency-Key"]))
        self.send_response(int(self.path.strip("/")))
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Receiver.received = []
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


def test_webhook_call_posts_the_body_with_the_job_id_as_idempotency_key(receiver):
    job = leased("webhook_call", {"url": f"{receiver}/204", "body": {"event": "signup"}})

    assert examples.call_webhook(job) == {"status_code": 204}
    assert _Receiver.received == [("/204", {"event": "signup"}, job.id)]


@pytest.mark.parametrize(("path", "problem"), [("/500", "answered 500"), ("/404", "answered 404")])
def test_webhook_call_fails_on_a_non_2xx_answer(receiver, path, problem):
    with pytest.raises(examples.JobFailed, match=problem):
        examples.call_webhook(leased("webhook_call", {"url": receiver + path}))


def test_webhook_call_refuses_a_url_that_is_not_http():
    with pytest.raises(examples.JobFailed, match="http"):
        examples.call_webhook(leased("webhook_call", {"url": "file:///etc/passwd"}))


def test_fail_fails_until_the_attempt_it_is_told_to_succeed_on():
    payload = {"message": "not yet", "succeed_on_attempt": 2}

    with pytest.raises(examples.JobFailed, match="not yet"):
        examples.fail(leased("fail", payload, attempt=1))
    assert examples.fail(leased("fail", payload, attempt=2)) == {"succeeded_on_attempt": 2}


def test_sleep_stops_early_when_the_lease_is_lost():
    job = leased("sleep", {"seconds": 30})
    job.lease_lost.set()

    with pytest.raises(examples.JobFailed, match="lease was lost"):
        examples.sleep(job)
    assert examples.sleep(leased("sleep", {"seconds": 0.01})) == {"slept_seconds": 0.01}


def test_email_send_and_reminder_log_their_job_and_succeed(caplog):
    caplog.set_level("INFO", logger="quorra.worker.examples")
    email = leased("email_send", {"to": "user@example.com", "subject": "Hi", "body": "Welcome"})
    reminder = leased("reminder", {"message": "Time to review your dashboard!"})

    assert examples.send_email(email) == {"delivered": False, "logged": True}
    assert examples.remind(reminder) == {"reminded": True}
    assert [r.job_id for r in caplog.records] == [email.id, reminder.id]
