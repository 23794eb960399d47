"""Redis stops in the middle of a run and comes back: no job is lost and leasing never
stops (wake-ups fall back to NOTIFY on PostgreSQL, to polling on SQLite)."""

from __future__ import annotations

import logging
import threading

import pytest
import requests

from quorra.api import create_app
from quorra.notify import make_notifier
from tests.conftest import TEST_API_KEY
from tests.rpc.support import running_server
from tests.worker.support import PrivateRedis, serving, wait_until

pytestmark = pytest.mark.redis


def test_jobs_keep_flowing_while_redis_is_down_and_after_it_returns(
    server_settings, store, tmp_path, make_worker, caplog
):
    caplog.set_level(logging.INFO, logger="quorra.notify")
    redis_server = PrivateRedis(tmp_path)
    redis_server.start()
    settings = server_settings.model_copy(update={"redis_url": redis_server.url})
    server_notifier, api_notifier = make_notifier(settings), make_notifier(settings)
    handled: list[str] = []
    lock = threading.Lock()

    def record(job):
        with lock:
            handled.append(job.id)

    try:
        with (
            running_server(settings, store, server_notifier) as (_, port),
            serving(create_app(settings, store=store, notifier=api_notifier)) as api_url,
        ):
            make_worker(port, {"email_send": record}, worker_queues=("default",), worker_max_jobs=4)

            def post_and_finish(count: int) -> list[str]:
                ids = [_post(api_url) for _ in range(count)]
                wait_until(
                    lambda: all(store.get_job(i).status.value == "succeeded" for i in ids),
                    timeout=30,
                    what="every job succeeded",
                )
                return ids

            before = post_and_finish(5)
            redis_server.stop()
            during = post_and_finish(10)
            redis_server.start()
            wait_until(
                lambda: api_notifier.health.is_up and server_notifier.health.is_up,
                timeout=30,
                what="both notifiers back on Redis",
            )
            after = post_and_finish(5)
    finally:
        api_notifier.close()
        redis_server.stop()

    everything = before + during + after
    assert sorted(handled) == sorted(everything)  # each job ran, and ran once
    assert all(store.get_job(i).attempts == 1 for i in everything)
    downs = [r for r in caplog.records if getattr(r, "event", None) == "notify.channel_down" and r.channel == "redis"]
    ups = [r for r in caplog.records if getattr(r, "event", None) == "notify.channel_up" and r.channel == "redis"]
    assert len(downs) == len(ups) == 2  # one warning, then one notice, from each of the two notifiers


def _post(api_url: str) -> str:
    response = requests.post(
        f"{api_url}/v1/jobs",
        json={"type": "email_send", "payload": {"to": "a@example.com"}},
        headers={"X-API-Key": TEST_API_KEY},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]
