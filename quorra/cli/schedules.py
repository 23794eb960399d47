"""`quorractl schedules ...`: manage schedules over the REST API (/v1/schedules).

    quorractl schedules create nightly --cron '0 3 * * *' --timezone Europe/Paris --type report_build
    quorractl schedules create poll --every 30 --type poll_feeds --missed-ticks catch_up
    quorractl schedules list      quorractl schedules get nightly
    quorractl schedules update nightly --priority 5      quorractl schedules pause|resume|delete nightly

The group is registered on quorractl's main group and uses the state main puts on the
context (its `.client`, a quorra.client.Client, and `.as_json` for -o json)."""

from __future__ import annotations

import json
from typing import Any

import click
from tabulate import tabulate


@click.group()
def schedules() -> None:
    """Jobs submitted on a cron expression or an interval."""


def _print(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _payload(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--payload") from None


def _template_options(function):
    options = [
        click.option("--cron", help="five cron fields in --timezone, e.g. '0 3 * * *', or @daily"),
        click.option("--every", "interval_seconds", type=click.IntRange(1), help="an interval in seconds"),
        click.option("--timezone", help="IANA name for the cron expression [UTC]"),
        click.option("--missed-ticks", type=click.Choice(["skip", "catch_up"]), help="after an outage [skip]"),
        click.option("--type", "job_type", help="the job type each tick submits"),
        click.option("--queue", help="[default]"),
        click.option("--payload", help="the job's payload, a JSON object [{}]"),
        click.option("--priority", type=int),
        click.option("--max-retries", type=int),
        click.option("--timeout", "timeout_seconds", type=click.IntRange(1), help="seconds one attempt may run"),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _body(options: dict[str, Any]) -> dict[str, Any]:
    """The REST body from the options given (None: not given)."""
    job_fields = ("job_type", "queue", "payload", "priority", "max_retries", "timeout_seconds")
    job = {("type" if k == "job_type" else k): v for k, v in options.items() if k in job_fields and v is not None}
    if "payload" in job:
        job["payload"] = _payload(job["payload"])
    body = {k: v for k, v in options.items() if k not in job_fields and v is not None}
    return body | ({"job": job} if job else {})


@schedules.command("create")
@click.argument("name")
@_template_options
@click.option("--paused", "is_paused", is_flag=True, default=None, help="create it paused")
@click.pass_obj
def create(state, name: str, **options: Any) -> None:
    """Create the schedule NAME (give --cron or --every, and --type)."""
    _print(state.client.create_schedule({"name": name, **_body(options)}))


@schedules.command("update")
@click.argument("name")
@_template_options
@click.pass_obj
def update(state, name: str, **options: Any) -> None:
    """Change the options given; the job template's other fields are kept."""
    _print(state.client.update_schedule(name, _body(options)))


@schedules.command("list")
@click.pass_obj
def list_schedules(state) -> None:
    """Every schedule: timing, next and last run, and the last job's status."""
    rows = state.client.schedules()
    if state.as_json:
        _print({"schedules": rows})
        return
    table = [
        [
            row["name"],
            row["cron"] or f"every {row['interval_seconds']} s",
            row["timezone"],
            "paused" if row["is_paused"] else row["next_run_at"],
            row["last_run_at"] or "",
            row["last_job_status"] or "",
        ]
        for row in rows
    ]
    headers = ["NAME", "TIMING", "TIMEZONE", "NEXT RUN", "LAST RUN", "LAST JOB"]
    click.echo(tabulate(table, headers=headers, tablefmt="simple", disable_numparse=True))


@schedules.command("get")
@click.argument("name")
@click.pass_obj
def get(state, name: str) -> None:
    """Show one schedule."""
    _print(state.client.schedule(name))


@schedules.command("pause")
@click.argument("name")
@click.pass_obj
def pause(state, name: str) -> None:
    """Fire no tick until resumed."""
    _print(state.client.pause_schedule(name))


@schedules.command("resume")
@click.argument("name")
@click.pass_obj
def resume(state, name: str) -> None:
    """Go on from the next tick after now (the paused ones are not made up)."""
    _print(state.client.resume_schedule(name))


@schedules.command("delete")
@click.argument("name")
@click.pass_obj
def delete(state, name: str) -> None:
    """Delete the schedule (its jobs stay)."""
    state.client.delete_schedule(name)
    click.echo(f"deleted {name}")
