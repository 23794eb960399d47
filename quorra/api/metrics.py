"""/metrics (no API key): Prometheus text for the whole deployment.

With PROMETHEUS_MULTIPROC_DIR set (``make run``), the app's own registry holds a
MultiProcessCollector, which adds up the samples that every process (web workers, gRPC
server, scheduler) writes to that directory. Without it, the process's default registry. Either
way the queue gauges are computed here at scrape time (``QueueCollector``), and HTTP
request metrics come from prometheus-flask-exporter, labelled by URL rule, not raw path.
"""

from __future__ import annotations

from flask import Flask, Response, request
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_flask_exporter import PrometheusMetrics
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

from quorra.api.request_context import route
from quorra.config import multiprocess_dir
from quorra.metrics import QueueCollector
from quorra.store import Store

QUEUE_STATS_TTL_SECONDS = 2.0
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def register_metrics(app: Flask, store: Store, max_queues: int | None = None) -> None:
    """`max_queues`: the queue gauges name the largest queues only, the rest as `other`."""
    http_registry = CollectorRegistry()
    http_metrics_exporter(http_registry).init_app(app)
    app.before_request(_skip_made_up_methods)
    queues = QueueCollector(store, ttl=QUEUE_STATS_TTL_SECONDS, max_queues=max_queues)
    scrape = scrape_registry(http_registry, queues)
    app.add_url_rule("/metrics", "metrics", lambda: _exposition(scrape), methods=["GET"])


def http_metrics_exporter(registry: CollectorRegistry) -> PrometheusMetrics:
    """quorra_http_request_* metrics. path=None: the exporter must not add a /metrics route
    of its own. Each app gets its own registry, so tests may build many apps."""
    exporter = GunicornInternalPrometheusMetrics if multiprocess_dir() else PrometheusMetrics
    return exporter.for_app_factory(path=None, registry=registry, group_by=route, defaults_prefix="quorra")


def _skip_made_up_methods() -> None:
    """A client may send any method name (answered 405); counting it would give it a series
    of its own, so anyone could grow the label set without bound."""
    if request.method not in HTTP_METHODS:
        request.prom_do_not_track = True  # prometheus-flask-exporter's opt-out


def scrape_registry(http_registry: CollectorRegistry, queues: QueueCollector) -> CollectorRegistry:
    scrape = CollectorRegistry()
    if multiprocess_dir():
        MultiProcessCollector(scrape)  # every process's samples, the HTTP ones included
    else:
        scrape.register(REGISTRY)
        scrape.register(http_registry)
    scrape.register(queues)
    return scrape


def _exposition(registry: CollectorRegistry) -> Response:
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
