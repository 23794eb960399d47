"""/v1/workflows: submit jobs that depend on each other by local refs, all or none, and
read the status of the whole. Thin views: parse (quorra.workflows) -> manager -> JSON."""

from __future__ import annotations

from collections import Counter
from typing import Any

from flask import Blueprint, url_for

from quorra.access import Permission
from quorra.api.auth import current_tenant, require_api_key, requires
from quorra.api.body import read_json
from quorra.api.jobs import BATCH_BODY_FACTOR, in_submit_trace, job_json, timestamp
from quorra.api.services import services
from quorra.store import WorkflowView
from quorra.workflows import Workflow, parse_workflow, workflow_status

bp = Blueprint("workflows", __name__, url_prefix="/v1/workflows")
bp.before_request(require_api_key)

# The jobs of a workflow, as listed: no bodies.
_LISTED = ()


@bp.post("")
@requires(Permission.JOBS_SUBMIT)
def create_workflow():
    """201: the workflow's id and status, and the id of each job by its ref."""
    limit = services().settings.max_payload_bytes
    plan = parse_workflow(read_json(limit * BATCH_BODY_FACTOR), max_payload_bytes=limit)
    tenant = current_tenant()
    workflow, created = in_submit_trace(
        plan.specs,
        lambda trace: services().manager.submit_workflow(plan, tenant=tenant, trace=trace),
        lambda done: done[1],
    )
    body = workflow_json(workflow) | {
        "status": workflow_status(Counter(job.status for job in created)).value,
        "jobs": {job.ref: {"id": job.id, "status": job.status.value} for job in created},
    }
    return body, 201, {"Location": url_for(".get_workflow", workflow_id=workflow.id)}


@bp.get("/<uuid:workflow_id>")
@requires(Permission.JOBS_READ)
def get_workflow(workflow_id):
    return view_json(services().store.get_workflow(str(workflow_id), tenant=current_tenant()))


def workflow_json(workflow: Workflow) -> dict[str, Any]:
    return {
        "id": workflow.id,
        "name": workflow.name,
        "status": workflow.status.value,
        "created_at": timestamp(workflow.created_at),
        "finished_at": timestamp(workflow.finished_at),
    }


def view_json(view: WorkflowView) -> dict[str, Any]:
    """The workflow with its live status (counted from its jobs), counts by status, and its jobs."""
    return workflow_json(view.workflow) | {
        "status": view.status.value,
        "counts": view.counts,
        "jobs": [job_json(job, _LISTED) for job in view.jobs],
    }
