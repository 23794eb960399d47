"""/openapi.json describes every route; schemathesis checks the app against it."""

from __future__ import annotations

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from quorra.api import create_app
from quorra.api.openapi import spec
from quorra.config import Settings
from quorra.store import Store
from tests.api.conftest import AUTH, RecordingNotifier
from tests.conftest import TEST_API_KEY


def test_openapi_describes_every_route_and_method(app, client):
    spec = client.get("/openapi.json").get_json()

    assert spec["openapi"].startswith("3.1")
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        assert path in spec["paths"], path
        documented = {method.upper() for method in spec["paths"][path]}
        assert rule.methods - {"HEAD", "OPTIONS"} <= documented, path


def test_every_v1_operation_requires_the_api_key_and_the_public_ones_do_not(sqlite_client):
    spec = sqlite_client.get("/openapi.json").get_json()

    assert spec["security"] == [{"ApiKey": []}]
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            assert ("security" in operation) == (not path.startswith("/v1/")), path


@pytest.fixture
def api_schema(sqlite_url):
    store = Store.from_url(sqlite_url)
    notifier = RecordingNotifier()
    app = create_app(Settings(database_url=sqlite_url, api_keys=(TEST_API_KEY,)), store=store, notifier=notifier)
    yield schemathesis.openapi.from_wsgi("/openapi.json", app)
    notifier.close()
    store.close()


def _cases() -> list[tuple[str, str, GenerationMode]]:
    """Every operation with valid input; with invalid input too where it takes any."""
    cases = []
    for path, item in spec()["paths"].items():
        for method, operation in item.items():
            takes_input = "parameters" in operation or "requestBody" in operation
            modes = list(GenerationMode) if takes_input else [GenerationMode.POSITIVE]
            cases += [(method.upper(), path, mode) for mode in modes]
    return cases


CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]


@pytest.mark.parametrize(("method", "path", "mode"), _cases())
def test_the_api_conforms_to_its_openapi_description(api_schema, method, path, mode):
    # Each operation on its own: every one gets its share of examples, and a failure names it.
    @given(case=api_schema[path][method].as_strategy(generation_mode=mode))
    @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def conforms(case):
        case.call_and_validate(headers=AUTH, checks=CHECKS)

    conforms()
