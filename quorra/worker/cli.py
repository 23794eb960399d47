"""`quorra-worker` (and bin/quorra-worker): run a Worker with the handlers of the given
modules, or with the built-in examples when none is given. Flags win over the environment.
Exits 0 after SIGTERM/SIGINT, 2 on a configuration error (or a server refusing the key),
3 after QUORRA_WORKER_MAX_ABANDONED abandoned handler threads (restart it)."""

from __future__ import annotations

import os
import sys

import click

from quorra.config import Settings
from quorra.errors import InvalidConfig
from quorra.logs import configure_logging
from quorra.metrics_endpoint import serve_metrics
from quorra.worker.registry import HandlerRegistry
from quorra.worker.worker import Worker, WorkerRecycled

EXAMPLES_MODULE = "quorra.worker.examples"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--id", "worker_id", metavar="ID", help="worker id [QUORRA_WORKER_ID; default: host-pid]")
@click.option("--queues", "worker_queues", metavar="A,B", help="queues to lease from [QUORRA_WORKER_QUEUES; default]")
@click.option(
    "--max-jobs", "worker_max_jobs", type=int, metavar="N", help="jobs run at once [QUORRA_WORKER_MAX_JOBS; 5]"
)
@click.option(
    "--lease-ttl",
    "worker_lease_ttl_seconds",
    metavar="DURATION",
    help="lease TTL, e.g. 30s [QUORRA_WORKER_LEASE_TTL; 30s]",
)
@click.option("--grpc-addr", "grpc_addr", metavar="HOST:PORT", help="server [QUORRA_GRPC_ADDR; localhost:50051]")
@click.option(
    "--handlers",
    "worker_handlers",
    metavar="MODULES",
    help="comma-separated handler modules [QUORRA_WORKER_HANDLERS; the built-in examples]",
)
@click.option(
    "--shutdown-grace",
    "worker_shutdown_grace_seconds",
    metavar="DURATION",
    help="time for running jobs to finish on SIGTERM [QUORRA_WORKER_SHUTDOWN_GRACE; 25s]",
)
@click.version_option(package_name="quorra")
def main(**options: object) -> None:
    """Lease jobs from a Quorra server and run their handlers."""
    try:
        settings = Settings.from_env(**{name: value for name, value in options.items() if value is not None})
        configure_logging(settings, "worker")
        serve_metrics(settings)
        Worker(settings, load_handlers(settings.worker_handlers)).run()
    except InvalidConfig as exc:
        click.echo(f"quorra-worker: {exc.message}", err=True)
        sys.exit(2)
    except WorkerRecycled as exc:
        click.echo(f"quorra-worker: stopped to be restarted: {exc}", err=True)
        sys.exit(3)


def load_handlers(modules: tuple[str, ...]) -> HandlerRegistry:
    """The handlers of `modules` (importable from the current directory too, as with
    gunicorn), or the built-in examples."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    registry = HandlerRegistry()
    registry.include_modules(modules or (EXAMPLES_MODULE,))
    return registry


if __name__ == "__main__":
    main()
