"""Every job the README tells a reader to create completes under `make run` as written: the
worker `make run` starts reads every queue the examples use and has a handler for every type
(the built-in examples)."""

from __future__ import annotations

import json
import re

from quorra.worker.cli import EXAMPLES_MODULE
from quorra.worker.registry import HandlerRegistry
from tests.conftest import REPO
from tests.observability.test_procfile_shutdown import make_run_environment

_CURL_BODY = re.compile(r"-d '(\{.*?\})'", re.DOTALL)
_QUORRACTL_QUEUE = re.compile(r"quorractl enqueue .*--queue (\S+)")


def readme_jobs() -> list[dict]:
    """The job bodies of the README's curl examples (a batch or a workflow counts as its jobs,
    a schedule as its job template); bodies that create no job (webhooks, keys, filters of
    bulk actions) are left out."""
    jobs = []
    for body in _CURL_BODY.findall((REPO / "README.md").read_text()):
        document = json.loads(body)
        jobs.extend(job for job in document.get("jobs", [document.get("job", document)]) if "type" in job)
    return jobs


def test_the_worker_of_make_run_reads_every_queue_the_readme_uses():
    readme = (REPO / "README.md").read_text()
    used = {job.get("queue", "default") for job in readme_jobs()} | set(_QUORRACTL_QUEUE.findall(readme))
    served = set(make_run_environment()["QUORRA_WORKER_QUEUES"].split(","))

    assert {"default", "email", "images"} <= used  # the examples were found
    assert used <= served


def test_the_worker_of_make_run_handles_every_job_type_the_readme_creates():
    registry = HandlerRegistry()
    registry.include_modules((EXAMPLES_MODULE,))

    types = {job["type"] for job in readme_jobs()}

    assert "email_send" in types
    assert types <= set(registry.job_types)
