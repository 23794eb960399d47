"""The gRPC server over each backend, with raw generated stubs (no SDK)."""

from __future__ import annotations

import pytest

from quorra.notify import PollingNotifier
from tests.rpc.support import rpc_settings, running_server, stub_on


@pytest.fixture
def server_settings(settings):
    return rpc_settings(settings)


@pytest.fixture
def notifier(server_settings):
    """Shared by the test and the server, as if they were one process."""
    return PollingNotifier(server_settings.poll_interval_seconds)


@pytest.fixture
def server(server_settings, store, notifier):
    with running_server(server_settings, store, notifier) as (server, port):
        yield server, port


@pytest.fixture
def stub(server):
    with stub_on(server[1]) as stub:
        yield stub
