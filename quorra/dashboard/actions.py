"""The dashboard's actions (POST forms, each with its CSRF token, checked in signin.gate):
retry, cancel and delete a job; retry or delete every dead job matching a filter; pause and
resume a queue, set its limits. Each goes through the JobManager, so its metrics, logs, wake-ups and audit
entry are those of the REST route; then the browser is sent back to a page that shows the outcome.
Each acts within the signed-in key's tenant: another tenant's job is not found, and a queue
name is the tenant's own queue."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from urllib.parse import urlsplit

from flask import flash, g, redirect, request, url_for

from quorra.access import Permission
from quorra.dashboard import dashboard
from quorra.dashboard.filters import BulkFilter, JobsQuery
from quorra.dashboard.web import actor, allowed, bp, error_page, tenant
from quorra.errors import IllegalTransition, InvalidArgument, JobNotFound
from quorra.jobs import MAX_QUEUE_CHARS, JobStatus, is_valid_name, parse_job_id
from quorra.limits import LimitsSpec

logger = logging.getLogger(__name__)


def requires(permission: Permission) -> Callable:
    """Refuse (403) a user whose role lacks `permission`; a refused change becomes a
    message on the page it came from instead of an error page."""

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def guarded(**kwargs):
            if not allowed(permission):
                logger.info(
                    "dashboard action refused",
                    extra={"event": "dashboard.action_refused", "subject": g.principal.subject, "path": request.path},
                )
                return error_page(403, f"Your key is read-only here: it lacks the {permission} permission.")
            try:
                return view(**kwargs)
            except (IllegalTransition, InvalidArgument, JobNotFound) as exc:
                flash(exc.message, "error")
                return redirect(_back())

        return guarded

    return decorate


def _back() -> str:
    """The page the form was on (same host only), else the overview."""
    referrer = urlsplit(request.referrer or "")
    if referrer.netloc == request.host and referrer.path.startswith("/"):
        return referrer.path + (f"?{referrer.query}" if referrer.query else "")
    return url_for("dashboard.overview")


def _job_id(text: str) -> str:
    canonical = parse_job_id(text)
    if canonical is None:
        raise InvalidArgument(f"no job has the id {text!r}")
    return canonical


# -- one job ----------------------------------------------------------------------------------


@bp.post("/jobs/<job_id>/retry")
@requires(Permission.JOBS_MANAGE)
def retry_job(job_id: str):
    job = dashboard().manager.retry(_job_id(job_id), tenant=tenant(), actor=actor())
    flash("The job is back in line.", "ok")
    return redirect(url_for("dashboard.job", job_id=job.id))


@bp.post("/jobs/<job_id>/cancel")
@requires(Permission.JOBS_MANAGE)
def cancel_job(job_id: str):
    job = dashboard().manager.cancel(_job_id(job_id), tenant=tenant(), actor=actor())
    flash("The job is cancelled.", "ok")
    return redirect(url_for("dashboard.job", job_id=job.id))


@bp.post("/jobs/<job_id>/delete")
@requires(Permission.JOBS_MANAGE)
def delete_job(job_id: str):
    job = dashboard().manager.delete_job(_job_id(job_id), tenant=tenant(), actor=actor())
    flash(f"Job {job.id} is deleted.", "ok")
    return redirect(url_for("dashboard.jobs", queue=job.queue))


# -- dead letters, in bulk ------------------------------------------------------------------------


def _dead_letters() -> tuple[JobsQuery, BulkFilter]:
    """The dead-letter view's filter, posted back by its buttons, and the dead jobs it chooses."""
    chosen = JobsQuery.from_args(_form_without_token())
    return chosen, chosen.bulk_filter(JobStatus.DEAD, tenant())


def _form_without_token():
    form = request.form.copy()
    form.pop("csrf_token", None)
    return form


@bp.post("/dead/retry")
@requires(Permission.JOBS_MANAGE)
def retry_dead():
    chosen, dead = _dead_letters()
    count = dashboard().manager.retry_matching(dead, actor=actor())
    flash(f"{count} dead job{'s' if count != 1 else ''} of {chosen.queue} back in line.", "ok")
    return redirect(url_for("dashboard.dead_letters", **chosen.query(cursor=None)))


@bp.post("/dead/delete")
@requires(Permission.JOBS_MANAGE)
def delete_dead():
    chosen, dead = _dead_letters()
    count = dashboard().manager.delete_matching(dead, actor=actor())
    flash(f"{count} dead job{'s' if count != 1 else ''} of {chosen.queue} deleted.", "ok")
    return redirect(url_for("dashboard.dead_letters", **chosen.query(cursor=None)))


# -- queues -----------------------------------------------------------------------------------


def _queue(name: str) -> str:
    if not is_valid_name(name, MAX_QUEUE_CHARS):
        raise InvalidArgument(f"invalid queue name {name!r}")
    return name


@bp.post("/queues/<queue>/pause")
@requires(Permission.QUEUES_MANAGE)
def pause_queue(queue: str):
    dashboard().manager.pause_queue(_queue(queue), tenant=tenant(), actor=actor())
    flash(f"Queue {queue} is paused: no worker takes its jobs until it is resumed.", "ok")
    return redirect(url_for("dashboard.queues"))


@bp.post("/queues/<queue>/resume")
@requires(Permission.QUEUES_MANAGE)
def resume_queue(queue: str):
    dashboard().manager.resume_queue(_queue(queue), tenant=tenant(), actor=actor())
    flash(f"Queue {queue} is resumed.", "ok")
    return redirect(url_for("dashboard.queues"))


@bp.post("/queues/limits")
@requires(Permission.QUEUES_MANAGE)
def set_queue_limits():
    queue = _queue(request.form.get("queue", "").strip())
    limits = dashboard().manager.set_queue_limits(queue, _limits_from_form(), tenant=tenant(), actor=actor())
    shown = ", ".join(_describe(limits)) or "none: it is leased freely"
    flash(f"Limits of queue {queue}: {shown}.", "ok")
    return redirect(url_for("dashboard.queues"))


def _limits_from_form():
    """The form's fields as the REST body (an empty field: no such limit), checked by the
    same model, so the dashboard refuses what PUT /v1/queues/{queue}/limits refuses."""
    form = request.form
    body: dict = {"max_in_flight": _form_number(form.get("max_in_flight", ""))}
    rate = _form_number(form.get("rate_limit", ""))
    if rate is not None:
        body["rate"] = {"limit": rate, "per": form.get("rate_per", "second")}
    try:
        return LimitsSpec.parse(body)
    except InvalidArgument as exc:
        problems = "; ".join(f"{d['field'].replace('rate.limit', 'rate')}: {d['message']}" for d in exc.details or [])
        raise InvalidArgument(f"{exc.message} ({problems})") from None


def _form_number(text: str) -> int | str | None:
    text = text.strip()
    if not text:
        return None
    return int(text) if text.isdigit() and len(text) < 10 else text  # anything else: the model says why


def _describe(limits) -> list[str]:
    described = [] if limits.max_in_flight is None else [f"{limits.max_in_flight} in flight"]
    rate = limits.rate
    return described + ([] if rate is None else [f"{rate.limit} started per {rate.per}"])
