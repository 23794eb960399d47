"""`quorractl`: manage jobs from the command line, over the REST API only (quorra.client).

    quorractl submit email_send --payload '{"to": "a@b.c"}' --queue email --delay 5m
    quorractl get ID      quorractl wait ID      quorractl cancel ID      quorractl retry ID
    quorractl list --status dead --all           quorractl dlq retry --queue email
    quorractl queues      quorractl stats        quorractl health

Tables for people; ``--json`` (or ``-o json``) prints one JSON document on stdout and
nothing else. Exit codes: 0 done, 1 the server said no (its message on stderr), 2 usage
error, 3 the server cannot be reached. The server is QUORRA_URL (default
http://localhost:8080) and the key the first of QUORRA_API_KEY.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import click
from tabulate import tabulate

from quorra import __version__
from quorra.cli.schedules import schedules
from quorra.cli.webhooks import webhooks
from quorra.client import Client, Job, JobStatus, QuorraClientError, Unreachable, WaitTimeout
from quorra.client.models import DEV_API_KEY
from quorra.client.sync import DEFAULT_URL
from quorra.durations import parse_duration

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 3
ERROR_CHARS = 60  # last_error in a table: one line, cut to this
STATUSES = [status.value for status in JobStatus]


class Failure(click.ClickException):
    """An error line on stderr and an exit code: 1 refused, 3 unreachable."""

    def __init__(self, message: str, exit_code: int = EXIT_REFUSED):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class State:
    url: str = DEFAULT_URL
    api_key: str = DEV_API_KEY
    output: str = "table"
    _client: Client | None = field(default=None, repr=False)

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.url, self.api_key)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    @property
    def as_json(self) -> bool:
        return self.output == "json"


class QuorraGroup(click.Group):
    """Turns the client's exceptions into one line on stderr and the documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Unreachable as exc:
            raise Failure(exc.message, EXIT_UNREACHABLE) from None
        except QuorraClientError as exc:
            raise Failure(describe_error(exc)) from None


def describe_error(exc: QuorraClientError) -> str:
    lines = [str(exc)]
    for detail in exc.details if isinstance(exc.details, list) else []:
        if isinstance(detail, dict):
            lines.append(f"  {detail.get('field', '')}: {detail.get('message', '')}")
    return "\n".join(lines)


# -- options and parameters --------------------------------------------------------------------------


