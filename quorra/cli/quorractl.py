"""`quorractl`: manage jobs from the command line, over the REST API only.

    quorractl enqueue email_send --payload '{"to": "a@b.c"}' --queue default
    quorractl get <id>            quorractl list --status dead
    quorractl cancel <id>         quorractl retry <id>         quorractl queues

The server is QUORRA_URL (default http://localhost:8080) and the key the first of
QUORRA_API_KEY. Reads are retried on connection errors and 502/503/504; a submit is
retried only when the connection failed before the request was sent, so it never
creates a job twice.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from quorra.cli.schedules import schedules
from quorra.config import DEV_API_KEY

DEFAULT_URL = "http://localhost:8080"
TIMEOUT_SECONDS = 10


class Client:
    """A thin REST client: one method per route, errors as ClickException."""

    def __init__(self, base_url: str, api_key: str, retries: int = 3):
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers.update({"X-API-Key": api_key, "Accept": "application/json"})
        retry = Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            backoff_factor=0.3,
            status_forcelist=(502, 503, 504),
            allowed_methods=frozenset({"GET"}),  # POSTs are retried only on connect errors
            raise_on_status=False,
        )
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        self.session.mount("https://", HTTPAdapter(max_retries=retry))

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.session.request(method, self.base_url + path, timeout=TIMEOUT_SECONDS, **kwargs)
        except requests.RequestException as exc:
            raise click.ClickException(f"cannot reach {self.base_url}: {exc}") from None
        body = _json_or_text(response)
        if response.status_code >= 400:
            raise click.ClickException(_describe_error(response.status_code, body))
        return body


def _json_or_text(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _describe_error(status: int, body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        lines = [f"{status} {error.get('code')}: {error.get('message')}"]
        for detail in error.get("details") or []:
            lines.append(
                f"  {detail.get('field', '')}: {detail.get('message', detail)}"
                if isinstance(detail, dict)
                else f"  {detail}"
            )
        return "\n".join(lines)
    return f"{status}: {body}"


def _first_key(value: str) -> str:
    return next((key.strip() for key in value.split(",") if key.strip()), DEV_API_KEY)


def _print(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@click.group()
@click.option("--url", envvar="QUORRA_URL", default=DEFAULT_URL, show_default=True, help="Quorra's REST address")
@click.option("--api-key", envvar="QUORRA_API_KEY", default=DEV_API_KEY, help="API key (first of a comma list)")
@click.pass_context
def main(ctx: click.Context, url: str, api_key: str) -> None:
    """Manage Quorra jobs over the REST API."""
    ctx.obj = Client(url, _first_key(api_key))


@main.command()
@click.argument("job_type")
@click.option("--payload", default="{}", show_default=True, help="the job's payload, a JSON object")
@click.option("--queue", default="default", show_default=True)
@click.option("--priority", type=int, default=0, show_default=True, help="higher runs first")
@click.option("--delay", "delay_seconds", type=int, default=0, show_default=True, help="seconds before it may run")
@click.option("--max-retries", type=int, default=3, show_default=True)
@click.pass_obj
def enqueue(
    client: Client, job_type: str, payload: str, queue: str, priority: int, delay_seconds: int, max_retries: int
) -> None:
    """Submit a job of JOB_TYPE."""
    try:
        decoded = json.loads(payload)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--payload") from None
    body = {
        "type": job_type,
        "payload": decoded,
        "queue": queue,
        "priority": priority,
        "delay_seconds": delay_seconds,
        "max_retries": max_retries,
    }
    _print(client.call("POST", "/v1/jobs", json=body))


@main.command()
@click.argument("job_id")
@click.pass_obj
def get(client: Client, job_id: str) -> None:
    """Show one job."""
    _print(client.call("GET", f"/v1/jobs/{job_id}"))


@main.command("list")
@click.option("--queue")
@click.option(
    "--status", type=click.Choice(["pending", "leased", "processing", "succeeded", "failed", "dead", "cancelled"])
)
@click.option("--type", "job_type")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@click.option("--cursor", help="continue from the next_cursor of a previous page")
@click.pass_obj
def list_jobs(
    client: Client, queue: str | None, status: str | None, job_type: str | None, limit: int, cursor: str | None
) -> None:
    """List jobs, newest first."""
    params = {"queue": queue, "status": status, "type": job_type, "limit": limit, "cursor": cursor}
    page = client.call("GET", "/v1/jobs", params={k: v for k, v in params.items() if v is not None})
    for job in page["jobs"]:
        click.echo(
            f"{job['id']}  {job['status']:<10}  {job['queue']:<12}  {job['type']:<20}  "
            f"attempts={job['attempts']}  {job.get('last_error') or ''}".rstrip()
        )
    if page.get("next_cursor"):
        click.echo(f"next page: --cursor {page['next_cursor']}", err=True)


@main.command()
@click.argument("job_id")
@click.pass_obj
def cancel(client: Client, job_id: str) -> None:
    """Cancel a job that has not finished."""
    _print(client.call("POST", f"/v1/jobs/{job_id}/cancel"))


@main.command()
@click.argument("job_id")
@click.pass_obj
def retry(client: Client, job_id: str) -> None:
    """Put a dead, failed or cancelled job back in line."""
    _print(client.call("POST", f"/v1/jobs/{job_id}/retry"))


@main.command()
@click.pass_obj
def queues(client: Client) -> None:
    """Job counts per queue and status."""
    rows = client.call("GET", "/v1/queues")["queues"]
    for row in rows:
        click.echo(f"{row['queue']:<20} {row['status']:<12} {row['count']}")
    if not rows:
        click.echo("no jobs", err=True)


main.add_command(schedules)


if __name__ == "__main__":
    sys.exit(main())
