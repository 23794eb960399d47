"""`quorra keys ...`: managed API keys, from the server side (DATABASE_URL), for the first
admin key of a deployment and for scripts. The same verbs as /v1/keys, audited as
`cli:<os user>`.

    quorra keys create --name "ci deploy" --role producer [--tenant acme] [--expires-in 90d]
    quorra keys create --name "fleet" --role worker --tenant '*'    (a worker of every tenant)
    quorra keys list [--all] [--tenant acme] [-o json]
    quorra keys revoke <id or qk_prefix>

The CLI runs with the database's own credentials, so it acts for every tenant, as the
installation's admins do over REST.

`create` prints the key itself on stdout, alone (so `KEY=$(quorra keys create ...)` works),
and what it made on stderr. The key is not shown again: only its hash is stored."""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click

from quorra.access import Role
from quorra.errors import QuorraError


@click.group()
def keys() -> None:
    """Managed API keys (stored hashed; each with a role)."""


@contextmanager
def _manager() -> Iterator:
    from quorra.cli.admin import load_settings, needs_extra

    with needs_extra("server"):
        from quorra.api.services import open_store
        from quorra.manager import JobManager
        from quorra.notify import PollingNotifier

    settings = load_settings("cli")
    try:
        store = open_store(settings)
    except QuorraError as exc:
        _fail(exc)
    try:
        yield JobManager(store, PollingNotifier(settings.poll_interval_seconds))
    except QuorraError as exc:
        _fail(exc)
    finally:
        store.close()


def _fail(exc: QuorraError) -> None:
    """The message and, for bad input, each field's problem; exit 1."""
    lines = [f"quorra: {exc.message}"]
    if isinstance(exc.details, list):
        lines += [f"  {d.get('field')}: {d.get('message')}" for d in exc.details if isinstance(d, dict)]
    click.echo("\n".join(lines), err=True)
    sys.exit(1)


def _actor():
    from quorra.audit import Actor

    user = getpass.getuser()
    return Actor(f"cli:{user}", user)


@keys.command()
@click.option("--name", required=True, help="what the key is for, e.g. 'ci deploy'")
@click.option("--role", required=True, type=click.Choice([r.value for r in Role]))
@click.option("--tenant", default="default", show_default=True, help="'*': every tenant (worker role only)")
@click.option("--expires-in", help="e.g. 90d or 12h; never, if not given")
def create(name: str, role: str, tenant: str, expires_in: str | None) -> None:
    """Create a key and print it (once)."""
    from quorra.keys import KeySpec

    seconds = None if expires_in is None else _duration(expires_in)
    with _manager() as manager:
        spec = KeySpec.parse({"name": name, "role": role, "tenant": tenant, "expires_in_seconds": seconds})
        created = manager.create_key(spec, actor=_actor())
    key = created.key
    expiry = f", expires {key.expires_at.isoformat()}" if key.expires_at else ""
    click.echo(f"created key qk_{key.prefix} ({key.name}: role {key.role}, tenant {key.tenant}{expiry})", err=True)
    click.echo(f"id {key.id}; the key is shown this once:", err=True)
    click.echo(created.secret)


def _duration(text: str) -> float:
    from quorra.durations import parse_duration

    try:
        return float(parse_duration(text))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expires-in") from None


@keys.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="revoked keys too")
@click.option("--tenant", help="only this tenant's keys; every tenant's, if not given")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def list_keys(include_revoked: bool, tenant: str | None, output: str) -> None:
    """List keys (never their secrets)."""
    from quorra.api.keys import key_json

    with _manager() as manager:
        keys = manager.store.list_api_keys(include_revoked=include_revoked, tenant=tenant)
        found = [key_json(key) for key in keys]
    if output == "json":
        click.echo(json.dumps(found, indent=2, ensure_ascii=False))
        return
    columns = ("prefix", "name", "role", "tenant", "created_at", "last_used_at", "expires_at", "revoked_at")
    rows = [columns] + [tuple(str(k[c] or "-") for c in columns) for k in found]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@keys.command()
@click.argument("key_id")
def revoke(key_id: str) -> None:
    """Revoke a key, by id or by its prefix (qk_...). Other processes stop accepting it
    within QUORRA_KEY_CACHE_TTL."""
    with _manager() as manager:
        key = manager.revoke_key(key_id, actor=_actor())
    click.echo(f"revoked key qk_{key.prefix} ({key.name})")
