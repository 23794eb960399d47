"""The job domain: states, the transitions between them, the retry policy and the
validation of a submitted job. Pure Python; the store applies these rules in SQL.

::

    pending --lease--> leased --start/heartbeat--> processing --ack--> succeeded
       ^                 |                            |
       |                 +--------- nack / lease expired ---------+
       |                                                          v
       +---- run_at reached ---- failed (retry scheduled) <-- attempts <= max_retries
                                                            dead     <-- attempts >  max_retries
    pending | failed | leased | processing --cancel--> cancelled
    dead | failed | cancelled --retry (manual)--> pending

    blocked --last parent succeeded (or finished, on_parent_failure="run")--> pending
    blocked --a parent dead or cancelled (on_parent_failure="cancel")--> cancelled
    cancelled (by its parent) --the parent retried--> blocked
    cancelled --retry (manual), a parent not yet succeeded--> blocked

A job submitted with `depends_on` starts `blocked` (or `pending`, when every parent has
already succeeded) and leaves it in the transaction that settles its last parent.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import math
import re
import uuid
from dataclasses import MISSING, asdict, dataclass, fields
from datetime import datetime
from typing import Annotated, Any, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from quorra.errors import InvalidJobSpec

MAX_BACKOFF_SECONDS = 3600
MAX_PAYLOAD_DEPTH = 32
MAX_BATCH_SIZE = 1000
MAX_QUEUE_CHARS = 100
MAX_TYPE_CHARS = 200
MAX_TIMEOUT_SECONDS = 7 * 86400
MAX_IDEMPOTENCY_KEY_CHARS = 255
MAX_UNIQUE_KEY_CHARS = 255
MAX_UNIQUE_PERIOD_SECONDS = 366 * 86400
DEFAULT_IDEMPOTENCY_TTL_SECONDS = 86400.0
# An idempotency key: 1 to 255 visible ASCII characters (no spaces), as fits an HTTP header.
IDEMPOTENCY_KEY_PATTERN = "^[!-~]+$"
_IDEMPOTENCY_KEY = re.compile("[!-~]+")
# Queue and type names. NAME_PATTERN is the JSON Schema (ECMA-262) spelling, used by pydantic
# (whose Rust engine reads `$` as the end of the text) and by the OpenAPI document. Python code
# checks names with is_valid_name: Python's `$` also matches before a trailing newline, so a
# `re.match` of NAME_PATTERN would take "x\n".
NAME_PATTERN = r"^[A-Za-z0-9_.:-]+$"
_NAME = re.compile(r"[A-Za-z0-9_.:-]+")


def is_valid_name(text: object, max_chars: int = MAX_QUEUE_CHARS) -> bool:
    """A queue or type name: 1 to `max_chars` characters from A-Z a-z 0-9 _ . : -"""
    return isinstance(text, str) and len(text) <= max_chars and _NAME.fullmatch(text) is not None


def _integral_number(value: object) -> object:
    """JSON has one number type, and JSON Schema counts 396.0 as an integer: take it as 396.
    1.5 stays a float (refused by StrictInt), and so do booleans and strings."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _job_id(value: object) -> object:
    if isinstance(value, str):
        canonical = parse_job_id(value)
        if canonical is None:
            raise ValueError(f"{_printable(value[:100])!r} is not a job id (a UUID)")
        return canonical
    return value


# A job id in a JSON body: a UUID in any spelling uuid.UUID takes, kept in canonical form.
JobId = Annotated[StrictStr, AfterValidator(_job_id)]
# An integer field of a JSON body: a JSON number without a fraction, never a bool or a string.
JsonInt = Annotated[StrictInt, BeforeValidator(_integral_number)]
QueueName = Annotated[StrictStr, Field(min_length=1, max_length=MAX_QUEUE_CHARS, pattern=NAME_PATTERN)]
TypeName = Annotated[StrictStr, Field(min_length=1, max_length=MAX_TYPE_CHARS, pattern=NAME_PATTERN)]
# The bounds inside the annotation, before the validator, so that the JSON schema of
# `TimeoutSeconds | None` carries them as minimum and maximum.
TimeoutSeconds = Annotated[StrictInt, Field(ge=1, le=MAX_TIMEOUT_SECONDS), BeforeValidator(_integral_number)]


