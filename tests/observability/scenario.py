"""One run of real work through a whole deployment (see deployment.py), recorded for the
tests to check: what /metrics showed at the end, what each process's own samples files held,
the final state of every job, and every log line of every process.

The work: five `email_send` jobs over two queues (one posted with an X-Request-ID), one
`fail` job with max_retries=1 (failed once, then dead, both nacked through the gRPC server),
and one `sleep` job leased by a worker that is then killed with SIGKILL, so that its lease
expires and the scheduler reaps it (max_retries=0: dead)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.observability.deployment import Deployment, Samples
from tests.scheduler.processes import LogLine
from tests.worker.support import wait_until

REQUEST_ID = "observability-trace-1"
WORKER_ID, VICTIM_ID = "obs-worker", "obs-victim"
EMAIL = {"to": "user@example.com", "subject": "Welcome", "body": "Your job queue is ready."}
SETTLE_TIMEOUT_SECONDS = 60.0


@dataclass
class Run:
    samples: Samples  # the web's /metrics at the end
    grpc_samples: Samples  # the gRPC server's own samples files
    scheduler_samples: Samples
    queue_counts: dict[tuple[str, str], int]  # GET /v1/queues at the end
    jobs: dict[str, dict[str, Any]]  # id -> GET /v1/jobs/{id} at the end
    emails: list[str]
    failing: str
    doomed: str
    traced: requests.Response  # the POST sent with X-Request-ID
    exit_codes: dict[str, int | None]
    logs: dict[str, list[LogLine]]  # process -> its JSON lines, in order
    other_output: dict[str, str]  # process -> whatever it wrote that was not a JSON line

    def lines(self, **fields: Any) -> list[tuple[str, dict[str, Any]]]:
        """(process, record) of every line, of every process, with these field values."""
        return [
            (process, line.record)
            for process, lines in self.logs.items()
            for line in lines
            if all(line.record.get(k) == v for k, v in fields.items())
        ]


def run(database_url: str, metrics_dir: Path) -> Run:
    deployment = Deployment(database_url, metrics_dir)
    try:
        deployment.wait_ready()
        recorded = _work(deployment)
    except BaseException:
        deployment.kill_all()
        raise
    exit_codes = deployment.stop()
    processes = {**deployment.servers, **{f"worker{n}": w for n, w in enumerate(deployment.workers)}}
    return Run(
        **recorded,
        exit_codes=exit_codes,
        logs={name: list(process.lines) for name, process in processes.items()},
        other_output={name: "".join(process.other_output) for name, process in processes.items()},
    )


def _work(deployment: Deployment) -> dict[str, Any]:
    worker = deployment.worker("--id", WORKER_ID, "--queues", "mail,default", "--max-jobs", "4")
    victim = deployment.worker("--id", VICTIM_ID, "--queues", "doomed", "--max-jobs", "1", "--lease-ttl", "3s")
    traced = deployment.post(headers={"X-Request-ID": REQUEST_ID}, type="email_send", queue="mail", payload=EMAIL)
    emails = [traced.json()["id"]] + [
        deployment.post(type="email_send", queue=queue, payload=EMAIL).json()["id"]
        for queue in ("mail", "mail", "default", "default")
    ]
    failing = deployment.post(type="fail", queue="default", max_retries=1, payload={"message": "always"}).json()["id"]
    doomed = deployment.post(type="sleep", queue="doomed", max_retries=0, payload={"seconds": 60}).json()["id"]

    victim.wait_for("job.started", job_id=doomed)
    # Its first heartbeat landed, so its LeaseJobs call has long ended: killed mid-stream, the
    # server could not tell a delivered lease from an undelivered one and would hand it back.
    wait_until(lambda: deployment.job(doomed)["status"] == "processing", what="the doomed job's first heartbeat")
    victim.kill()  # its lease (3 s) runs out; only the scheduler can settle the job now
    _wait_settled(deployment, worker, emails, failing)

    return {
        "samples": deployment.scrape(),
        "grpc_samples": deployment.process_samples("grpc"),
        "scheduler_samples": deployment.process_samples("scheduler"),
        "queue_counts": deployment.queue_counts(),
        "jobs": {job_id: deployment.job(job_id) for job_id in (*emails, failing, doomed)},
        "emails": emails,
        "failing": failing,
        "doomed": doomed,
        "traced": traced,
    }


def _wait_settled(deployment: Deployment, worker, emails: list[str], failing: str) -> None:
    """Until every settlement has been counted: the worker logs `job.settled` once the server
    answered its ack or nack, which the server does after counting it; the scheduler logs
    `leases.reaped` after counting what it reaped."""
    for job_id in emails:
        worker.wait_for("job.settled", job_id=job_id, timeout=SETTLE_TIMEOUT_SECONDS)
    worker.wait_for("job.settled", job_id=failing, status="dead", timeout=SETTLE_TIMEOUT_SECONDS)
    deployment.servers["scheduler"].wait_for("leases.reaped", timeout=SETTLE_TIMEOUT_SECONDS)
