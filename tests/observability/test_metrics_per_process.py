"""Metrics across containers: with QUORRA_METRICS_ADDR, `quorra grpc`, `quorra scheduler`
and the worker each serve their own /metrics, with no PROMETHEUS_MULTIPROC_DIR (containers
share no filesystem). Real processes, scraped over HTTP as Prometheus would."""

from __future__ import annotations

import socket

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.api.test_server import web_env
from tests.conftest import free_port
from tests.factories import make_job
from tests.processes import QuorraProcess, clean_environ
from tests.worker.support import WorkerProcess, wait_until

START_TIMEOUT_SECONDS = 60.0


def scrape(port: int) -> tuple[dict, set[str]]:
    """The samples of 127.0.0.1:port/metrics, and the metric family names it declares."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    families = list(text_string_to_metric_families(text))
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        for sample in family.samples
    }
    return samples, {family.name for family in families}


def server_env(database_url: str, grpc_port: int, metrics_port: int) -> dict[str, str]:
    env = web_env(
        database_url,
        free_port(),
        QUORRA_GRPC_ADDR=f"127.0.0.1:{grpc_port}",
        QUORRA_METRICS_ADDR=f"127.0.0.1:{metrics_port}",
        QUORRA_SCHEDULER_INTERVAL="0.2s",
        QUORRA_POLL_INTERVAL="0.2s",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def test_grpc_scheduler_and_worker_each_serve_their_own_metrics(database_url, store):
    grpc_port = free_port()
    # Port 0: each process binds a free port itself and logs it (no race for a port picked here)
    servers = {role: QuorraProcess(role, server_env(database_url, grpc_port, 0)) for role in ("grpc", "scheduler")}
    worker = WorkerProcess(grpc_port, QUORRA_METRICS_ADDR="127.0.0.1:0")
    processes = {**servers, "worker": worker}
    try:
        ports = {}
        for role, process in processes.items():
            ports[role] = process.wait_for("metrics.listening", timeout=START_TIMEOUT_SECONDS).record["port"]
            assert ports[role] > 0
        servers["grpc"].wait_for("rpc.started", timeout=START_TIMEOUT_SECONDS)

        # When a job runs through the worker
        job = make_job(store, type="email_send", queue="default")
        worker.wait_for("job.settled", timeout=START_TIMEOUT_SECONDS, job_id=job.id)

        # Then the gRPC server's own endpoint counted its lease and its ack...
        labels = (("queue", "default"), ("tenant", "default"), ("type", "email_send"))
        wait_until(
            lambda: scrape(ports["grpc"])[0].get(("quorra_jobs_processed_total", labels)) == 1.0,
            timeout=30,
            what="the ack counted on grpc's /metrics",
        )
        grpc_samples, grpc_families = scrape(ports["grpc"])
        assert grpc_samples[("quorra_jobs_leased_total", labels)] == 1.0
        assert "quorra_grpc_requests" in grpc_families
        # ...the scheduler's declares the scheduler's counters, and every endpoint has its
        # process figures (the worker counts only the handler threads it abandoned past their
        # timeout: jobs are counted server side)
        scheduler_samples, scheduler_families = scrape(ports["scheduler"])
        assert {"quorra_leases_expired", "quorra_jobs_pruned"} <= scheduler_families
        worker_samples, worker_families = scrape(ports["worker"])
        assert {name for name in worker_families if name.startswith("quorra_")} <= {
            "quorra_worker_threads_abandoned",
            "quorra_worker_threads_abandoned_created",
        }
        for samples in (grpc_samples, scheduler_samples, worker_samples):
            assert samples[("process_cpu_seconds_total", ())] > 0
    finally:
        codes = {role: process.stop() for role, process in processes.items()}
    assert codes == {"grpc": 0, "scheduler": 0, "worker": 0}, {r: p.dump()[-2000:] for r, p in processes.items()}


def test_a_metrics_port_already_taken_exits_2_naming_the_variable(sqlite_url):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = clean_environ(DATABASE_URL=sqlite_url, QUORRA_METRICS_ADDR=f"127.0.0.1:{port}", QUORRA_LOG_FORMAT="json")
        scheduler = QuorraProcess("scheduler", env)
        assert scheduler.popen.wait(START_TIMEOUT_SECONDS) == 2
    output = scheduler.output()
    assert "QUORRA_METRICS_ADDR: cannot listen on" in output and "Traceback" not in output


def test_the_metrics_address_is_validated_and_unset_by_default():
    from quorra.config import Settings
    from quorra.errors import InvalidConfig

    assert Settings.from_env({}).metrics_addr is None
    assert Settings.from_env({"QUORRA_METRICS_ADDR": ":9102"}).metrics_addr == ":9102"
    try:
        Settings.from_env({"QUORRA_METRICS_ADDR": "9102"})
    except InvalidConfig as exc:
        assert "QUORRA_METRICS_ADDR" in exc.message
    else:
        raise AssertionError("a port without a colon was accepted")
