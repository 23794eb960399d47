"""`quorra`: server-side administration and the long-running server processes.

    quorra migrate              upgrade the schema to the latest revision
    quorra migrate --downgrade base   drop back to a revision (`base`: empty)
    quorra web                  the REST API under gunicorn
    quorra grpc                 the worker protocol (gRPC)
    quorra scheduler            reaper, wake-ups, pruning (one leader at a time)
    quorra worker [OPTIONS]     the same as `quorra-worker [OPTIONS]` (one entry point for images)
    quorra keys create|list|revoke   managed API keys (quorra/cli/keys.py)

Settings come from the environment (see README); a bad value exits 2 with a message
naming every bad variable.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from quorra.cli.keys import keys
from quorra.config import Settings, multiprocess_dir, prepare_multiprocess_dir
from quorra.errors import InvalidConfig, QuorraError
from quorra.logs import configure_logging


def load_settings(role: str) -> Settings:
    try:
        settings = Settings.from_env()
    except InvalidConfig as exc:
        click.echo(exc.message, err=True)
        sys.exit(2)
    configure_logging(settings, role)
    return settings


def server_settings(role: str) -> Settings:
    """load_settings, and the PROMETHEUS_MULTIPROC_DIR made if missing: before the server's
    modules are imported, since declaring a metric opens a file there. Then the label caps."""
    settings = load_settings(role)
    try:
        prepare_multiprocess_dir()
    except InvalidConfig as exc:
        click.echo(exc.message, err=True)
        sys.exit(2)
    with needs_extra("server"):
        from quorra import metrics

    metrics.limit_labels(settings.metrics_max_queues, settings.metrics_max_job_types)
    return settings


@contextmanager
def needs_extra(extra: str) -> Iterator[None]:
    """A library of `quorra[extra]` missing (plain `pip install quorra` has only the core):
    one line naming the extra to install, exit 2, instead of a traceback."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "quorra").partition(".")[0] == "quorra":
            raise  # our own module: a bug, not a missing extra
        click.echo(f"quorra: {exc.name} is not installed: pip install 'quorra[{extra}]'", err=True)
        sys.exit(2)


def serve_own_metrics(settings: Settings) -> None:
    """QUORRA_METRICS_ADDR: this process's own /metrics, for hosts sharing no metrics directory."""
    from quorra.metrics_endpoint import serve_metrics

    try:
        serve_metrics(settings)
    except InvalidConfig as exc:
        click.echo(exc.message, err=True)
        sys.exit(2)


PRIVATE_METRICS_PREFIX = "quorra-web-metrics-"


def use_private_multiprocess_dir() -> str:
    """`quorra web` without PROMETHEUS_MULTIPROC_DIR: a directory of its own, so that /metrics
    adds up every gunicorn worker instead of answering from whichever worker took the scrape.
    Made fresh at start (directories left by runs that were killed are removed), removed at
    exit by the master. gRPC and the scheduler join only through a directory set by the operator."""
    _remove_abandoned_private_dirs()
    path = tempfile.mkdtemp(prefix=f"{PRIVATE_METRICS_PREFIX}{os.getpid()}-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path  # prometheus_client reads it at import
    master = os.getpid()
    atexit.register(lambda: os.getpid() == master and shutil.rmtree(path, ignore_errors=True))  # not in workers
    return path


def _remove_abandoned_private_dirs() -> None:
    for path in Path(tempfile.gettempdir()).glob(f"{PRIVATE_METRICS_PREFIX}*-*"):
        owner = path.name.removeprefix(PRIVATE_METRICS_PREFIX).split("-", 1)[0]
        if owner.isdigit() and not _is_running(int(owner)):
            shutil.rmtree(path, ignore_errors=True)


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def fail(exc: QuorraError) -> None:
    click.echo(f"quorra: {exc.message}", err=True)
    sys.exit(1)


@click.group()
@click.version_option(package_name="quorra")
def main() -> None:
    """Quorra job queue server."""


@main.command()
@click.option(
    "--downgrade",
    "downgrade_to",
    metavar="REVISION",
    help="go back to REVISION ('base' empties the schema) instead of upgrading",
)
def migrate(downgrade_to: str | None) -> None:
    """Upgrade the schema of DATABASE_URL to the latest revision."""
    with needs_extra("server"):
        from quorra import migrate as migrations
        from quorra.db import make_engine

    settings = load_settings("cli")
    engine = make_engine(settings.database_url)
    try:
        if downgrade_to:
            migrations.downgrade(engine, downgrade_to)
        else:
            migrations.upgrade(engine)
        click.echo(f"schema at {migrations.current_revision(engine) or 'base'} ({_safe_url(settings)})")
    except QuorraError as exc:
        fail(exc)
    finally:
        engine.dispose()


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.database_url).render_as_string(hide_password=True)


@main.command()
def web() -> None:
    """Serve the REST API (gunicorn, gthread workers) on QUORRA_HTTP_ADDR."""
    if multiprocess_dir() is None:
        use_private_multiprocess_dir()
    settings = server_settings("web")
    with needs_extra("server"):
        from quorra.api.server import serve

    serve(settings)


@main.command("grpc")
def grpc_command() -> None:
    """Serve the worker protocol on QUORRA_GRPC_ADDR."""
    settings = server_settings("grpc")
    with needs_extra("server"):
        from quorra.rpc.server import serve
    serve_own_metrics(settings)
    serve(settings)


@main.command()
def scheduler() -> None:
    """Reap expired leases, wake workers for due jobs, prune old jobs."""
    settings = server_settings("scheduler")
    with needs_extra("server"):
        from quorra.scheduler import serve
    serve_own_metrics(settings)
    serve(settings)


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def worker(args: tuple[str, ...]) -> None:
    """Run a worker: the same as `quorra-worker` (see `quorra worker --help`)."""
    with needs_extra("worker"):
        from quorra.worker.cli import main as worker_main
    worker_main.main(args=list(args), prog_name="quorra worker")


main.add_command(keys)

if __name__ == "__main__":
    main()
