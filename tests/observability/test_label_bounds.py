"""Label values that a client controls cannot grow the metrics without bound: made-up HTTP
methods and paths, gRPC methods the server does not have, and queue and type names (capped,
the rest counted as `other`); nor can queue names grow the dashboard page without bound."""

from __future__ import annotations

import base64
import re

import grpc
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from quorra import metrics
from quorra.api import create_app
from quorra.api.services import services
from quorra.config import Settings
from quorra.dashboard.pages import QUEUES_PER_PAGE
from quorra.notify import PollingNotifier
from quorra.store import Store
from tests import factories
from tests.conftest import TEST_API_KEY
from tests.rpc.support import AUTH, refusal, running_server

AUTH_HEADERS = {"X-API-Key": TEST_API_KEY}
HTTP_METRICS = ("quorra_http_request_total", "quorra_http_request_duration_seconds_count")


def http_label_values(client) -> dict[str, set[str]]:
    """label -> the values it takes in the HTTP metrics of one scrape."""
    text = client.get("/metrics").get_data(as_text=True)
    values: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in HTTP_METRICS:
                for label, value in sample.labels.items():
                    values.setdefault(label, set()).add(value)
    return values


def test_made_up_http_methods_and_paths_add_no_series(sqlite_url):
    store, notifier = Store.from_url(sqlite_url), PollingNotifier(1.0)
    client = create_app(
        Settings(database_url=sqlite_url, api_keys=(TEST_API_KEY,)), store=store, notifier=notifier
    ).test_client()

    answers = [client.open("/healthz", method=f"MADEUP{n}").status_code for n in range(3)]
    answers += [client.get(f"/no/such/path/{n}").status_code for n in range(3)]
    answers.append(client.delete("/healthz").status_code)
    labels = http_label_values(client)
    notifier.close()
    store.close()

    assert answers == [405] * 3 + [401] * 3 + [405]  # no key: an unknown route is a 401
    assert labels["method"] == {"GET", "DELETE"}  # a real method is still counted, even when refused
    assert labels["route"] == {"<unmatched>"}