class JobStatus(str, enum.Enum):
    PENDING = "pending"  # waiting for run_at, then for a worker
    LEASED = "leased"  # handed to a worker, which has not reported yet
    PROCESSING = "processing"  # the worker started it (first heartbeat)
    SUCCEEDED = "succeeded"  # acked; terminal
    FAILED = "failed"  # an attempt failed; retried at run_at
    DEAD = "dead"  # out of retries: the dead-letter queue; terminal
    CANCELLED = "cancelled"  # cancelled by a person, or because a parent failed; terminal
    BLOCKED = "blocked"  # waiting for its parents (depends_on) to succeed; never leased

    def __str__(self) -> str:
        return self.value


class AttemptOutcome(str, enum.Enum):
    """How one attempt (one lease) of a job ended."""

    SUCCEEDED = "succeeded"  # acked
    FAILED = "failed"  # nacked (the job was retried or became dead)
    EXPIRED = "expired"  # its lease expired and the scheduler reclaimed it
    CANCELLED = "cancelled"  # the job was cancelled while the attempt ran

    def __str__(self) -> str:
        return self.value


S = JobStatus
LEASABLE = frozenset({S.PENDING, S.FAILED})
HOLDING_LEASE = frozenset({S.LEASED, S.PROCESSING})
CANCELLABLE = frozenset({S.PENDING, S.FAILED, S.LEASED, S.PROCESSING, S.BLOCKED})
RETRYABLE = frozenset({S.DEAD, S.FAILED, S.CANCELLED})
# A parent in one of these states will never succeed unless a person retries it.
PARENT_FAILED = frozenset({S.DEAD, S.CANCELLED})
TERMINAL = frozenset({S.SUCCEEDED, S.DEAD, S.CANCELLED})
# A job moves among these states by itself (lease, heartbeat, nack, expiry, hand-back), so a
# unique job keeps its slot in all of them: a slot let go in one and taken back in another
# could find a newer job in it. Terminal states may be added to keep the slot after the end.
LIVE = frozenset({S.PENDING, S.LEASED, S.PROCESSING, S.FAILED})
# One bit per status, for the unique-slot bitmask (jobs.unique_states); never renumber.
STATUS_BITS: dict[JobStatus, int] = {status: 1 << n for n, status in enumerate(JobStatus)}

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.PENDING: frozenset({S.LEASED, S.CANCELLED}),
    S.BLOCKED: frozenset({S.PENDING, S.CANCELLED}),
    S.LEASED: frozenset({S.PROCESSING, S.SUCCEEDED, S.FAILED, S.DEAD, S.CANCELLED, S.PENDING}),
    S.PROCESSING: frozenset({S.SUCCEEDED, S.FAILED, S.DEAD, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.DEAD: frozenset({S.PENDING}),
    S.FAILED: frozenset({S.LEASED, S.CANCELLED, S.PENDING}),
    S.CANCELLED: frozenset({S.PENDING, S.BLOCKED}),
}
# leased -> pending is the hand-back of a lease that was never delivered (no attempt spent).
# cancelled -> blocked: a dependant cancelled with its parent comes back when the parent is
# retried (as Airflow clears a task's downstream), or a person retries it before its parents are done.


def backoff_seconds(attempts: int) -> int:
    """Delay before the next try after `attempts` failed: 2, 4, 8 ... capped at an hour."""
    return MAX_BACKOFF_SECONDS if attempts >= 12 else min(2**attempts, MAX_BACKOFF_SECONDS)


def retries_remain(attempts, max_retries):
    """True while a failed job may be retried. Written with one operator so the store can
    apply the same rule to SQL columns (``retries_remain(jobs.c.attempts, ...)``)."""
    return attempts <= max_retries


def status_after_failure(attempts: int, max_retries: int) -> JobStatus:
    """A failed attempt is retried while attempts <= max_retries, then the job is dead."""
    return S.FAILED if retries_remain(attempts, max_retries) else S.DEAD


# backoff_seconds(n) == MAX_BACKOFF_SECONDS for every n >= BACKOFF_CAPPED_FROM (a test checks it);
# the store derives its SQL backoff table from backoff_seconds over 0 .. BACKOFF_CAPPED_FROM - 1.
BACKOFF_CAPPED_FROM = 12


@dataclass(frozen=True)
class Job:
    """One row of the jobs table, as the store returns it (timestamps are aware UTC)."""

    id: str
    type: str
    queue: str
    payload: dict[str, Any] | None  # None when a list left the bodies out
    priority: int
    status: JobStatus
    attempts: int
    max_retries: int
    run_at: datetime
    created_at: datetime
    updated_at: datetime
    lease_id: str | None = None
    leased_by: str | None = None
    leased_at: datetime | None = None
    lease_expires_at: datetime | None = None
    last_error: str | None = None
    result: Any = None
    finished_at: datetime | None = None
    timeout_seconds: int | None = None  # the worker gives an attempt up after this long
    schedule_id: str | None = None  # submitted by this schedule,
    scheduled_for: datetime | None = None  # for its tick at this time
    unique_key: str | None = None  # a unique job's slot (see UniqueOptions)
    unique_states: int | None = None  # the STATUS_BITS of the states that hold it
    workflow_id: str | None = None  # the workflow it was submitted in (POST /v1/workflows)
    ref: str | None = None  # its name within that workflow
    on_parent_failure: str | None = None  # a dependant's ParentFailure policy; None without parents
    pending_parents: int | None = None  # parents not yet met; None for a job without parents
    has_dependants: bool = False  # some job depends on it: settling it releases them
    cancelled_by_parent: str | None = None  # the failed parent that cancelled it (revived on its retry)
    traceparent: str | None = None  # the W3C trace context of the submit (TraceContext),
    tracestate: str | None = None  # None when it was submitted outside any trace
    tenant: str = "default"  # whose job it is (quorra.access.DEFAULT_TENANT)
    parents: tuple[ParentOutcome, ...] | None = None  # read for a lease only, not a column

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_columns(cls, columns: dict[str, Any]) -> Job:
        """A Job from a row's columns, as they are, the fields that are no column at their
        defaults. The frozen dataclass's __init__ sets each field through object.__setattr__,
        about 10 times the cost of this, on every job leased and settled; columns that are not
        exactly fields, or that leave out a field without a plain default, go through it."""
        names = columns.keys()
        if not (names <= _JOB_FIELDS and _JOB_REQUIRED <= names):
            return cls(**columns)
        job = object.__new__(cls)
        job.__dict__.update(_JOB_DEFAULTS)
        job.__dict__.update(columns)
        return job


_JOB_FIELDS = frozenset(field.name for field in fields(Job))
_JOB_DEFAULTS = {field.name: field.default for field in fields(Job) if field.default is not MISSING}
_JOB_REQUIRED = _JOB_FIELDS - _JOB_DEFAULTS.keys()  # no default, or a default_factory


@dataclass(frozen=True)
class ParentOutcome:
    """What a dependant's handler sees of one parent."""

    id: str
    type: str
    status: JobStatus
    ref: str | None = None
    result: Any = None
    last_error: str | None = None


class ParentFailure(str, enum.Enum):
    """What a dependant does when a parent ends dead or cancelled."""

    CANCEL = "cancel"  # cancelled too, naming the parent; back to blocked if the parent is retried
    RUN = "run"  # runs anyway once every parent has finished; its handler sees their outcomes


MAX_PARENTS = 1000


def parent_is_met(status: JobStatus | str, policy: ParentFailure | str) -> bool:
    """A parent no longer holds its dependant back: it succeeded or, for a dependant that
    runs anyway, it finished."""
    status = JobStatus(status)
    return status is S.SUCCEEDED or (ParentFailure(policy) is ParentFailure.RUN and status in TERMINAL)


@dataclass(frozen=True)
class Readiness:
    """Where a dependant stands, from its parents' states."""

    status: JobStatus  # blocked, pending or cancelled
    unmet: int  # parents still holding it back
    failed_parent: tuple[str, JobStatus] | None = None  # (id, status) of the parent that cancels it


def readiness(parents: dict[str, JobStatus], policy: ParentFailure | str) -> Readiness:
    """A dependant's status given its parents' (by id): cancelled if its policy is "cancel"
    and a parent is dead or cancelled, else pending once every parent is met, else blocked."""
    if ParentFailure(policy) is ParentFailure.CANCEL:
        failed = sorted((job_id, status) for job_id, status in parents.items() if status in PARENT_FAILED)
        if failed:
            return Readiness(S.CANCELLED, len(parents) - _met(parents, policy), failed[0])
    unmet = len(parents) - _met(parents, policy)
    return Readiness(S.PENDING if unmet == 0 else S.BLOCKED, unmet)


def _met(parents: dict[str, JobStatus], policy) -> int:
    return sum(parent_is_met(status, policy) for status in parents.values())


def parent_failed_message(parent_id: str, status: JobStatus | str) -> str:
    return f"parent {parent_id} is {JobStatus(status).value}"


def states_mask(states) -> int:
    """The STATUS_BITS of `states`; blocked goes with pending (a job waiting for its
    parents holds its unique slot as a pending one does)."""
    states = {JobStatus(state) for state in states}
    if S.PENDING in states:
        states.add(S.BLOCKED)
    return sum(STATUS_BITS[state] for state in states)


class UniqueOptions(BaseModel):
    """A unique job (River's unique opts): while a job with the same unique key holds its
    slot (is in one of `states`), submitting another returns that job instead. The key is
    the job type with `key`, or else with the queue and the payload; with `period_seconds`,
    also the period it is submitted in (periods aligned to the Unix epoch)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: StrictStr | None = Field(None, min_length=1, max_length=MAX_UNIQUE_KEY_CHARS)
    states: tuple[JobStatus, ...] = tuple(sorted(LIVE, key=list(JobStatus).index))
    period_seconds: Annotated[JsonInt, Field(ge=1, le=MAX_UNIQUE_PERIOD_SECONDS)] | None = None

    @field_validator("key")
    @classmethod
    def _storable_key(cls, key: str | None) -> str | None:
        if key is not None:
            check_portable_json(key, "key")
        return key

    @field_validator("states")
    @classmethod
    def _live_states_included(cls, states: tuple[JobStatus, ...]) -> tuple[JobStatus, ...]:
        if len(set(states)) < len(states):
            raise ValueError("name each status at most once")
        missing = [s.value for s in JobStatus if s in LIVE - set(states)]
        if missing:
            raise ValueError(
                "must include pending, leased, processing and failed (a job moves among them by itself); "
                f"missing {', '.join(missing)}"
            )
        return states

    @property
    def mask(self) -> int:
        return states_mask(self.states)


# W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent` header is
# version-trace_id-parent_id-flags in lowercase hex; `tracestate` is vendor data, at most
# 512 characters by the spec's own limit for propagating it.
_TRACEPARENT = re.compile("([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_TRACESTATE = re.compile("[ -~]*")  # visible ASCII and spaces
TRACEPARENT_CHARS = 55
MAX_TRACESTATE_CHARS = 512


class TraceContext(NamedTuple):
    """The W3C trace context a job was submitted in: a version 00 `traceparent` and its
    `tracestate` (None when absent or unusable)."""

    traceparent: str
    tracestate: str | None = None

    @classmethod
    def from_headers(cls, traceparent: str | None, tracestate: str | None = None) -> TraceContext | None:
        """The context of these header values, or None. As the W3C rules ask of a receiver,
        an invalid `traceparent` is ignored (the job is then outside any trace), not refused,
        and so is a `tracestate` without a valid `traceparent` or longer than 512 characters.
        A later version's `traceparent` is read as version 00, as the spec says."""
        text = (traceparent or "").strip()
        match = _TRACEPARENT.match(text)
        if match is None:
            return None
        version, trace_id, parent_id, flags = match.groups()
        if version == "ff" or trace_id == "0" * 32 or parent_id == "0" * 16:
            return None
        if len(text) != TRACEPARENT_CHARS and (version == "00" or text[TRACEPARENT_CHARS] != "-"):
            return None
        state = (tracestate or "").strip()
        usable = 0 < len(state) <= MAX_TRACESTATE_CHARS and _TRACESTATE.fullmatch(state) is not None
        return cls(f"00-{trace_id}-{parent_id}-{flags}", state if usable else None)


def is_valid_idempotency_key(text: object) -> bool:
    """1 to MAX_IDEMPOTENCY_KEY_CHARS visible ASCII characters."""
    return (
        isinstance(text, str)
        and len(text) <= MAX_IDEMPOTENCY_KEY_CHARS
        and _IDEMPOTENCY_KEY.fullmatch(text) is not None
    )


IdempotencyKey = Annotated[
    StrictStr,
    Field(
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY_CHARS,
        pattern=IDEMPOTENCY_KEY_PATTERN,
    ),
]


class JobSpec(BaseModel):
    """A job as a client submits it. Strict: no coercion, no unknown fields, no booleans
    where integers belong (pydantic's StrictInt refuses bool)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: TypeName
    payload: dict[str, Any]
    queue: QueueName = "default"
    priority: JsonInt = Field(0, ge=-1000, le=1000)
    delay_seconds: JsonInt = Field(0, ge=0, le=366 * 86400)
    max_retries: JsonInt = Field(3, ge=0, le=100)
    # None: QUORRA_DEFAULT_JOB_TIMEOUT, if set; else the attempt may run as long as it likes
    timeout_seconds: TimeoutSeconds | None = None
    # A retry with the same key and the same job returns the job the first try created.
    idempotency_key: IdempotencyKey | None = None
    unique: UniqueOptions | None = None
    # Wait (blocked) until every one of these jobs has succeeded.
    depends_on: tuple[JobId, ...] = Field((), max_length=MAX_PARENTS)
    on_parent_failure: ParentFailure = ParentFailure.CANCEL

    @field_validator("depends_on")
    @classmethod
    def _each_parent_once(cls, depends_on: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(depends_on))

    @field_validator("payload")
    @classmethod
    def _portable_json(cls, payload: dict[str, Any]) -> dict[str, Any]:
        check_portable_json(payload, "payload")
        return payload

    @classmethod
    def parse(cls, data: object, *, max_payload_bytes: int | None = None) -> JobSpec:
        """Validate a decoded JSON body; raise InvalidJobSpec with one detail per problem."""
        if not isinstance(data, dict):
            raise InvalidJobSpec("a job must be a JSON object")
        try:
            spec = cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidJobSpec("the job is invalid", details=describe_errors(exc)) from None
        if max_payload_bytes is not None and len(spec.payload_json.encode()) > max_payload_bytes:
            raise InvalidJobSpec(
                "payload is too large",
                details=[{"field": "payload", "message": f"larger than {max_payload_bytes} bytes"}],
            )
        return spec

    @functools.cached_property
    def payload_json(self) -> str:
        """The payload as compact JSON, made once (the size check and the store both need it)."""
        return _COMPACT_JSON.encode(self.payload)

    @property
    def is_plain(self) -> bool:
        """No idempotency key, unique options or parents: the batch INSERT's fast path."""
        return self.idempotency_key is None and self.unique is None and not self.depends_on

    def fingerprint(self) -> str:
        """The job as submitted, whatever its JSON spelling (key order, defaults left out),
        without its idempotency key: what a retry under that key must repeat exactly."""
        left_out = {"idempotency_key"} | ({"depends_on", "on_parent_failure"} if not self.depends_on else set())
        return _digest(self.model_dump(mode="json", exclude=left_out))

    def unique_key(self, period_start: int | None = None, *, tenant: str = "default") -> str | None:
        """The unique slot's key: the job type with the given key, or with the queue and the
        payload; the start of the period (Unix seconds) when the options have one; and the
        tenant, so that one tenant's unique job never holds another's slot (the default
        tenant's keys are as they were before tenants, so jobs submitted then keep theirs)."""
        if self.unique is None:
            return None
        if self.unique.key is not None:
            parts: dict[str, Any] = {"type": self.type, "key": self.unique.key}
        else:
            parts = {"type": self.type, "queue": self.queue, "payload": self.payload}
        if self.unique.period_seconds is not None:
            parts["period_start"] = period_start
        if tenant != "default":
            parts["tenant"] = tenant
        return _digest(parts)


# One encoder for every payload: json.dumps with options would build one per call.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _digest(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def period_start(unix_seconds: float, period_seconds: int) -> int:
    """The start of the period (aligned to the Unix epoch) that holds `unix_seconds`."""
    return int(unix_seconds // period_seconds) * period_seconds


def parse_batch(data: object, *, max_payload_bytes: int | None = None) -> list[JobSpec]:
    """A batch body {"jobs": [...]}: all valid or InvalidJobSpec naming each bad index."""
    if not isinstance(data, dict) or set(data) != {"jobs"} or not isinstance(data["jobs"], list):
        raise InvalidJobSpec('a batch must be {"jobs": [...]}')
    items = data["jobs"]
    if not 1 <= len(items) <= MAX_BATCH_SIZE:
        raise InvalidJobSpec(f"a batch holds 1 to {MAX_BATCH_SIZE} jobs, got {len(items)}")
    specs, problems = [], []
    for index, item in enumerate(items):
        try:
            specs.append(JobSpec.parse(item, max_payload_bytes=max_payload_bytes))
        except InvalidJobSpec as exc:
            for detail in exc.details or [{"field": "", "message": exc.message}]:
                problems.append({**detail, "field": f"jobs[{index}].{detail['field']}".rstrip(".")})
    if problems:
        raise InvalidJobSpec("the batch is invalid; no job was created", details=problems)
    return specs


def check_portable_json(value: Any, name: str = "value") -> None:
    """Refuse what one of our databases would store differently or not at all, saying where
    (``payload.items[2].name: ...``): NUL characters (PostgreSQL jsonb rejects them, SQLite
    keeps them), unpaired UTF-16 surrogates (``"\\ud800"`` decodes to a str that neither
    database can store as UTF-8), nesting deeper than MAX_PAYLOAD_DEPTH, and non-finite floats."""
    try:
        _check_portable(value, 0)
    except NotPortable as exc:
        raise ValueError(f"{_printable(name + exc.where)}: {exc.reason}") from None


class NotPortable(ValueError):
    """Raised deep in a JSON value; each level adds its key on the way out, so the happy
    path builds no path strings."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
        self.where = ""

    def inside(self, step: str) -> NotPortable:
        self.where = step + self.where
        return self


def _check_portable(value: Any, depth: int) -> None:
    if depth > MAX_PAYLOAD_DEPTH:
        raise NotPortable(f"nested deeper than {MAX_PAYLOAD_DEPTH} levels")
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise NotPortable("numbers must be finite")
    elif isinstance(value, dict):
        for key, item in value.items():
            try:
                _check_text(key, " (the key)")
                _check_portable(item, depth + 1)
            except NotPortable as exc:
                raise exc.inside(f".{key}") from None
    elif isinstance(value, list):
        for index, item in enumerate(value):
            try:
                _check_portable(item, depth + 1)
            except NotPortable as exc:
                raise exc.inside(f"[{index}]") from None


# json.loads joins a valid pair (\\ud83d\\ude00) into one character: a surrogate left is unpaired.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_text(text: str, what: str = "") -> None:
    if "\x00" in text:
        raise NotPortable(f"strings may not contain the NUL character (\\u0000){what}")
    if _SURROGATE.search(text):
        raise NotPortable(f"strings may not contain an unpaired UTF-16 surrogate (\\ud800-\\udfff){what}")


def _printable(path: str) -> str:
    """A path as it may be echoed to a client: NULs and lone surrogates in key names escaped."""
    return path.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\u0000")


def describe_errors(exc: ValidationError) -> list[dict[str, str]]:
    details = []
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        field = ".".join(str(part) for part in error["loc"])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        details.append({"field": field, "message": message.removeprefix("Value error, ")})
    return details


CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def parse_job_id(text: str) -> str | None:
    """The canonical form of a job id, or None when it is not a UUID. An id already canonical
    (as every id the API hands out) is matched, 5 times cheaper than a parse."""
    if isinstance(text, str) and CANONICAL_UUID.fullmatch(text):
        return text
    try:
        return str(uuid.UUID(text))
    except (ValueError, AttributeError, TypeError):
        return None