def _set_output(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.ensure_object(State).output = value


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(State).output = "json"


def output_options(command: Callable) -> Callable:
    """-o/--output and --json, taken before or after the command name."""
    command = click.option(
        "-o",
        "--output",
        type=click.Choice(["table", "json"]),
        expose_value=False,
        callback=_set_output,
        help="table (default) or json: one JSON document on stdout",
    )(command)
    return click.option(
        "--json", "as_json", is_flag=True, expose_value=False, callback=_set_json, help="same as -o json"
    )(command)


class Duration(click.ParamType):
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            return float(parse_duration(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Timestamp(click.ParamType):
    name = "timestamp"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 time such as 2026-01-31T09:00:00Z", param, ctx)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def read_payload(value: str) -> dict[str, Any]:
    """Inline JSON, @file.json, or - for standard input; a JSON object."""
    try:
        if value == "-":
            text = sys.stdin.read()
        elif value.startswith("@"):
            with open(value[1:], encoding="utf-8") as file:
                text = file.read()
        else:
            text = value
    except OSError as exc:
        raise click.BadParameter(f"cannot read {value[1:]}: {exc.strerror}", param_hint="--payload") from None
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--payload") from None
    if not isinstance(payload, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--payload")
    return payload


# -- printing -----------------------------------------------------------------------------------------


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return timestamp(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def timestamp(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def short_time(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def one_line(text: str | None, limit: int = ERROR_CHARS) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def print_table(rows: Iterable[Iterable[Any]], headers: list[str]) -> None:
    click.echo(tabulate(list(rows), headers=headers, tablefmt="simple", disable_numparse=True))


def job_document(job: Job) -> dict[str, Any]:
    return {name: (value.value if isinstance(value, JobStatus) else value) for name, value in asdict(job).items()}


def print_job(job: Job) -> None:
    rows = []
    for name, value in job_document(job).items():
        if isinstance(value, datetime):
            value = timestamp(value)
        elif isinstance(value, dict | list):
            value = json.dumps(value, ensure_ascii=False)
        elif isinstance(value, tuple):  # depends_on, dependants: job ids
            value = " ".join(value)
        rows.append((name, "" if value is None else value))
    print_table(rows, ["FIELD", "VALUE"])


JOB_COLUMNS = ["ID", "STATUS", "QUEUE", "TYPE", "ATTEMPTS", "CREATED", "LAST ERROR"]


def job_row(job: Job) -> list[Any]:
    attempts = f"{job.attempts}/{job.max_retries + 1}"
    return [
        job.id,
        job.status.value,
        job.queue,
        job.type,
        attempts,
        short_time(job.created_at),
        one_line(job.last_error),
    ]


# -- the group ----------------------------------------------------------------------------------------


@click.group(cls=QuorraGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="QUORRA_URL", default=DEFAULT_URL, show_default=True, help="Quorra's REST address")
@click.option("--api-key", envvar="QUORRA_API_KEY", default=DEV_API_KEY, help="API key (first of a comma list)")
@output_options
@click.version_option(__version__, "-V", "--version", prog_name="quorractl")
@click.pass_context
def main(ctx: click.Context, url: str, api_key: str) -> None:
    """Manage Quorra jobs over the REST API.

    Exit codes: 0 done, 1 the server said no, 2 usage error, 3 server unreachable.
    """
    state = ctx.ensure_object(State)
    state.url, state.api_key = url, _first_key(api_key)
    ctx.call_on_close(state.close)


def _first_key(value: str) -> str:
    return next((key.strip() for key in value.split(",") if key.strip()), DEV_API_KEY)


pass_state = click.make_pass_decorator(State)


def command(group: click.Group, name: str | None = None) -> Callable:
    """A subcommand with the output options, receiving the State first."""

    def decorate(function: Callable) -> click.Command:
        return group.command(name)(output_options(pass_state(function)))

    return decorate


# -- jobs ----------------------------------------------------------------------------------------------


@command(main)
@click.argument("job_type")
@click.option("--payload", default="{}", show_default=True, help="a JSON object, @file.json, or - for stdin")
@click.option("--queue", help="queue name [server default: default]")
@click.option("--priority", type=int, help="-1000 to 1000, higher runs first [server default: 0]")
@click.option("--delay", type=Duration(), help="wait this long before it may run: 30s, 5m, 2h, or seconds")
@click.option("--run-at", type=Timestamp(), help="run at this ISO 8601 time instead (UTC unless it says)")
@click.option("--max-retries", type=int, help="0 to 100 [server default: 3]")
@click.option("--timeout", "timeout_seconds", type=click.IntRange(1), help="seconds one attempt may run")
def submit(state: State, job_type: str, payload: str, run_at: datetime | None, **options: Any) -> None:
    """Submit a job of JOB_TYPE."""
    if run_at is not None and options["delay"] is not None:
        raise click.UsageError("give --delay or --run-at, not both")
    job = state.client.enqueue(job_type, read_payload(payload), run_at=run_at, **options)
    if state.as_json:
        print_json({"id": job.id, "status": job.status.value, "run_at": job.run_at})
    else:
        print_table([[job.id, job.status.value, short_time(job.run_at)]], ["ID", "STATUS", "RUN AT"])


enqueue = copy.copy(submit)
enqueue.hidden = True
enqueue.help = "Submit a job of JOB_TYPE (an alias of submit)."
main.add_command(enqueue, "enqueue")


@command(main)
@click.argument("job_id")
def get(state: State, job_id: str) -> None:
    """Show one job."""
    show_job(state, state.client.get(job_id))


def show_job(state: State, job: Job) -> None:
    if state.as_json:
        print_json(job_document(job))
    else:
        print_job(job)


def list_options(function: Callable) -> Callable:
    function = click.option("--all", "every", is_flag=True, help="every matching job (follows the cursor)")(function)
    function = click.option("--limit", type=click.IntRange(1), default=20, show_default=True)(function)
    function = click.option("--type", "job_type", help="only jobs of this type")(function)
    return click.option("--queue", help="only jobs of this queue")(function)


@command(main, "list")
@list_options
@click.option("--status", type=click.Choice(STATUSES), help="only jobs in this status")
def list_jobs(state: State, **filters: Any) -> None:
    """List jobs, newest first."""
    show_jobs(state, **filters)


def show_jobs(state: State, queue: str | None, status: str | None, job_type: str | None, limit: int, every: bool):
    jobs = list(state.client.list(queue=queue, status=status, type=job_type, limit=None if every else limit + 1))
    more = not every and len(jobs) > limit
    jobs = jobs if every else jobs[:limit]
    if state.as_json:
        print_json([job_document(job) for job in jobs])
        return
    print_table(map(job_row, jobs), JOB_COLUMNS)
    if more:
        click.echo(f"(the first {limit}; --limit N or --all for more)", err=True)


@command(main)
@click.argument("job_id")
@click.option("--timeout", type=Duration(), help="give up after this long (30s, 5m...); default: wait on")
def wait(state: State, job_id: str, timeout: float | None) -> None:
    """Wait until a job is succeeded, dead or cancelled; exit 1 unless it succeeded."""
    try:
        job = state.client.wait(job_id, timeout=timeout)
    except WaitTimeout as exc:
        show_job(state, exc.job)
        raise Failure(exc.message) from None
    show_job(state, job)
    if job.status is not JobStatus.SUCCEEDED:
        raise Failure(f"job {job.id} is {job.status.value}: {one_line(job.last_error, 200) or 'no error'}")


@command(main)
@click.argument("job_id")
def cancel(state: State, job_id: str) -> None:
    """Cancel a job that has not finished."""
    show_job(state, state.client.cancel(job_id))


@command(main)
@click.argument("job_id")
def retry(state: State, job_id: str) -> None:
    """Put a dead, failed or cancelled job back in line."""
    show_job(state, state.client.retry(job_id))


# -- the dead-letter queue ------------------------------------------------------------------------------


@main.group(cls=QuorraGroup)
def dlq() -> None:
    """Dead jobs (out of retries): list them, retry them in bulk."""


@command(dlq, "list")
@list_options
def dlq_list(state: State, **filters: Any) -> None:
    """List dead jobs, newest first."""
    show_jobs(state, status="dead", **filters)


@command(dlq, "retry")
@click.option("--queue", required=True, help="retry the dead jobs of this queue")
@click.option("--type", "job_type", help="only those of this type")
def dlq_retry(state: State, queue: str, job_type: str | None) -> None:
    """Put every dead job of a queue back in line, in one statement."""
    count = state.client.retry_dead(queue, type=job_type)
    if state.as_json:
        print_json({"retried": count})
    else:
        click.echo(f"retried {count} dead job{'s' * (count != 1)} of queue {queue}")


# -- queues, stats, health ---------------------------------------------------------------------------------


@command(main)
def queues(state: State) -> None:
    """Job counts per queue, one column per status."""
    counts = state.client.queues()
    if state.as_json:
        print_json({"queues": [{"queue": c.queue, "status": c.status.value, "count": c.count} for c in counts]})
        return
    by_queue: dict[str, dict[str, int]] = {}
    for count in counts:
        by_queue.setdefault(count.queue, {})[count.status.value] = count.count
    rows = [[queue, *(row.get(s, 0) for s in STATUSES), sum(row.values())] for queue, row in sorted(by_queue.items())]
    print_table(rows, ["QUEUE", *(s.upper() for s in STATUSES), "TOTAL"])


@command(main)
def stats(state: State) -> None:
    """Job counts per status, over every queue."""
    totals = dict.fromkeys(STATUSES, 0)
    for count in state.client.queues():
        totals[count.status.value] += count.count
    if state.as_json:
        print_json({"jobs": sum(totals.values()), "by_status": totals})
        return
    print_table([*totals.items(), ("total", sum(totals.values()))], ["STATUS", "JOBS"])


@command(main)
def health(state: State) -> None:
    """Is the server ready? (GET /readyz: the database, and Redis when configured)"""
    readiness = state.client.health()
    if state.as_json:
        print_json(readiness)
        return
    rows = [("server", readiness["status"]), *sorted(readiness.get("checks", {}).items())]
    print_table(rows, ["CHECK", "STATUS"])


main.add_command(schedules)
main.add_command(webhooks)


if __name__ == "__main__":
    sys.exit(main(prog_name="quorractl"))
