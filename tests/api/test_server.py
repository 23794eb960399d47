"""`quorra web` for real: gunicorn with gthread workers in a subprocess, on a free port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, TEST_API_KEY, free_port

AUTH = {"X-API-Key": TEST_API_KEY}
START_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 60


def web_env(database_url: str, port: int, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("QUORRA_", "PROMETHEUS_")) and k != "REDIS_URL"}
    return {
        **keep,
        "DATABASE_URL": database_url,
        "QUORRA_HTTP_ADDR": f"127.0.0.1:{port}",
        "QUORRA_API_KEY": f"other-key,{TEST_API_KEY}",
        "QUORRA_WEB_WORKERS": "2",
        "QUORRA_WEB_THREADS": "2",
        "QUORRA_SHUTDOWN_GRACE": "5",
        "QUORRA_LOG_FORMAT": "json",
        **extra,
    }


def quorra(*args: str, env: dict[str, str], **kwargs) -> subprocess.Popen:
    command = [sys.executable, "-m", "quorra.cli.admin", *args]
    return subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def wait_until_healthy(base: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"quorra web exited early: {process.communicate()[1].decode()[-3000:]}")
        try:
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass  # not listening yet, or a worker still booting (the socket accepts before it)
        time.sleep(0.1)
    raise AssertionError("quorra web did not become healthy")


@pytest.fixture
def web(sqlite_url, tmp_path):
    """A running `quorra web` on a migrated SQLite file, in multi-process metrics mode."""
    port = free_port()
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = web_env(sqlite_url, port, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    process = quorra("web", env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, process)
        yield base, process, env
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.communicate(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


def stop(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=STOP_TIMEOUT_SECONDS)
    return process.returncode, stderr.decode()


def test_quorra_web_serves_jobs_and_stops_cleanly_on_sigterm(web):
    base, process, _ = web

    created = requests.post(f"{base}/v1/jobs", json={"type": "email_send", "payload": {"to": "a@b.c"}}, headers=AUTH)
    fetched = requests.get(f"{base}/v1/jobs/{created.json()['id']}", headers=AUTH)

    assert created.status_code == 201 and created.json()["status"] == "pending"
    assert fetched.status_code == 200 and fetched.json()["payload"] == {"to": "a@b.c"}
    assert fetched.headers["X-Request-ID"]
    code, stderr = stop(process)
    assert code == 0, stderr[-3000:]
    logged = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(line.get("event") == "job.enqueued" and line.get("request_id") for line in logged)


def test_a_chunked_body_over_the_limit_is_refused_by_the_real_server(web, tmp_path):
    base, _, _ = web

    def chunks():
        yield b'{"type": "t", "payload": {"pad": "'
        for _ in range(2048):
            yield b"x" * 1024  # 2 MiB in all, never announced in a Content-Length
        yield b'"}}'

    response = requests.post(f"{base}/v1/jobs", data=chunks(), headers={**AUTH, "Content-Type": "application/json"})

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert requests.get(f"{base}/v1/jobs", headers=AUTH).json()["jobs"] == []


def test_metrics_add_up_every_process_of_the_deployment(web):
    base, _, env = web
    for _ in range(3):
        requests.post(f"{base}/v1/jobs", json={"type": "resize", "payload": {}, "queue": "img"}, headers=AUTH)
    # Another process (as the gRPC server would) counts into the same directory.
    other = "from quorra import metrics; metrics.JOBS_LEASED.labels('default', 'img', 'resize').inc(2)"
    subprocess.run([sys.executable, "-c", other], env=env, check=True, timeout=30)

    samples = scrape(base)

    assert samples[("quorra_jobs_created_total", (("queue", "img"), ("tenant", "default"), ("type", "resize")))] == 3
    assert samples[("quorra_jobs_leased_total", (("queue", "img"), ("tenant", "default"), ("type", "resize")))] == 2
    assert samples[("quorra_job_queue_length", (("queue", "img"), ("status", "pending"), ("tenant", "default")))] == 3


def scrape(base: str) -> dict:
    text = requests.get(f"{base}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_quorra_web_refuses_an_unmigrated_database_and_says_how_to_fix_it(tmp_path):
    env = web_env(f"sqlite:///{tmp_path / 'empty.db'}", free_port())

    process = quorra("web", env=env)
    _, stderr = process.communicate(timeout=START_TIMEOUT_SECONDS)

    assert process.returncode == 1
    assert "quorra migrate" in stderr.decode()


def test_quorra_web_refuses_an_unreachable_database_and_says_why():
    env = web_env(f"postgresql://postgres@127.0.0.1:{free_port()}/quorra", free_port())

    process = quorra("web", env=env)
    _, stderr = process.communicate(timeout=START_TIMEOUT_SECONDS)

    assert process.returncode == 1
    assert "cannot be reached" in stderr.decode() and "Connection refused" in stderr.decode()


def test_gunicorn_conf_applies_the_same_settings_to_plain_gunicorn(tmp_path):
    env = web_env(f"sqlite:///{tmp_path / 'q.db'}", 8123, QUORRA_WEB_WORKERS="3", QUORRA_SHUTDOWN_GRACE="2.5")
    read = (
        "import json, runpy; ns = runpy.run_path('gunicorn.conf.py');"
        "from gunicorn.workers.gthread import ThreadWorker;"
        "print(json.dumps({k: ns[k] for k in ('bind', 'workers', 'threads', 'graceful_timeout',"
        " 'accesslog')} | {'hooks': [callable(ns[h]) for h in ('on_starting', 'child_exit', 'worker_exit')]}"
        " | {'gthread': issubclass(ns['worker_class'], ThreadWorker), 'queue': ns['worker_class'].limits.queue}))"
    )

    output = subprocess.run(
        [sys.executable, "-c", read], env=env, cwd=REPO, capture_output=True, check=True, timeout=30
    )

    assert json.loads(output.stdout.decode().splitlines()[-1]) == {
        "bind": ["127.0.0.1:8123"],
        "workers": 3,
        "threads": 2,
        "gthread": True,
        "queue": 64,
        "graceful_timeout": 3,
        "accesslog": None,
        "hooks": [True, True, True],
    }
    assert Path(REPO, "gunicorn.conf.py").exists()
