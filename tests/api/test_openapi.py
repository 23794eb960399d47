"""/openapi.json describes every route; schemathesis checks the app against it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading

import pytest
import schemathesis.specs.openapi.checks  # noqa: F401 - registers the OpenAPI checks in CHECKS
from schemathesis.checks import CHECKS
from werkzeug.serving import make_server

from quorra.api import create_app
from tests.conftest import REPO, TEST_API_KEY

EXAMPLES_PER_OPERATION = 5
# Every registered check. `--checks all` would also turn on max_response_time (10 s), but time
# is measured in bench/, never asserted in a test: a busy machine is slow, not wrong.
EVERY_CHECK_BUT_TIMING = CHECKS.get_all_names()


def test_openapi_describes_every_route_and_method(app, client):
    spec = client.get("/openapi.json").get_json()

    assert spec["openapi"].startswith("3.1")
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("dashboard.") and rule.rule != "/":
            continue  # pages and forms for browsers; the document names the dashboard's entry point
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        assert path in spec["paths"], path
        documented = {method.upper() for method in spec["paths"][path]}
        assert rule.methods - {"HEAD", "OPTIONS"} <= documented, path


def test_every_v1_operation_requires_the_api_key_and_the_public_ones_do_not(sqlite_client):
    spec = sqlite_client.get("/openapi.json").get_json()

    assert spec["security"] == [{"ApiKey": []}, {"BearerJwt": []}]
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            assert ("security" in operation) == (not path.startswith("/v1/")), path


@pytest.fixture
def served_app(settings, store, notifier):
    """The real Flask app behind a real HTTP server (werkzeug's, threaded) on a free port."""
    app = create_app(settings, store=store, notifier=notifier)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.mark.timeout(900)  # about 20 s of CPU, but minutes of wall time on a loaded 2-core machine
def test_the_api_conforms_to_its_openapi_description_under_the_schemathesis_checks(served_app, tmp_path):
    # Every check but timing, every phase (coverage, fuzzing, stateful), a few examples per operation.
    # The hooks module drops made-up list cursors, which no schema can tell from real ones.
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "run", f"{served_app}/openapi.json"),
        *("--checks", ",".join(EVERY_CHECK_BUT_TIMING), "--seed", "20261201"),
        *("--max-examples", str(EXAMPLES_PER_OPERATION)),
        *("-H", f"X-API-Key: {TEST_API_KEY}", "--auth", f"ops:{TEST_API_KEY}", "--no-color"),
        *("--generation-database", "none", "--request-timeout", "60"),  # generous: a busy machine is slow
    ]
    environment = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.api.schemathesis_hooks", "PYTHONPATH": str(REPO)}

    run = subprocess.run(
        command, check=False, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600
    )

    report = _without_long_lines(run.stdout + run.stderr)
    assert run.returncode == 0, report  # any failure or error; warnings (missing test data) pass


def _without_long_lines(output: str) -> str:
    """Schemathesis prints whole request bodies (a 1,000-job batch): keep the report readable."""
    return "\n".join(line if len(line) < 2000 else line[:2000] + " ..." for line in output.splitlines())
