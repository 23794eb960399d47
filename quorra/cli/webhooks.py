"""`quorractl webhooks ...`: manage webhooks over the REST API (/v1/webhooks).

    quorractl webhooks create https://example.com/hooks --event job.dead --event job.failed --queue billing
    quorractl webhooks list      quorractl webhooks get ID      quorractl webhooks delete ID

The group is registered on quorractl's main group and uses the state main puts on the
context (its `.client`, a quorra.client.Client, and `.as_json` for -o json)."""

from __future__ import annotations

import json
from typing import Any

import click
from tabulate import tabulate


@click.group()
def webhooks() -> None:
    """Signed POSTs of job events to your URLs."""


def _print(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@webhooks.command("create")
@click.argument("url")
@click.option("--event", "events", multiple=True, required=True, help="job.succeeded, job.failed, job.dead, ...")
@click.option("--queue", "queues", multiple=True, help="only jobs of this queue (repeatable) [every queue]")
@click.option("--type", "types", multiple=True, help="only jobs of this type (repeatable) [every type]")
@click.option("--description")
@click.option("--max-retries", type=click.IntRange(0, 100), help="retries of one delivery [10]")
@click.pass_obj
def create(state, url: str, events, queues, types, description, max_retries) -> None:
    """Create a webhook for URL; prints it with its secret, which is shown this once only."""
    created = state.client.create_webhook(
        url,
        events,
        queues=queues or None,
        types=types or None,
        description=description,
        max_retries=max_retries,
    )
    _print(created)
    if not state.as_json:
        click.echo("Keep the secret now: it is never shown again.", err=True)


@webhooks.command("list")
@click.pass_obj
def list_webhooks(state) -> None:
    """Every webhook: its URL, events and filters."""
    rows = state.client.webhooks()
    if state.as_json:
        _print({"webhooks": rows})
        return
    table = [
        [
            row["id"],
            row["url"],
            ",".join(row["events"]),
            ",".join(row["queues"] or ["*"]),
            ",".join(row["types"] or ["*"]),
            row["description"] or "",
        ]
        for row in rows
    ]
    headers = ["ID", "URL", "EVENTS", "QUEUES", "TYPES", "DESCRIPTION"]
    click.echo(tabulate(table, headers=headers, tablefmt="simple", disable_numparse=True))


@webhooks.command("get")
@click.argument("webhook_id")
@click.pass_obj
def get(state, webhook_id: str) -> None:
    """Show one webhook (without its secret)."""
    _print(state.client.webhook(webhook_id))


@webhooks.command("delete")
@click.argument("webhook_id")
@click.pass_obj
def delete(state, webhook_id: str) -> None:
    """Delete the webhook; its deliveries still waiting are dropped."""
    state.client.delete_webhook(webhook_id)
    click.echo(f"deleted {webhook_id}")
