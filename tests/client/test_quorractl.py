"""quorractl as a subprocess against the real server, on both backends: every command, in
tables and in --json, and each exit code (0 done, 1 refused, 2 usage, 3 unreachable)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid

from quorra.jobs import JobStatus
from tests.conftest import REPO, TEST_API_KEY, free_port
from tests.factories import dead_job, make_job

QUORRACTL_TIMEOUT_SECONDS = 120


def quorractl(url: str, *args: str, key: str = TEST_API_KEY, stdin: str | None = None):
    environment = {**os.environ, "QUORRA_URL": url, "QUORRA_API_KEY": key}
    return subprocess.run(
        [sys.executable, "-m", "quorra.cli.quorractl", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=environment,
        timeout=QUORRACTL_TIMEOUT_SECONDS,
        check=False,
    )


def as_json(done) -> object:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # the whole of stdout is one JSON document


def test_submit_prints_a_table_and_creates_the_job(served):
    done = quorractl(served.url, "submit", "email_send", "--payload", '{"to": "a@b.c"}', "--priority", "5")

    assert done.returncode == 0, done.stderr
    header, _rule, row = done.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "RUN", "AT"]
    job = served.store.get_job(row.split()[0])
    assert (job.type, job.payload, job.priority) == ("email_send", {"to": "a@b.c"}, 5)


def test_submit_takes_every_option_a_payload_file_and_a_delay(served, tmp_path):
    (tmp_path / "payload.json").write_text('{"n": 1}')

    created = as_json(
        quorractl(
            served.url, "submit", "t", "--payload", f"@{tmp_path / 'payload.json'}", "--queue", "q",
            "--priority", "-3", "--delay", "5m", "--max-retries", "0", "--json",
        )
    )  # fmt: skip

    job = served.store.get_job(created["id"])
    assert (job.payload, job.queue, job.priority, job.max_retries) == ({"n": 1}, "q", -3, 0)
    assert (job.run_at - job.created_at).total_seconds() >= 299


def test_enqueue_is_an_alias_and_reads_the_payload_from_stdin(served):
    created = as_json(quorractl(served.url, "-o", "json", "enqueue", "t", "--payload", "-", stdin='{"from": "stdin"}'))
    assert served.store.get_job(created["id"]).payload == {"from": "stdin"}


def test_get_prints_the_job_as_a_table_or_json(served):
    job = make_job(served.store)

    table = quorractl(served.url, "get", job.id)
    document = as_json(quorractl(served.url, "get", job.id, "--json"))

    assert table.returncode == 0 and table.stdout.split()[:2] == ["FIELD", "VALUE"]
    assert re.search(rf"^id +{job.id}$", table.stdout, re.MULTILINE)
    assert document["id"] == job.id and document["status"] == "pending" and document["created_at"].endswith("Z")


def test_list_shows_aligned_rows_with_errors_cut_to_one_line(served):
    dead = dead_job(served.store, queue="dl")
    served.store.retry(dead.id)
    [leased] = served.store.lease_jobs(["dl"], "w", 1, 30)
    served.store.nack(leased.id, leased.lease_id, "Traceback (most recent call last):\n  File x\n" + "y" * 200)

    done = quorractl(served.url, "list", "--queue", "dl")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "STATUS", "QUEUE"] and len(lines) == 3
    assert "Traceback (most recent call last): File x" in lines[2] and lines[2].endswith("…")


def test_list_limits_and_all_follows_the_cursor(served):
    ids = {make_job(served.store, queue="many").id for _ in range(25)}

    limited = quorractl(served.url, "list", "--queue", "many", "--limit", "3")
    every = as_json(quorractl(served.url, "list", "--queue", "many", "--all", "--json"))

    assert len(limited.stdout.splitlines()) == 2 + 3 and "--all" in limited.stderr
    assert {job["id"] for job in every} == ids


def test_wait_exits_0_on_success_and_1_on_a_dead_job_or_a_timeout(served):
    succeeded = make_job(served.store)
    served.finish(succeeded)
    dead = dead_job(served.store)
    pending = make_job(served.store)

    assert as_json(quorractl(served.url, "wait", succeeded.id, "--json"))["status"] == "succeeded"
    died = quorractl(served.url, "wait", dead.id)
    timed_out = quorractl(served.url, "wait", pending.id, "--timeout", "500ms", "--json")

    assert died.returncode == 1 and "is dead: boom" in died.stderr
    assert timed_out.returncode == 1 and "still pending" in timed_out.stderr
    assert json.loads(timed_out.stdout)["id"] == pending.id


def test_cancel_and_retry(served):
    job = make_job(served.store)

    assert as_json(quorractl(served.url, "cancel", job.id, "--json"))["status"] == "cancelled"
    assert quorractl(served.url, "retry", job.id).returncode == 0
    assert served.store.get_job(job.id).status is JobStatus.PENDING


def test_dlq_list_and_retry(served):
    dead = [dead_job(served.store, queue="payments") for _ in range(2)]
    dead_job(served.store, queue="other")

    listed = as_json(quorractl(served.url, "dlq", "list", "--queue", "payments", "--json"))
    retried = as_json(quorractl(served.url, "dlq", "retry", "--queue", "payments", "--json"))

    assert {job["id"] for job in listed} == {job.id for job in dead}
    assert retried == {"retried": 2}
    assert {served.store.get_job(job.id).status for job in dead} == {JobStatus.PENDING}


def test_queues_stats_and_health(served):
    dead_job(served.store, queue="a")
    make_job(served.store, queue="a")

    queues = quorractl(served.url, "queues")
    stats = as_json(quorractl(served.url, "stats", "--json"))
    health = quorractl(served.url, "health")

    header, _rule, row = queues.stdout.splitlines()
    assert header.split() == [
        "QUEUE",
        "PENDING",
        "LEASED",
        "PROCESSING",
        "SUCCEEDED",
        "FAILED",
        "DEAD",
        "CANCELLED",
        "BLOCKED",
        "TOTAL",
    ]
    assert row.split() == ["a", "1", "0", "0", "0", "0", "1", "0", "0", "2"]
    assert stats["jobs"] == 2 and stats["by_status"]["dead"] == 1
    assert health.returncode == 0 and "database" in health.stdout and "ready" in health.stdout


def test_an_unknown_job_exits_1_with_the_servers_message(served):
    done = quorractl(served.url, "get", str(uuid.uuid4()), "--json")
    assert (done.returncode, done.stdout) == (1, "") and "404 not_found" in done.stderr


def test_a_rejected_job_exits_1_naming_each_field(served):
    done = quorractl(served.url, "submit", "email_send", "--priority", "99999")
    assert done.returncode == 1 and "400 invalid_argument" in done.stderr and "priority" in done.stderr
    assert served.store.queue_counts() == []


def test_a_wrong_api_key_exits_1(served):
    done = quorractl(served.url, "queues", key="wrong")
    assert done.returncode == 1 and "401 unauthenticated" in done.stderr


def test_usage_errors_exit_2(served):
    assert quorractl(served.url, "list", "--bogus").returncode == 2
    assert quorractl(served.url, "submit", "t", "--delay", "soon").returncode == 2
    bad_payload = quorractl(served.url, "submit", "t", "--payload", "{nope")
    assert bad_payload.returncode == 2 and "not JSON" in bad_payload.stderr
    assert served.store.queue_counts() == []


def test_a_server_that_is_down_exits_3_with_one_line():
    done = quorractl(f"http://127.0.0.1:{free_port()}", "queues")
    assert done.returncode == 3 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "cannot reach" in done.stderr


def test_help_and_version(served):
    assert quorractl(served.url, "-h").stdout.startswith("Usage: quorractl")
    assert "quorractl, version" in quorractl(served.url, "--version").stdout
