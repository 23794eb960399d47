"""/metrics (no API key): Prometheus text for the whole deployment.

With PROMETHEUS_MULTIPROC_DIR set (``make run``), the app's own registry holds a
MultiProcessCollector, which adds up the samples that every process (web workers, gRPC
server, scheduler) writes to that directory. Without it, the process's default registry. Either
way the queue gauges are computed here at scrape time (``QueueCollector``). The HTTP request
metrics keep the names, labels and help texts prometheus-flask-exporter gives them
(``quorra_http_request_*``, labelled by URL rule, not raw path; ``quorra_exporter_info`` still
comes from it), but are counted by ``HttpMetrics``: its hooks cost a third of the exporter's,
which looked every label child up by keyword on every request.
"""

from __future__ import annotations

from timeit import default_timer

from flask import Flask, Response, g, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
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
    exporter = http_metrics_exporter(http_registry)
    exporter.info("quorra_exporter_info", "Information about the Prometheus Flask exporter", version=exporter.version)
    HttpMetrics(http_registry).init_app(app)
    queues = QueueCollector(store, ttl=QUEUE_STATS_TTL_SECONDS, max_queues=max_queues)
    scrape = scrape_registry(http_registry, queues)
    app.add_url_rule("/metrics", "metrics", lambda: _exposition(scrape), methods=["GET"])


def http_metrics_exporter(registry: CollectorRegistry) -> PrometheusMetrics:
    """The exporter, for its info gauge. path=None: it must not add a /metrics route of its
    own; no defaults: HttpMetrics counts the requests. Each app gets its own registry, so
    tests may build many apps."""
    exporter = GunicornInternalPrometheusMetrics if multiprocess_dir() else PrometheusMetrics
    return exporter.for_app_factory(path=None, registry=registry, export_defaults=False)


class HttpMetrics:
    """quorra_http_request_duration_seconds {method, route, status},
    quorra_http_request_total {method, status} and quorra_http_request_exceptions_total
    {method, status}, as prometheus-flask-exporter declares them. The label children are kept
    per (method, route, status), which are bounded: the HTTP methods, the URL rules and the
    statuses. A made-up method (answered 405) is not counted, or anyone could grow the label
    set without bound."""

    def __init__(self, registry: CollectorRegistry):
        self.duration = Histogram(
            "quorra_http_request_duration_seconds",
            "Flask HTTP request duration in seconds",
            ("method", "route", "status"),
            registry=registry,
        )
        self.total = Counter(
            "quorra_http_request_total", "Total number of HTTP requests", ("method", "status"), registry=registry
        )
        self.exceptions = Counter(
            "quorra_http_request_exceptions_total",
            "Total number of HTTP requests which resulted in an exception",
            ("method", "status"),
            registry=registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Histogram, Counter]] = {}

    def init_app(self, app: Flask) -> None:
        app.before_request(self._start)
        app.after_request(self._after)
        app.teardown_request(self._teardown)

    @staticmethod
    def _start() -> None:
        g.metrics_started_at = default_timer()

    def _after(self, response: Response) -> Response:
        self._observe(request._get_current_object(), response.status_code)
        return response

    def _teardown(self, exc: BaseException | None = None) -> None:
        """An exception that escaped the error handlers: counted as a 500."""
        if exc is not None and request.method in HTTP_METHODS:
            self.exceptions.labels(request.method, 500).inc()
            self._observe(request._get_current_object(), 500)

    def _observe(self, req, status: int) -> None:
        started_at = g.pop("metrics_started_at", None)
        if started_at is None or req.method not in HTTP_METHODS:
            return  # counted already (an exception after the response was made), or made up
        key = (req.method, route(req), status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.duration.labels(*key), self.total.labels(key[0], status))
        children[0].observe(max(default_timer() - started_at, 0.0))
        children[1].inc()


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
