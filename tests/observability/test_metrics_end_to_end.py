"""Issue #5 end to end: real work through real processes (`quorra web` with 2 gunicorn
workers, `quorra grpc`, `quorra scheduler`, two `bin/quorra-worker`s) sharing one
PROMETHEUS_MULTIPROC_DIR; then the web's /metrics, each server's own samples files and every
log line are checked against what happened (see scenario.py). One run per backend serves
every test of this module."""

from __future__ import annotations

import collections
import json
import re

import pytest
from sqlalchemy import text

from tests.conftest import _database_url, database_name
from tests.observability import scenario
from tests.observability.deployment import Samples, sample
from tests.observability.test_ops_files import DASHBOARD, dashboard_metric_names

ACK_JOB = "/quorra.v1.WorkerService/AckJob"
NACK_JOB = "/quorra.v1.WorkerService/NackJob"
SETTLE_JOBS = "/quorra.v1.WorkerService/SettleJobs"
SETTLE_AND_LEASE = "/quorra.v1.WorkerService/SettleAndLease"

# (queue, type) -> count, for the work of scenario.py
CREATED = {("mail", "email_send"): 3, ("default", "email_send"): 2, ("default", "fail"): 1, ("doomed", "sleep"): 1}
LEASED = {("mail", "email_send"): 3, ("default", "email_send"): 2, ("default", "fail"): 2, ("doomed", "sleep"): 1}
PROCESSED = {("mail", "email_send"): 3, ("default", "email_send"): 2}
FAILED = {("default", "fail"): 1}
DEAD_BY_NACK = {("default", "fail"): 1}
DEAD_BY_EXPIRY = {("doomed", "sleep"): 1}
FINAL = {("mail", "succeeded"): 3, ("default", "succeeded"): 2, ("default", "dead"): 1, ("doomed", "dead"): 1}


