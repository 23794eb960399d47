"""Access control through a real `quorra web` (gunicorn, two worker processes): a managed key
made and revoked by another process stops working in every worker within
QUORRA_KEY_CACHE_TTL; JWTs are accepted and refused with their reason; an action is audited
with the client's address and request id."""

from __future__ import annotations

import subprocess
import time

import pytest
import requests

from quorra.access import Role
from quorra.keys import KeySpec
from tests.api.test_server import AUTH, quorra, wait_until_healthy, web_env
from tests.conftest import free_port
from tests.factories import make_job
from tests.support.tokens import AUDIENCE, ISSUER, JWT_SECRET, hs256

CACHE_SECONDS = 1
REVOCATION_DEADLINE_SECONDS = 60  # generous: a loaded machine is slow, not wrong


@pytest.fixture
def web(database_url):
    port = free_port()
    env = web_env(
        database_url,
        port,
        QUORRA_KEY_CACHE_TTL=str(CACHE_SECONDS),
        QUORRA_JWT_SECRET=JWT_SECRET,
        QUORRA_JWT_ISSUER=ISSUER,
        QUORRA_JWT_AUDIENCE=AUDIENCE,
        # nobody reads the server's stderr while it runs: a full pipe would stall it
        QUORRA_LOG_LEVEL="warning",
    )
    process = quorra("web", env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, process)
        yield base
    finally:
        process.terminate()
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def test_a_key_revoked_by_another_process_is_refused_by_every_worker_within_the_cache_period(web, store):
    created = store.create_api_key(KeySpec(name="ci", role=Role.VIEWER), created_by="test")
    key = {"X-API-Key": created.secret}
    assert all(requests.get(f"{web}/v1/queues", headers=key).status_code == 200 for _ in range(6))

    store.revoke_api_key(created.key.id)  # this test's process, not the server's

    revoked_at = time.monotonic()
    refused_in_a_row, seen = 0, []
    while refused_in_a_row < 10:  # ten refusals in a row: every worker process has let it go
        assert time.monotonic() - revoked_at < REVOCATION_DEADLINE_SECONDS, f"a revoked key still works: {seen[-20:]}"
        seen.append(requests.get(f"{web}/v1/queues", headers=key, timeout=30).status_code)
        refused_in_a_row = refused_in_a_row + 1 if seen[-1] == 401 else 0
        time.sleep(0.05)


def test_jwts_over_the_real_server(web, store):
    job = make_job(store)
    token = hs256(sub="ops@example.com", role="operator")

    cancelled = requests.post(
        f"{web}/v1/jobs/{job.id}/cancel", headers={"Authorization": f"Bearer {token}", "X-Request-ID": "cancel-42"}
    )
    expired = requests.get(f"{web}/v1/jobs", headers={"Authorization": f"Bearer {hs256(exp=int(time.time()) - 60)}"})

    assert cancelled.status_code == 200
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]
    [entry] = requests.get(f"{web}/v1/audit", headers=AUTH).json()["entries"]
    assert (entry["actor"], entry["action"], entry["target"]) == ("jwt:ops@example.com", "job.cancel", job.id)
    assert (entry["remote_addr"], entry["request_id"]) == ("127.0.0.1", "cancel-42")