def test_calls_to_grpc_methods_the_server_lacks_add_no_series(sqlite_url):
    unknown = "/quorra.v1.WorkerService/NoSuchMethod"
    store = Store.from_url(sqlite_url)
    settings = Settings(database_url=sqlite_url, api_keys=(TEST_API_KEY,))
    with (
        running_server(settings, store, PollingNotifier(1.0)) as (_, port),
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        error = refusal(channel.unary_unary(unknown), b"", metadata=AUTH, timeout=10)
    store.close()

    assert error.code() is grpc.StatusCode.UNIMPLEMENTED
    counted = {
        sample.labels.get("method")
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name.startswith("quorra_grpc_")
    }
    assert unknown not in counted


@pytest.fixture
def capped_app(sqlite_url):
    """An app whose process caps queue labels at 5 and type labels at 3, as `quorra web`
    does from QUORRA_METRICS_MAX_QUEUES and QUORRA_METRICS_MAX_JOB_TYPES."""
    store, notifier = Store.from_url(sqlite_url), PollingNotifier(1.0)
    settings = Settings(
        database_url=sqlite_url, api_keys=(TEST_API_KEY,), metrics_max_queues=5, metrics_max_job_types=3
    )
    metrics.limit_labels(settings.metrics_max_queues, settings.metrics_max_job_types)
    yield create_app(settings, store=store, notifier=notifier), store
    metrics.limit_labels(None, None)
    notifier.close()
    store.close()


def label_values(text: str, metric: str, label: str) -> dict[str, float]:
    """label value -> the sum of `metric`'s samples that carry it."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == metric and label in sample.labels:
                values[sample.labels[label]] = values.get(sample.labels[label], 0.0) + sample.value
    return values


def test_made_up_queue_and_type_names_are_counted_as_other_beyond_the_cap(capped_app):
    app, _ = capped_app
    client = app.test_client()
    text_before = client.get("/metrics").get_data(as_text=True)
    queues_before = label_values(text_before, "quorra_jobs_created_total", "queue")
    types_before = label_values(text_before, "quorra_jobs_created_total", "type")

    jobs = [{"type": f"type-{n % 10}", "payload": {}, "queue": f"made-up-{n}"} for n in range(2000)]
    for first in range(0, len(jobs), 1000):
        response = client.post("/v1/jobs/batch", json={"jobs": jobs[first : first + 1000]}, headers=AUTH_HEADERS)
        assert response.status_code == 201
    text = client.get("/metrics").get_data(as_text=True)

    queues = label_values(text, "quorra_jobs_created_total", "queue")
    types = label_values(text, "quorra_jobs_created_total", "type")
    # (series of earlier tests in this process may be there too: look at what this one counted)
    assert _grown(queues, queues_before) == {f"made-up-{n}" for n in range(5)} | {"other"}
    assert queues["other"] - queues_before.get("other", 0.0) == 1995
    assert _grown(types, types_before) == {"type-0", "type-1", "type-2", "other"}
    assert len(text.encode()) < 200_000  # 2,000 queues' worth of series would be several MB


def _grown(after: dict[str, float], before: dict[str, float]) -> set[str]:
    return {label for label, value in after.items() if value > before.get(label, 0.0)}


def test_the_queue_gauges_name_the_largest_queues_and_add_up_the_rest(capped_app):
    app, store = capped_app
    for n in range(40):
        factories.make_job(store, queue=f"small-{n}")
    for _ in range(3):
        factories.make_job(store, queue="big")

    text = app.test_client().get("/metrics").get_data(as_text=True)
    lengths = label_values(text, "quorra_job_queue_length", "queue")
    ages = label_values(text, "quorra_queue_oldest_job_age_seconds", "queue")

    assert len(lengths) == 6 and "big" in lengths and lengths["big"] == 3
    assert sum(lengths.values()) == 43
    assert lengths["other"] == 43 - 3 - 4  # the 4 other named queues hold one job each
    assert set(ages) == set(lengths)


def test_the_dashboard_pages_its_queue_table(capped_app):
    app, store = capped_app
    store.enqueue_many([factories.spec(queue=f"queue-{n:04d}") for n in range(2 * QUEUES_PER_PAGE + 7)])
    client = app.test_client()
    auth = {"Authorization": "Basic " + base64.b64encode(f"ops:{TEST_API_KEY}".encode()).decode()}

    first = client.get("/", headers=auth).get_data(as_text=True)
    last = client.get("/?queue_page=3", headers=auth).get_data(as_text=True)
    beyond = client.get("/?queue_page=99", headers=auth).get_data(as_text=True)
    nonsense = client.get("/?queue_page=x", headers=auth)

    # the metrics' cap on queue labels (5 here) leaves the dashboard's table whole, 50 a page
    assert len(set(re.findall(r'data-queue="(queue-\d+)"', first))) == QUEUES_PER_PAGE
    assert 'data-queue="queue-0000"' in first and 'data-queue="queue-0050"' not in first
    assert 'href="?queue_page=2"' in first
    assert set(re.findall(r'data-queue="(queue-\d+)"', last)) == {f"queue-{n:04d}" for n in range(100, 107)}
    assert set(re.findall(r'data-queue="(queue-\d+)"', beyond)) == set(re.findall(r'data-queue="(queue-\d+)"', last))
    assert nonsense.status_code == 200


def test_tenants_past_the_cap_are_counted_as_other_too(capped_app):
    # Given the cap of 5 queues, and 20 tenants each submitting to a queue "mail"
    app, _ = capped_app
    with app.app_context():
        manager = services().manager
        for n in range(20):
            manager.enqueue(factories.spec(queue="mail"), tenant=f"tenant-{n:02d}")
    text = app.test_client().get("/metrics").get_data(as_text=True)

    # Then at most 5 (tenant, queue) pairs keep their names; the rest are (other, other)
    tenants = label_values(text, "quorra_jobs_created_total", "tenant")
    grown = {tenant for tenant in tenants if tenant.startswith("tenant-")}
    assert len(grown) <= 5 and tenants["other"] >= 15
    lengths = label_values(text, "quorra_job_queue_length", "tenant")
    assert len([tenant for tenant in lengths if tenant.startswith("tenant-")]) == 5 and lengths["other"] == 15
