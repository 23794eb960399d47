"""Schedules: jobs submitted on a cron expression or a fixed interval. Pure Python, like
quorra.jobs: what a schedule is, when its ticks fall, and what to do about late ones.
The store keeps them (quorra.store.schedules) and the scheduler leader fires them.

A tick is due once its time passed. The leader fires each due tick once: one job, inserted
in the transaction that moves the schedule's next_run_at on (a guarded UPDATE), and
carrying the schedule id and the tick time under a unique index, so a leader killed or
replaced mid-tick can never fire it twice.

A tick still due more than the misfire threshold after its time (every scheduler was down,
or the schedule was created with a past start) is *missed*, and the schedule's policy says
what happens to all its missed ticks at once, never a burst of them:

- ``skip`` (the default): none runs; the schedule goes on from its next live tick.
- ``catch_up``: one job runs now for the latest missed tick, then the same.

Cron expressions are read by cronsim in the schedule's timezone (zoneinfo), so they follow
the wall clock across daylight-saving changes, as cron does: a time that does not exist
(02:30 on a spring-forward night) runs when the clock jumps past it, at 03:00; a time that
happens twice (01:30 on a fall-back night) runs once, at the first; an expression with a
wildcard hour (``*/30 * * * *``) runs in both the repeated hours. Intervals count real
seconds and ignore the timezone.
"""

from __future__ import annotations

import enum
import math
import re
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from quorra.errors import InvalidArgument, InvalidConfig
from quorra.jobs import (
    MAX_TYPE_CHARS,
    NAME_PATTERN,
    JsonInt,
    QueueName,
    TimeoutSeconds,
    TypeName,
    check_portable_json,
    describe_errors,
)

MAX_NAME_CHARS = MAX_TYPE_CHARS
MAX_CRON_CHARS = 200
MAX_INTERVAL_SECONDS = 366 * 86400
# A cron expression fires at most every minute; this bounds the walk that counts missed ticks.
MAX_COUNTED_TICKS = 100_000
# A cron expression: five fields (minute hour day-of-month month day-of-week) of numbers,
# `*`, ranges `a-b`, steps `/n` and lists `a,b`, one space apart; or a nickname. Written
# once for both Python (re.fullmatch) and the OpenAPI document (ECMA-262), so the document
# says exactly what is accepted. cronsim then refuses what no calendar has (31 2: Feb 31)
# and reversed ranges. Names (MON, JAN), L, W and # are left out.


def _field(value: str) -> str:
    item = f"(?:\\*|(?:{value})(?:-(?:{value}))?)(?:/[1-9][0-9]?)?"
    return f"{item}(?:,{item})*"


_CRON_FIELDS = " ".join(
    _field(value)
    for value in ("[0-5]?[0-9]", "[01]?[0-9]|2[0-3]", "0?[1-9]|[12][0-9]|3[01]", "0?[1-9]|1[0-2]", "0?[0-7]")
)
CRON_SYNTAX = f"(?:{_CRON_FIELDS}|@(?:yearly|annually|monthly|weekly|daily|midnight|hourly))"
CRON_PATTERN = f"^{CRON_SYNTAX}$"  # the JSON Schema spelling; Python checks with fullmatch
_CRON = re.compile(CRON_SYNTAX)
# Nicknames cron(8) takes; cronsim reads only the five fields.
CRON_NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


class MissedTicks(str, enum.Enum):
    SKIP = "skip"  # missed ticks are dropped; the schedule goes on from its next live tick
    CATCH_UP = "catch_up"  # one job runs for all the missed ticks (the latest), then the same

    def __str__(self) -> str:
        return self.value