def series(samples: Samples, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """Every sample of `name`, keyed by the values of `labels`."""
    found = {}
    for (sample_name, pairs), value in samples.items():
        if sample_name == name:
            found[tuple(dict(pairs)[label] for label in labels)] = value
    return found


def jobs_counter(samples: Samples, name: str) -> dict[tuple[str, ...], float]:
    return series(samples, name, "queue", "type")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def run(request, tmp_path_factory, sqlite_template) -> scenario.Run:
    directory = tmp_path_factory.mktemp(f"observability-{request.param}")
    metrics_dir = directory / "prometheus"  # missing: the servers make it
    if request.param == "sqlite":
        database = directory / "quorra.db"
        database.write_bytes(sqlite_template.read_bytes())
        yield scenario.run(f"sqlite:///{database}", metrics_dir)
        return
    conn, template = request.getfixturevalue("pg_admin")
    name = database_name("observability")
    conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    try:
        yield scenario.run(_database_url(name), metrics_dir)
    finally:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# -- the work itself ---------------------------------------------------------------------------


def test_every_job_reached_its_final_state_and_every_process_stopped_cleanly(run):
    statuses = collections.Counter((job["queue"], job["status"]) for job in run.jobs.values())

    assert statuses == FINAL
    assert run.jobs[run.doomed]["last_error"] == "lease expired"
    assert run.exit_codes == {"worker0": 0, "worker1": None, "scheduler": 0, "grpc": 0, "web": 0}  # worker1: killed


# -- metrics -----------------------------------------------------------------------------------


def test_created_jobs_are_counted_by_queue_and_type(run):
    assert jobs_counter(run.samples, "quorra_jobs_created_total") == CREATED


def test_the_grpc_server_counts_leases_and_settlements_in_its_own_process(run):
    for samples in (run.samples, run.grpc_samples):
        assert jobs_counter(samples, "quorra_jobs_leased_total") == LEASED
        assert jobs_counter(samples, "quorra_jobs_processed_total") == PROCESSED
        assert jobs_counter(samples, "quorra_jobs_failed_total") == FAILED
    assert jobs_counter(run.grpc_samples, "quorra_jobs_dead_total") == DEAD_BY_NACK
    assert jobs_counter(run.grpc_samples, "quorra_jobs_created_total") == {}


def test_the_scheduler_counts_the_expired_lease_and_the_death_it_caused_in_its_own_process(run):
    assert series(run.scheduler_samples, "quorra_leases_expired_total", "queue") == {("doomed",): 1}
    assert jobs_counter(run.scheduler_samples, "quorra_jobs_dead_total") == DEAD_BY_EXPIRY
    assert jobs_counter(run.scheduler_samples, "quorra_jobs_leased_total") == {}
    assert series(run.samples, "quorra_leases_expired_total", "queue") == {("doomed",): 1}
    assert jobs_counter(run.samples, "quorra_jobs_dead_total") == DEAD_BY_NACK | DEAD_BY_EXPIRY


def test_the_wait_histogram_counts_every_lease(run):
    leases_per_queue = collections.Counter()
    for (queue, _), count in LEASED.items():
        leases_per_queue[(queue,)] += count

    buckets = series(run.samples, "quorra_job_wait_seconds_bucket", "queue", "le")

    assert series(run.samples, "quorra_job_wait_seconds_count", "queue") == leases_per_queue
    assert {(queue,): count for (queue, le), count in buckets.items() if le == "+Inf"} == leases_per_queue


def test_the_duration_histogram_counts_every_settlement_acks_nacks_and_expiries(run):
    settlements = collections.Counter(PROCESSED) + collections.Counter(FAILED)
    settlements += collections.Counter(DEAD_BY_NACK) + collections.Counter(DEAD_BY_EXPIRY)

    assert jobs_counter(run.samples, "quorra_job_duration_seconds_count") == settlements
    # The killed worker's attempt lasted from its lease to the reap, past the 1 s TTL.
    assert (
        sample(run.scheduler_samples, "quorra_job_duration_seconds_sum", tenant="default", queue="doomed", type="sleep")
        >= 1.0
    )


def test_queue_gauges_match_the_database(run):
    assert series(run.samples, "quorra_job_queue_length", "queue", "status") == run.queue_counts == FINAL
    assert series(run.samples, "quorra_queue_oldest_job_age_seconds", "queue") == {
        ("mail",): 0,
        ("default",): 0,
        ("doomed",): 0,
    }


def test_grpc_calls_are_counted_by_method_and_code(run):
    # the worker leases with SettleAndLease, which carries its 5 acks and 2 nacks (or some go
    # in SettleJobs batches when the lease loop is waiting): never one AckJob/NackJob each
    leases = sample(run.samples, "quorra_grpc_requests_total", method=SETTLE_AND_LEASE, code="OK")
    assert leases > 0
    assert sample(run.samples, "quorra_grpc_request_duration_seconds_count", method=SETTLE_AND_LEASE) >= leases
    settles = sample(run.samples, "quorra_grpc_requests_total", method=SETTLE_JOBS, code="OK") or 0
    assert settles <= 7
    assert sample(run.samples, "quorra_grpc_requests_total", method=ACK_JOB, code="OK") in (None, 0)
    assert sample(run.samples, "quorra_grpc_requests_total", method=NACK_JOB, code="OK") in (None, 0)


def test_http_requests_are_counted_by_method_route_and_status(run):
    posted = sum(CREATED.values())

    assert (
        sample(run.samples, "quorra_http_request_duration_seconds_count", method="POST", route="/v1/jobs", status="201")
        == posted
    )
    assert sample(run.samples, "quorra_http_request_total", method="POST", status="201") == posted


def test_the_grafana_dashboard_queries_only_metrics_that_metrics_exposes(run):
    exposed = {name for name, _ in run.samples}

    assert dashboard_metric_names(json.loads(DASHBOARD.read_text())) <= exposed


# -- logs --------------------------------------------------------------------------------------

UTC_MILLISECONDS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
TRANSITIONS = {
    "job.enqueued",
    "job.leased",
    "job.succeeded",
    "job.failed",
    "job.dead",
    "lease.expired",
    "lease.released",
    "job.cancelled",
    "job.retried",
}


def test_every_process_writes_only_json_lines_with_time_level_role_and_message(run):
    roles = {"web": "web", "grpc": "grpc", "scheduler": "scheduler", "worker0": "worker", "worker1": "worker"}

    for process, lines in run.logs.items():
        assert run.other_output[process] == "", process
        assert lines, process
        for line in lines:
            assert {"time", "level", "role", "message"} <= line.record.keys(), line.record
            assert line.record["role"] == roles[process]
            assert UTC_MILLISECONDS.fullmatch(line.record["time"]), line.record


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        ("email", {("job.enqueued", "web"): 1, ("job.leased", "grpc"): 1, ("job.succeeded", "grpc"): 1}),
        (
            "failing",
            {("job.enqueued", "web"): 1, ("job.leased", "grpc"): 2, ("job.failed", "grpc"): 1, ("job.dead", "grpc"): 1},
        ),
        ("doomed", {("job.enqueued", "web"): 1, ("job.leased", "grpc"): 1, ("lease.expired", "scheduler"): 1}),
    ],
)
def test_each_transition_of_a_job_is_one_log_line_with_its_job_id(run, job, expected):
    job_ids = run.emails if job == "email" else [getattr(run, job)]
    for job_id in job_ids:
        lines = [
            (process, record) for process, record in run.lines(job_id=job_id) if record.get("event") in TRANSITIONS
        ]

        assert collections.Counter((record["event"], process) for process, record in lines) == expected
        for _, record in lines:
            assert record["queue"] == run.jobs[job_id]["queue"]
            if record["event"] != "job.enqueued":
                assert record["worker_id"] == (scenario.VICTIM_ID if job == "doomed" else scenario.WORKER_ID)


def test_a_job_s_transitions_are_logged_in_order_by_the_grpc_server(run):
    events = [record["event"] for process, record in run.lines(job_id=run.failing) if process == "grpc"]

    assert [event for event in events if event in TRANSITIONS] == ["job.leased", "job.failed", "job.leased", "job.dead"]


def test_the_worker_logs_each_job_it_runs_with_its_id_queue_and_worker_id(run):
    for job_id in run.emails:
        [settled] = [record for _, record in run.lines(job_id=job_id, event="job.settled")]
        assert (settled["queue"], settled["worker_id"], settled["status"]) == (
            run.jobs[job_id]["queue"],
            scenario.WORKER_ID,
            "succeeded",
        )


def test_the_request_id_of_a_post_is_echoed_and_on_the_web_s_lines_for_that_request(run):
    traced = [record for _, record in run.lines(request_id=scenario.REQUEST_ID)]

    assert run.traced.headers["X-Request-ID"] == scenario.REQUEST_ID
    assert {record["event"] for record in traced} == {"job.enqueued", "http.request"}
    assert {record["role"] for record in traced} == {"web"}
    [enqueued] = [record for record in traced if record["event"] == "job.enqueued"]
    [served] = [record for record in traced if record["event"] == "http.request"]
    assert enqueued["job_id"] == run.traced.json()["id"]
    assert (served["method"], served["route"], served["status"]) == ("POST", "/v1/jobs", 201)
