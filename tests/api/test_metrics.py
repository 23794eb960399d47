"""/metrics: the counters the API increments, the scrape-time queue gauges, HTTP request
metrics grouped by URL rule; and a scrape that still answers while the database is down."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from quorra.api import create_app
from quorra.api.services import services
from quorra.config import Settings
from quorra.metrics import QueueCollector
from quorra.store import Store, utcnow
from tests.api.conftest import AUTH, RecordingNotifier, post_job
from tests.conftest import TEST_API_KEY, free_port
from tests.factories import make_job, spec


def scrape(client) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def sample(samples, name: str, **labels) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def queue() -> str:
    """A queue name of this test's own: the counters are process-wide."""
    return f"q{uuid.uuid4().hex[:12]}"


def test_jobs_created_counts_every_job_the_api_created(client, queue):
    post_job(client, {"type": "email_send", "payload": {}, "queue": queue})
    batch = {
        "jobs": [{"type": "email_send", "payload": {}, "queue": queue}, {"type": "sms", "payload": {}, "queue": queue}]
    }
    client.post("/v1/jobs/batch", json=batch, headers=AUTH)

    samples = scrape(client)

    assert sample(samples, "quorra_jobs_created_total", tenant="default", queue=queue, type="email_send") == 2
    assert sample(samples, "quorra_jobs_created_total", tenant="default", queue=queue, type="sms") == 1


def test_cancel_and_retry_are_counted(client, store, queue):
    job = make_job(store, queue=queue)
    client.post(f"/v1/jobs/{job.id}/cancel", headers=AUTH)
    client.post(f"/v1/jobs/{job.id}/retry", headers=AUTH)

    samples = scrape(client)

    assert sample(samples, "quorra_jobs_cancelled_total", tenant="default", queue=queue, type="email_send") == 1
    assert sample(samples, "quorra_jobs_retried_total", tenant="default", queue=queue, type="email_send") == 1


def test_queue_gauges_show_lengths_by_status_and_the_oldest_ready_age(client, store, queue):
    store.enqueue(spec(queue=queue), now=utcnow() - timedelta(hours=1))
    make_job(store, queue=queue)
    make_job(store, queue=queue, delay_seconds=600)
    store.cancel(make_job(store, queue=queue).id)

    samples = scrape(client)

    assert sample(samples, "quorra_job_queue_length", tenant="default", queue=queue, status="pending") == 3
    assert sample(samples, "quorra_job_queue_length", tenant="default", queue=queue, status="cancelled") == 1
    assert 3600 <= sample(samples, "quorra_queue_oldest_job_age_seconds", tenant="default", queue=queue) < 3600 + 300


def test_a_queue_with_nothing_ready_has_age_zero(client, store, queue):
    make_job(store, queue=queue, delay_seconds=600)

    assert sample(scrape(client), "quorra_queue_oldest_job_age_seconds", tenant="default", queue=queue) == 0


def test_http_requests_are_grouped_by_url_rule_not_raw_path(client, store):
    for _ in range(3):
        client.get(f"/v1/jobs/{make_job(store).id}", headers=AUTH)

    samples = scrape(client)

    routes = {
        dict(labels).get("route") for name, labels in samples if name == "quorra_http_request_duration_seconds_count"
    }
    assert "/v1/jobs/<uuid:job_id>" in routes
    assert not any(route and route.startswith("/v1/jobs/") and "<" not in route for route in routes)
    assert (
        sample(
            samples,
            "quorra_http_request_duration_seconds_count",
            method="GET",
            route="/v1/jobs/<uuid:job_id>",
            status="200",
        )
        == 3
    )


def test_only_one_metrics_route_is_registered(app):
    assert [rule.rule for rule in app.url_map.iter_rules() if rule.rule == "/metrics"] == ["/metrics"]


def test_the_scrape_answers_without_queue_gauges_when_the_database_is_down():
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/quorra"
    store = Store.from_url(url)
    app = create_app(Settings(database_url=url, api_keys=(TEST_API_KEY,)), store=store, notifier=RecordingNotifier())

    client = app.test_client()
    client.get("/healthz")

    samples = scrape(client)

    assert not [name for name, _ in samples if name.startswith(("quorra_job_queue_length", "quorra_queue_oldest"))]
    assert sample(samples, "quorra_http_request_total", method="GET", status="200") == 1
    store.close()


def test_queue_collector_reads_the_database_at_most_once_per_ttl(store, queue):
    make_job(store, queue=queue)
    cached, uncached = QueueCollector(store, ttl=3600), QueueCollector(store, ttl=0)
    first = lengths(cached)

    make_job(store, queue=queue)

    assert lengths(cached) == first == {(queue, "pending"): 1}
    assert lengths(uncached) == {(queue, "pending"): 2}


def lengths(collector: QueueCollector) -> dict[tuple[str, str], float]:
    [family] = [f for f in collector.collect() if f.name == "quorra_job_queue_length"]
    return {(s.labels["queue"], s.labels["status"]): s.value for s in family.samples}


def test_each_tenants_queue_of_one_name_is_its_own_series(client, queue):
    # Given two tenants' jobs in queues of the same name, submitted through the manager
    with client.application.app_context():
        manager = services().manager
        for tenant, count in (("acme", 2), ("globex", 1)):
            manager.enqueue_many([spec(queue=queue)] * count, tenant=tenant)

    samples = scrape(client)

    # Then the counters and the gauges count each tenant's queue apart
    for tenant, count in (("acme", 2), ("globex", 1)):
        assert sample(samples, "quorra_jobs_created_total", tenant=tenant, queue=queue, type="email_send") == count
        assert sample(samples, "quorra_job_queue_length", tenant=tenant, queue=queue, status="pending") == count
        assert sample(samples, "quorra_queue_oldest_job_age_seconds", tenant=tenant, queue=queue) is not None
    assert sample(samples, "quorra_job_queue_length", tenant="default", queue=queue, status="pending") is None