class JobTemplate(BaseModel):
    """The job each tick submits: JobSpec's fields but delay_seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: TypeName
    payload: dict[str, Any] = Field(default_factory=dict)
    queue: QueueName = "default"
    priority: JsonInt = Field(0, ge=-1000, le=1000)
    max_retries: JsonInt = Field(3, ge=0, le=100)
    timeout_seconds: TimeoutSeconds | None = None

    @field_validator("payload")
    @classmethod
    def _portable_json(cls, payload: dict[str, Any]) -> dict[str, Any]:
        check_portable_json(payload, "payload")
        return payload


class ScheduleSpec(BaseModel):
    """A schedule as a client creates it: a name, exactly one of `cron` and
    `interval_seconds`, a timezone for cron, the job template and the missed-tick policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrictStr = Field(min_length=1, max_length=MAX_NAME_CHARS, pattern=NAME_PATTERN)
    cron: StrictStr | None = Field(None, min_length=1, max_length=MAX_CRON_CHARS)
    interval_seconds: JsonInt | None = Field(None, ge=1, le=MAX_INTERVAL_SECONDS)
    timezone: StrictStr = Field("UTC", min_length=1, max_length=64)
    job: JobTemplate
    missed_ticks: MissedTicks = MissedTicks.SKIP
    is_paused: StrictBool = False

    @field_validator("cron")
    @classmethod
    def _cron(cls, cron: str | None) -> str | None:
        if cron is not None:
            check_cron(cron)
        return cron

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, name: str) -> str:
        zone(name)
        return name

    @model_validator(mode="after")
    def _one_timing(self) -> ScheduleSpec:
        if (self.cron is None) == (self.interval_seconds is None):
            raise ValueError("give exactly one of cron and interval_seconds")
        return self

    @classmethod
    def parse(cls, data: object) -> ScheduleSpec:
        if not isinstance(data, dict):
            raise InvalidArgument("a schedule must be a JSON object")
        nulls = [name for name in ("cron", "interval_seconds") if name in data and data[name] is None]
        if nulls:
            raise InvalidArgument(
                "the schedule is invalid", details=[{"field": n, "message": "may not be null"} for n in nulls]
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidArgument("the schedule is invalid", details=describe_errors(exc)) from None

    def changed(self, changes: object) -> ScheduleSpec:
        """This spec with the fields of a PATCH body replaced (job: its fields merged);
        giving one of cron and interval_seconds drops the other."""
        if not isinstance(changes, dict):
            raise InvalidArgument("a schedule change must be a JSON object")
        if "name" in changes:
            raise InvalidArgument("a schedule cannot be renamed", details=[{"field": "name", "message": "read-only"}])
        data = self.model_dump(mode="json", exclude_none=True)
        data["job"] = self.job.model_dump(mode="json")
        if "cron" in changes or "interval_seconds" in changes:
            data.pop("cron", None)
            data.pop("interval_seconds", None)
        job = changes.get("job")
        merged = {**data, **changes}
        if isinstance(job, dict):
            merged["job"] = {**data["job"], **job}
        return ScheduleSpec.parse(merged)

    def timing_differs(self, other: ScheduleSpec) -> bool:
        return (self.cron, self.interval_seconds, self.timezone) != (other.cron, other.interval_seconds, other.timezone)


def check_cron(expression: str) -> None:
    if not _CRON.fullmatch(expression):
        raise ValueError(
            "not a cron expression: five fields (minute hour day month weekday) of numbers, *, a-b, /n"
            " and lists, one space apart, or @hourly, @daily, @weekly, @monthly, @yearly"
        )
    try:
        CronSim(_expanded(expression), datetime(2000, 1, 1))
    except CronSimError as exc:
        raise ValueError(f"not a cron expression: {exc}") from None


def _expanded(expression: str) -> str:
    return CRON_NICKNAMES.get(expression, expression)


def zone(name: str) -> ZoneInfo:
    if name not in zone_names():
        raise ValueError(f"unknown timezone {name!r}; use an IANA name such as Europe/Paris or UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r}") from None


_ZONES: frozenset[str] | None = None


def zone_names() -> frozenset[str]:
    """The IANA timezone names this host knows (zoneinfo's, from the system or tzdata)."""
    global _ZONES
    if _ZONES is None:
        _ZONES = frozenset(available_timezones() | {"UTC"})
    return _ZONES


@dataclass(frozen=True)
class Schedule:
    """One row of the schedules table (timestamps aware UTC). `last_job_status` is the
    status of the job of the latest tick, when it was read with it (None once pruned)."""

    id: str
    name: str
    cron: str | None
    interval_seconds: int | None
    timezone: str
    job_type: str
    queue: str
    payload: dict[str, Any]
    priority: int
    max_retries: int
    timeout_seconds: int | None
    missed_ticks: MissedTicks
    is_paused: bool
    next_run_at: datetime
    created_at: datetime
    updated_at: datetime
    last_run_at: datetime | None = None
    last_job_id: str | None = None
    last_job_status: str | None = None
    tenant: str = "default"

    def spec(self) -> ScheduleSpec:
        return ScheduleSpec(
            name=self.name,
            cron=self.cron,
            interval_seconds=self.interval_seconds,
            timezone=self.timezone,
            job=self.template(),
            missed_ticks=self.missed_ticks,
            is_paused=self.is_paused,
        )

    def template(self) -> JobTemplate:
        return JobTemplate(
            type=self.job_type,
            payload=self.payload,
            queue=self.queue,
            priority=self.priority,
            max_retries=self.max_retries,
            timeout_seconds=self.timeout_seconds,
        )


def tick_after(spec: ScheduleSpec | Schedule, after: datetime) -> datetime:
    """The schedule's first tick strictly after `after` (aware), in UTC."""
    if spec.interval_seconds is not None:
        return (after + timedelta(seconds=spec.interval_seconds)).astimezone(UTC)
    local = after.astimezone(zone(spec.timezone))
    return next(iter(CronSim(_expanded(spec.cron), local))).astimezone(UTC)


@dataclass(frozen=True)
class TickPlan:
    """What firing the due tick `due_at` of a schedule does: submit a job for `fire_for`
    (None: none), move next_run_at to `next_run_at`, and count `missed` ticks."""

    due_at: datetime
    fire_for: datetime | None
    next_run_at: datetime
    missed: int


def plan_tick(schedule: Schedule, now: datetime, misfire_threshold_seconds: float) -> TickPlan:
    """The plan for the schedule's due tick (next_run_at <= now): a tick within the
    threshold fires for itself; older ones are missed, and handled all at once by policy."""
    due = schedule.next_run_at
    live_from = now - timedelta(seconds=misfire_threshold_seconds)
    if due >= live_from:
        return TickPlan(due, due, tick_after(schedule, due), 0)
    latest_missed, missed = _latest_missed(schedule, live_from)
    following = tick_after(schedule, latest_missed)
    if following < live_from:  # more than MAX_COUNTED_TICKS missed: go on from now
        following = tick_after(schedule, now)
    fire_for = latest_missed if schedule.missed_ticks is MissedTicks.CATCH_UP else None
    return TickPlan(due, fire_for, following, missed)


def _latest_missed(schedule: Schedule, live_from: datetime) -> tuple[datetime, int]:
    """The last tick before `live_from`, from the due one on, and how many there are."""
    due = schedule.next_run_at
    if schedule.interval_seconds is not None:
        count = math.ceil((live_from - due).total_seconds() / schedule.interval_seconds)
        return due + timedelta(seconds=(count - 1) * schedule.interval_seconds), count
    latest, count = due, 1
    for tick in CronSim(_expanded(schedule.cron), due.astimezone(zone(schedule.timezone))):
        if tick >= live_from or count >= MAX_COUNTED_TICKS:
            break
        latest, count = tick.astimezone(UTC), count + 1
    return latest, count


def load_schedules_file(path: str) -> list[ScheduleSpec]:
    """The schedules of a TOML file (QUORRA_SCHEDULES_FILE), one table per schedule::

        [schedules.nightly-report]
        cron = "0 3 * * *"
        timezone = "Europe/Paris"
        job = { type = "report_build", queue = "reports", payload = { kind = "daily" } }

    InvalidConfig names every problem."""
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidConfig(f"QUORRA_SCHEDULES_FILE: cannot read {path}: {exc}") from None
    tables = document.get("schedules")
    if not isinstance(tables, dict) or set(document) != {"schedules"}:
        raise InvalidConfig(f"QUORRA_SCHEDULES_FILE: {path} must hold [schedules.<name>] tables only")
    specs, problems = [], []
    for name, table in tables.items():
        try:
            specs.append(ScheduleSpec.parse({"name": name, **table} if isinstance(table, dict) else table))
        except InvalidArgument as exc:
            details = exc.details or [{"field": "", "message": exc.message}]
            problems += [f"  schedules.{name}.{d['field']}: {d['message']}".replace(". :", ":") for d in details]
    if problems:
        raise InvalidConfig(f"QUORRA_SCHEDULES_FILE: {path} is invalid:\n" + "\n".join(problems))
    return specs
