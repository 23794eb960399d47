"""/v1/schedules: create, list, read, change, pause, resume and delete schedules, by name.
Thin views: parse -> manager verb -> JSON; reads go to the store. The rules live in
quorra.schedules; the scheduler leader fires them. A caller sees and steers its own tenant's
schedules only (another tenant's name is a 404, and may be taken again)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, url_for

from quorra.access import Permission
from quorra.api.auth import current_actor, current_tenant, require_api_key, requires
from quorra.api.body import read_json
from quorra.api.jobs import timestamp
from quorra.api.services import services
from quorra.schedules import Schedule, ScheduleSpec

# A schedule body is small: a name, a timing and one job template.
bp = Blueprint("schedules", __name__, url_prefix="/v1/schedules")
bp.before_request(require_api_key)


@bp.post("")
@requires(Permission.SCHEDULES_MANAGE)
def create():
    spec = ScheduleSpec.parse(read_json(services().settings.max_payload_bytes))
    schedule = services().manager.create_schedule(spec, tenant=current_tenant(), actor=current_actor())
    return schedule_json(schedule), 201, {"Location": url_for(".get_schedule", name=schedule.name)}


@bp.get("")
@requires(Permission.SCHEDULES_READ)
def list_schedules():
    return {
        "schedules": [schedule_json(schedule) for schedule in services().store.list_schedules(tenant=current_tenant())]
    }


@bp.get("/<name>")
@requires(Permission.SCHEDULES_READ)
def get_schedule(name: str):
    return schedule_json(services().store.get_schedule(name, tenant=current_tenant()))


@bp.patch("/<name>")
@requires(Permission.SCHEDULES_MANAGE)
def update(name: str):
    changes = read_json(services().settings.max_payload_bytes)
    services().manager.update_schedule(name, changes, tenant=current_tenant(), actor=current_actor())
    return schedule_json(services().store.get_schedule(name, tenant=current_tenant()))


@bp.delete("/<name>")
@requires(Permission.SCHEDULES_MANAGE)
def delete(name: str):
    services().manager.delete_schedule(name, tenant=current_tenant(), actor=current_actor())
    return "", 204


@bp.post("/<name>/pause")
@requires(Permission.SCHEDULES_MANAGE)
def pause(name: str):
    services().manager.pause_schedule(name, tenant=current_tenant(), actor=current_actor())
    return schedule_json(services().store.get_schedule(name, tenant=current_tenant()))


@bp.post("/<name>/resume")
@requires(Permission.SCHEDULES_MANAGE)
def resume(name: str):
    services().manager.resume_schedule(name, tenant=current_tenant(), actor=current_actor())
    return schedule_json(services().store.get_schedule(name, tenant=current_tenant()))


def schedule_json(schedule: Schedule) -> dict[str, Any]:
    return {
        "id": schedule.id,
        "name": schedule.name,
        "cron": schedule.cron,
        "interval_seconds": schedule.interval_seconds,
        "timezone": schedule.timezone,
        "job": schedule.template().model_dump(mode="json"),
        "missed_ticks": schedule.missed_ticks.value,
        "is_paused": schedule.is_paused,
        "next_run_at": timestamp(schedule.next_run_at),
        "last_run_at": timestamp(schedule.last_run_at),
        "last_job_id": schedule.last_job_id,
        "last_job_status": schedule.last_job_status,
        "created_at": timestamp(schedule.created_at),
        "updated_at": timestamp(schedule.updated_at),
    }
