"""PROMETHEUS_MULTIPROC_DIR at start: a missing directory is made by each server entry point
(the end-to-end run starts web, grpc and scheduler on one that does not exist yet); one that
cannot be made stops the server at once with a message naming the variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from quorra.config import prepare_multiprocess_dir
from quorra.errors import InvalidConfig
from tests.api.test_server import quorra, web_env
from tests.conftest import REPO, free_port


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
