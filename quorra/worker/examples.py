"""Built-in example handlers, loaded when no handler module is configured, so that a new
user sees jobs succeed (and fail, retry and die) with nothing written yet.

    email_send    {"to", "subject", "body"}            logs the message (sends nothing)
    reminder      {"message"}                          logs the message (GoQuorra's delayed example)
    webhook_call  {"url", "body"?, "headers"?, "timeout_seconds"?}
                                                       a real HTTP POST; non-2xx fails
    sleep         {"seconds"}                          sleeps (try heartbeats, shutdown)
    fail          {"message"?, "succeed_on_attempt"?}  raises (try retries and the DLQ)
"""

from __future__ import annotations

import logging
from typing import Any

import requests

from quorra.worker.job import LeasedJob
from quorra.worker.registry import handler

logger = logging.getLogger(__name__)

MAX_SLEEP_SECONDS = 3600.0
MAX_WEBHOOK_TIMEOUT_SECONDS = 60.0


class JobFailed(Exception):
    """A handler's deliberate failure."""


@handler("email_send")
def send_email(job: LeasedJob) -> dict[str, Any]:
    body = str(job.payload.get("body", ""))
    logger.info(
        "email sent (example handler: logged, not delivered)",
        extra={
            "event": "example.email_sent",
            "job_id": job.id,
            "to": job.payload.get("to"),
            "subject": job.payload.get("subject"),
            "body_chars": len(body),
        },
    )
    return {"delivered": False, "logged": True}


@handler("reminder")
def remind(job: LeasedJob) -> dict[str, Any]:
    message = str(job.payload.get("message", ""))
    logger.info(
        "reminder (example handler: logged)",
        extra={"event": "example.reminded", "job_id": job.id, "message_chars": len(message)},
    )
    return {"reminded": True}


@handler("webhook_call")
def call_webhook(job: LeasedJob) -> dict[str, Any]:
    """POST `body` (default {}) as JSON to `url`; the job id goes along as Idempotency-Key,
    since a retried job posts again."""
    url = job.payload.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise JobFailed("payload.url must be an http:// or https:// URL")
    headers = {"Idempotency-Key": job.id, **_string_map(job.payload.get("headers"))}
    timeout = _bounded(job.payload.get("timeout_seconds", 10), MAX_WEBHOOK_TIMEOUT_SECONDS)
    response = requests.post(url, json=job.payload.get("body", {}), headers=headers, timeout=timeout)
    if not 200 <= response.status_code < 300:
        raise JobFailed(f"POST {url} answered {response.status_code} {response.reason}")
    return {"status_code": response.status_code}


@handler("sleep")
def sleep(job: LeasedJob) -> dict[str, Any]:
    """Sleep `seconds`; stop early, failing, if the lease is lost meanwhile."""
    seconds = _bounded(job.payload.get("seconds", 1), MAX_SLEEP_SECONDS)
    if job.lease_lost.wait(seconds):
        raise JobFailed("the lease was lost while sleeping")
    return {"slept_seconds": seconds}


@handler("fail")
def fail(job: LeasedJob) -> dict[str, Any]:
    """Fail on purpose; with `succeed_on_attempt`, succeed from that attempt on."""
    succeed_on = job.payload.get("succeed_on_attempt")
    if isinstance(succeed_on, int) and job.attempt >= succeed_on:
        return {"succeeded_on_attempt": job.attempt}
    raise JobFailed(str(job.payload.get("message", "failed on purpose")))


def _bounded(value: Any, limit: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= limit:
        raise JobFailed(f"expected a number of seconds between 0 and {limit:g}, got {value!r}")
    return float(value)


def _string_map(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise JobFailed("payload.headers must be an object of strings")
    return {str(key): str(item) for key, item in value.items()}
