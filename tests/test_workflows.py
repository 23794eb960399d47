"""The dependency rules (quorra.jobs.readiness) and workflow parsing (quorra.workflows):
pure Python, no database."""

from __future__ import annotations

import uuid

import pytest

from quorra.errors import InvalidJobSpec
from quorra.jobs import JobSpec, JobStatus, ParentFailure, readiness
from quorra.workflows import WorkflowStatus, parse_workflow, workflow_status

S = JobStatus


def _job(ref: str, *depends_on: str, **fields) -> dict:
    return {"ref": ref, "type": "step", "payload": {}, "depends_on": list(depends_on), **fields}


# -- readiness ----------------------------------------------------------------------------------


def test_a_dependant_waits_until_every_parent_succeeded():
    assert readiness({"a": S.SUCCEEDED, "b": S.PROCESSING}, "cancel") == readiness({"b": S.PENDING}, "cancel")
    assert readiness({"a": S.SUCCEEDED, "b": S.PROCESSING}, "cancel").status is S.BLOCKED
    assert readiness({"a": S.SUCCEEDED, "b": S.SUCCEEDED}, "cancel").status is S.PENDING


def test_a_failed_parent_cancels_a_dependant_and_is_named():
    ready = readiness({"b": S.DEAD, "a": S.PENDING, "c": S.CANCELLED}, ParentFailure.CANCEL)
    assert ready.status is S.CANCELLED
    assert ready.failed_parent == ("b", S.DEAD)  # the first failed parent by id


def test_a_dependant_that_runs_anyway_waits_only_for_its_parents_to_finish():
    assert readiness({"a": S.DEAD, "b": S.FAILED}, "run").status is S.BLOCKED
    assert readiness({"a": S.DEAD, "b": S.CANCELLED, "c": S.SUCCEEDED}, "run").status is S.PENDING


def test_depends_on_takes_uuids_in_any_spelling_once_each():
    parent = uuid.uuid4()
    spec = JobSpec.parse({"type": "t", "payload": {}, "depends_on": [parent.hex, str(parent).upper()]})
    assert spec.depends_on == (str(parent),)


def test_depends_on_refuses_what_is_not_a_job_id():
    with pytest.raises(InvalidJobSpec) as refused:
        JobSpec.parse({"type": "t", "payload": {}, "depends_on": ["nope"]})
    assert refused.value.details == [{"field": "depends_on.0", "message": "'nope' is not a job id (a UUID)"}]


def test_a_job_without_parents_keeps_its_idempotency_fingerprint():
    # (a key used before dependencies existed must still match the same job)
    spec = JobSpec.parse({"type": "t", "payload": {}})
    assert "depends_on" not in str(spec.model_dump(exclude={"idempotency_key", "depends_on", "on_parent_failure"}))
    assert (
        spec.fingerprint() == JobSpec.parse({"type": "t", "payload": {}, "on_parent_failure": "cancel"}).fingerprint()
    )


# -- workflows ----------------------------------------------------------------------------------


def test_a_workflow_resolves_refs_and_orders_parents_first():
    existing = str(uuid.uuid4())
    plan = parse_workflow(
        {"jobs": [_job("load", "transform"), _job("transform", "extract", existing), _job("extract")]}
    )
    assert plan.refs == ["extract", "transform", "load"]
    ids = plan.job_ids
    by_ref = dict(zip(plan.refs, plan.specs, strict=True))
    assert by_ref["transform"].depends_on == (ids["extract"], existing)
    assert by_ref["load"].depends_on == (ids["transform"],)


def test_a_cycle_is_refused_naming_its_refs():
    with pytest.raises(InvalidJobSpec) as refused:
        parse_workflow({"jobs": [_job("a", "c"), _job("b", "a"), _job("c", "b"), _job("d")]})
    assert "cycle" in refused.value.message
    assert refused.value.details[0]["refs"] == ["a", "b", "c"]


def test_a_job_depending_on_itself_is_a_cycle():
    with pytest.raises(InvalidJobSpec, match="cycle: a -> a"):
        parse_workflow({"jobs": [_job("a", "a")]})


def test_an_unknown_ref_is_refused_naming_it():
    with pytest.raises(InvalidJobSpec) as refused:
        parse_workflow({"jobs": [_job("a"), _job("b", "a", "nope")]})
    assert refused.value.details == [
        {"field": "jobs[1].depends_on.1", "message": "unknown ref 'nope': not a ref of this workflow nor a job id"}
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"jobs": [_job("a"), _job("a")]},
        {"jobs": []},
        {"jobs": [_job("a", idempotency_key="k")]},
        {"jobs": [{"type": "t", "payload": {}}]},
        {"jobs": [_job("a b")]},
        {"name": "", "jobs": [_job("a")]},
        {"jobs": [_job("a")], "extra": 1},
        [],
    ],
)
def test_a_malformed_workflow_is_refused(body):
    with pytest.raises(InvalidJobSpec):
        parse_workflow(body)


@pytest.mark.parametrize(
    ("counts", "status"),
    [
        ({"succeeded": 3}, WorkflowStatus.SUCCEEDED),
        ({"succeeded": 2, "blocked": 1}, WorkflowStatus.RUNNING),
        ({"succeeded": 1, "dead": 1, "cancelled": 2}, WorkflowStatus.FAILED),
        ({"succeeded": 1, "cancelled": 2}, WorkflowStatus.CANCELLED),
        ({"failed": 1, "dead": 1}, WorkflowStatus.RUNNING),
    ],
)
def test_the_status_of_a_workflow_follows_its_jobs(counts, status):
    assert workflow_status(counts) is status
