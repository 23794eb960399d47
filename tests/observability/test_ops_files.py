"""deployments/prometheus-local.yml and deployments/grafana/quorra.json: well formed, scraping the
web's /metrics, and a dashboard whose every query names only Quorra metrics. That those
metrics really are on /metrics is checked against a real deployment in
test_metrics_end_to_end.py."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from tests.conftest import REPO

PROMETHEUS = REPO / "deployments" / "prometheus-local.yml"
DASHBOARD = REPO / "deployments" / "grafana" / "quorra.json"

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR_OR_RANGE = re.compile(r"\{[^}]*\}|\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"\b[A-Za-z_:][A-Za-z0-9_:]*\b(?!\s*\()")  # a name that is not a function call
_KEYWORDS = {"and", "or", "unless", "bool", "offset"}
_LABEL_VALUES = re.compile(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (strings, selectors, ranges, groupings and
    function names removed; what is left are metric names)."""
    bare = _GROUPING.sub(" ", _SELECTOR_OR_RANGE.sub(" ", _STRING.sub('""', expr)))
    return set(_NAME.findall(bare)) - _KEYWORDS


def panel_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def dashboard_metric_names(dashboard: dict[str, Any]) -> set[str]:
    names = {name for expr in panel_exprs(dashboard) for name in metric_names(expr)}
    for variable in dashboard["templating"]["list"]:
        names |= set(_LABEL_VALUES.findall(variable.get("definition", "")))
    return names


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def test_prometheus_scrapes_the_web_metrics_endpoint_on_port_8080():
    config = yaml.safe_load(PROMETHEUS.read_text())

    [job] = config["scrape_configs"]
    assert (job["job_name"], job["metrics_path"]) == ("quorra", "/metrics")
    assert [target for group in job["static_configs"] for target in group["targets"]] == ["localhost:8080"]


def test_the_dashboard_has_a_prometheus_datasource_variable_that_every_query_uses():
    dashboard = load_dashboard()

    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    uses = [panel["datasource"] for panel in dashboard["panels"]]
    uses += [target["datasource"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert uses and all(use == {"type": "prometheus", "uid": "${datasource}"} for use in uses)


def test_the_dashboard_panels_are_laid_out_with_unique_ids():
    panels = load_dashboard()["panels"]

    assert len({panel["id"] for panel in panels}) == len(panels)
    assert all({"x", "y", "w", "h"} <= panel["gridPos"].keys() and panel["targets"] for panel in panels)


def test_the_dashboard_has_the_goquorra_panels_and_the_percentiles():
    dashboard = load_dashboard()
    by_title = {panel["title"]: [target["expr"] for target in panel["targets"]] for panel in dashboard["panels"]}

    assert {
        "Throughput",
        "Queue depth",
        "Failure rate",
        "DLQ growth",
        "Oldest ready job",
        "Lease expiries",
        "gRPC errors",
        "HTTP errors",
    } <= by_title.keys()
    assert any("rate(quorra_jobs_processed_total" in expr for expr in by_title["Throughput"])
    assert any('quorra_job_queue_length{status="pending"' in expr for expr in by_title["Queue depth"])
    assert any("quorra_jobs_dead_total" in expr and "increase(" in expr for expr in by_title["DLQ growth"])
    for histogram in ("quorra_job_wait_seconds_bucket", "quorra_job_duration_seconds_bucket"):
        quantiles = {expr.split(",")[0] for exprs in by_title.values() for expr in exprs if histogram in expr}
        assert quantiles == {f"histogram_quantile({q}" for q in ("0.5", "0.95", "0.99")}, histogram


def test_every_dashboard_query_reads_only_quorra_metrics():
    dashboard = load_dashboard()

    for expr in panel_exprs(dashboard):
        names = metric_names(expr)
        assert names and all(name.startswith("quorra_") for name in names), (expr, names)
    assert all(name.startswith("quorra_") for name in dashboard_metric_names(dashboard))


def test_metric_names_ignores_functions_labels_strings_and_ranges():
    expr = 'histogram_quantile(0.95, sum by (le, route) (rate(a_b_bucket{x=~"c_d|e"}[5m]))) / sum(rate(f_total[1h]))'

    assert metric_names(expr) == {"a_b_bucket", "f_total"}
