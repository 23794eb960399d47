"""Label values that a client controls cannot grow the metrics without bound: made-up HTTP
methods and paths, and gRPC methods the server does not have."""

from __future__ import annotations

import grpc
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from quorra.api import create_app
from quorra.config import Settings
from quorra.notify import PollingNotifier
from quorra.store import Store
from tests.conftest import TEST_API_KEY
from tests.rpc.support import AUTH, refusal, running_server

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

    assert answers == [405] * 3 + [404] * 3 + [405]
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
