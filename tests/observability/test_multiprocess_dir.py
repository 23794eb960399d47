"""PROMETHEUS_MULTIPROC_DIR at start: a missing directory is made by each server entry point
and by the worker (the end-to-end run starts web, grpc and scheduler on one that does not
exist yet; honcho starts the worker beside them); one that cannot be made stops the server
or the worker at once with a message naming the variable (exit code 2)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from quorra.cli.admin import PRIVATE_METRICS_PREFIX, use_private_multiprocess_dir
from quorra.config import prepare_multiprocess_dir
from quorra.errors import InvalidConfig
from tests.api.test_server import AUTH, quorra, wait_until_healthy, web_env
from tests.conftest import REPO, free_port
from tests.processes import LoggedProcess, clean_environ


@pytest.mark.parametrize("role", ["web", "grpc", "scheduler"])
def test_a_server_whose_metrics_directory_cannot_be_made_exits_2_naming_the_variable(role, tmp_path):
    (tmp_path / "a-file").write_text("")
    env = web_env(
        f"sqlite:///{tmp_path / 'q.db'}", free_port(), PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "a-file" / "x")
    )

    process = quorra(role, env=env)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 2
    assert "PROMETHEUS_MULTIPROC_DIR: cannot create" in stderr.decode()
    assert "Traceback" not in stderr.decode()


def test_plain_gunicorn_config_makes_the_missing_metrics_directory(sqlite_url, tmp_path):
    metrics_dir = tmp_path / "not" / "yet"
    env = web_env(sqlite_url, free_port(), PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))

    subprocess.run(
        [sys.executable, "-c", "import runpy; runpy.run_path('gunicorn.conf.py')"],
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=60,
    )

    assert metrics_dir.is_dir()


def test_quorra_worker_makes_the_missing_metrics_directory_before_declaring_its_metric(tmp_path):
    # Given a metrics directory that does not exist yet (a Procfile starts the worker beside
    # the servers that would make it, in no set order), and no server to lease from yet
    metrics_dir = tmp_path / "not" / "yet"
    env = clean_environ(
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), QUORRA_GRPC_ADDR=f"127.0.0.1:{free_port()}", QUORRA_LOG_FORMAT="json"
    )
    # When quorra-worker starts
    worker = LoggedProcess([_quorra_worker()], env)
    try:
        worker.wait_for("worker.started")
    finally:
        code = worker.stop()
    # Then it made the directory and ran (waiting for its server) until told to stop
    assert metrics_dir.is_dir()
    assert code == 0, worker.dump()[-2000:]


def test_quorra_worker_whose_metrics_directory_cannot_be_made_exits_2_naming_the_variable(tmp_path):
    (tmp_path / "a-file").write_text("")
    env = clean_environ(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "a-file" / "x"))

    done = subprocess.run([_quorra_worker()], env=env, capture_output=True, timeout=60, check=False)

    assert done.returncode == 2
    assert "PROMETHEUS_MULTIPROC_DIR: cannot create" in done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()


def test_importing_the_worker_sdk_does_not_need_the_metrics_directory(tmp_path):
    # An application imports quorra.worker (and its --help runs) whatever the variable says:
    # only a worker that starts declares its metric
    (tmp_path / "a-file").write_text("")
    env = clean_environ(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "a-file" / "x"))

    imported = subprocess.run(
        [sys.executable, "-c", "import quorra.worker"], env=env, capture_output=True, timeout=60, check=False
    )
    helped = subprocess.run([_quorra_worker(), "--help"], env=env, capture_output=True, timeout=60, check=False)

    assert imported.returncode == 0, imported.stderr.decode()[-2000:]
    assert helped.returncode == 0, helped.stderr.decode()[-2000:]


def _quorra_worker() -> str:
    return str(Path(sys.executable).parent / "quorra-worker")


def test_prepare_makes_the_directory_and_leaves_an_existing_one_as_it_is(tmp_path):
    metrics_dir = tmp_path / "a" / "b"

    made = prepare_multiprocess_dir({"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    (metrics_dir / "counter_1.db").write_bytes(b"kept")
    again = prepare_multiprocess_dir({"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})

    assert made == again == str(metrics_dir)
    assert (metrics_dir / "counter_1.db").read_bytes() == b"kept"  # wiping is `make run`'s job, not ours


def test_prepare_does_nothing_without_the_variable():
    assert prepare_multiprocess_dir({}) is None


def test_prepare_refuses_a_path_that_is_a_file(tmp_path):
    (tmp_path / "a-file").write_text("")

    with pytest.raises(InvalidConfig, match="PROMETHEUS_MULTIPROC_DIR: cannot create"):
        prepare_multiprocess_dir({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "a-file")})


def test_quorra_web_without_a_metrics_directory_adds_up_all_its_workers(sqlite_url):
    # Given `quorra web` with 2 gunicorn workers and no PROMETHEUS_MULTIPROC_DIR
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = quorra("web", env=web_env(sqlite_url, port, QUORRA_WEB_WORKERS="2"))
    try:
        wait_until_healthy(base, process)

        # When 20 jobs are created over fresh connections (spread over both workers)
        for n in range(20):
            requests.post(f"{base}/v1/jobs", json={"type": "count", "payload": {"n": n}}, headers=AUTH, timeout=10)

        # Then every scrape, whichever worker serves it, counts all 20
        counts = [_created(requests.get(f"{base}/metrics", timeout=10).text) for _ in range(8)]
        private_dirs = list(Path(tempfile.gettempdir()).glob(f"{PRIVATE_METRICS_PREFIX}{process.pid}-*"))
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)

    assert counts == [20.0] * 8
    assert len(private_dirs) == 1
    assert not private_dirs[0].exists()  # removed when the server stopped


def test_private_metrics_directories_of_dead_servers_are_removed_at_start(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # so that the teardown restores the variable as it was
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    dead_pid = _a_dead_pid()
    abandoned = tmp_path / f"{PRIVATE_METRICS_PREFIX}{dead_pid}-abc"
    abandoned.mkdir()
    (abandoned / "counter_1.db").write_bytes(b"old")
    live = tmp_path / f"{PRIVATE_METRICS_PREFIX}{os.getpid()}-def"
    live.mkdir()

    made = use_private_multiprocess_dir()

    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == made
    assert Path(made).is_dir() and not any(Path(made).iterdir())
    assert not abandoned.exists()
    assert live.exists()  # its server still runs


def _created(text: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "quorra_jobs_created_total" and sample.labels.get("type") == "count"
    )


def _a_dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid
