"""A process's own `/metrics` endpoint (QUORRA_METRICS_ADDR), for the processes that have no
HTTP server of their own: `quorra grpc`, `quorra scheduler` and `quorra-worker`.

prometheus_client's multi-process mode adds up processes through files in one directory,
so it only works among processes that share a filesystem. Containers and pods share none:
there each process serves what it counted itself (the default registry: its own samples, and
the process_* figures) on a port of its own, and Prometheus scrapes every one of them and
adds them up with `sum` (deployments/prometheus.yml). `quorra web` always serves /metrics on
its own HTTP port and ignores this setting.
"""

from __future__ import annotations

import logging

from quorra.config import Settings, parse_address
from quorra.errors import InvalidConfig

logger = logging.getLogger(__name__)


def serve_metrics(settings: Settings) -> tuple[str, int] | None:
    """Serve the default registry on QUORRA_METRICS_ADDR from a daemon thread; the bound
    (host, port), or None when the setting is unset. InvalidConfig when the port is taken."""
    if settings.metrics_addr is None:
        return None
    from prometheus_client import start_http_server

    host, port = parse_address(settings.metrics_addr)
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as exc:
        raise InvalidConfig(
            f"invalid configuration:\n  QUORRA_METRICS_ADDR: cannot listen on {settings.metrics_addr}: {exc.strerror}"
        ) from None
    bound = server.server_address[1]
    logger.info(
        "metrics endpoint listening",
        extra={"event": "metrics.listening", "host": host, "port": bound},
    )
    return host, bound
