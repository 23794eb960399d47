"""The jobs table's filters, read from the query string and written back into links, so a
filtered view is a URL to share. Bad values are a 400 page naming each one."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from itsdangerous import BadSignature, URLSafeSerializer
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from quorra.errors import InvalidArgument
from quorra.jobs import JobStatus, QueueName, TypeName, describe_errors, parse_job_id
from quorra.store import JobFilter as BulkFilter
from quorra.store import ListPosition

PAGE_SIZE = 50
MAX_SEARCH_CHARS = 200
# Beside the job states: pending jobs whose run_at is still ahead, and jobs a worker may take now.
VIEWS = ("scheduled", "ready")
StatusChoice = Literal[tuple(status.value for status in JobStatus) + VIEWS]  # type: ignore[valid-type]
STATUS_CHOICES = [status.value for status in JobStatus] + list(VIEWS)


def _form_time(value: object) -> datetime:
    """ISO 8601 text in UTC; one without an offset (an HTML datetime-local field) is UTC, as
    the page shows. Never a number (pydantic would take it as Unix time)."""
    if not isinstance(value, str):
        raise ValueError("give a time as text, such as 2026-12-02T10:00 (UTC)")  # noqa: TRY004 - pydantic wants ValueError
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 has no UTC time
        raise ValueError("out of range once converted to UTC") from None


FormTime = Annotated[datetime, BeforeValidator(_form_time)]


class JobsQuery(BaseModel):
    """What the jobs table shows: every field optional, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue: QueueName | None = None
    status: StatusChoice | None = None
    type: TypeName | None = None
    since: FormTime | None = None  # created at or after
    until: FormTime | None = None  # created before
    q: str | None = Field(None, max_length=MAX_SEARCH_CHARS, pattern="^[^\\x00]*$")  # a job id, or payload text
    cursor: str | None = Field(None, max_length=500)

    @field_validator("queue", "status", "type", "since", "until", "q", "cursor", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        """An empty form field means no filter."""
        return None if isinstance(value, str) and not value.strip() else value

    @classmethod
    def from_args(cls, args) -> JobsQuery:
        repeated = sorted(name for name in args if len(args.getlist(name)) > 1)
        if repeated:
            raise InvalidArgument(f"given more than once: {', '.join(repeated)}")
        try:
            return cls.model_validate(args.to_dict())
        except ValidationError as exc:
            problems = "; ".join(f"{d['field']}: {d['message']}" for d in describe_errors(exc))
            raise InvalidArgument(f"invalid filter ({problems})") from None

    @property
    def job_id(self) -> str | None:
        """The search text as a job id, when it is one."""
        return parse_job_id(self.q) if self.q else None

    def store_filter(self) -> dict[str, Any]:
        """The filter as the store's listing and bulk verbs take it (the cursor aside): the
        search text is the job's id when it is one, else a substring of the payload."""
        return {
            "queue": self.queue,
            "status": self.status,
            "type": self.type,
            "created_from": self.since,
            "created_to": self.until,
            "job_id": self.job_id,
            "payload_contains": self.q if self.q and self.job_id is None else None,
        }

    def bulk_filter(self, status: JobStatus, tenant: str) -> BulkFilter:
        """The jobs a bulk action of this view acts on: every `status` job of `tenant` that
        matches, not only the page shown: its queue, type, time range and payload search. A search by job
        id is refused rather than ignored (the job's own page acts on one job), so that no
        action reaches more jobs than were asked."""
        if self.queue is None:
            raise InvalidArgument("choose a queue first: bulk actions act on one queue's jobs")
        if self.job_id is not None:
            raise InvalidArgument("a search by job id chooses one job: act on it from its page")
        return BulkFilter(self.queue, status, self.type, self.since, self.until, self.q, tenant=tenant)

    @property
    def is_filtered(self) -> bool:
        return any(value is not None for name, value in self.query().items() if name != "cursor")

    def query(self, **changes: Any) -> dict[str, Any]:
        """The filter as query-string values (None left out), with `changes` applied."""
        values = self.model_dump() | changes
        return {name: _text(value) for name, value in values.items() if value is not None}

    def url_query(self, **changes: Any) -> str:
        return urlencode(self.query(**changes))


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return str(value)


class PageCursors:
    """Keyset positions as opaque, signed URL values: a made-up cursor is a 400, never a query."""

    def __init__(self, secret: bytes):
        self.serializer = URLSafeSerializer(secret, salt="quorra.dashboard.jobs-cursor")

    def encode(self, position: ListPosition) -> str:
        return self.serializer.dumps([position.created_at.isoformat(), position.id])

    def decode(self, cursor: str) -> ListPosition:
        try:
            created_at, job_id = self.serializer.loads(cursor)
            when = datetime.fromisoformat(created_at)
            if when.tzinfo is None:
                raise ValueError("naive timestamp")
            return ListPosition(when.astimezone(UTC), str(uuid.UUID(job_id)))
        except (BadSignature, ValueError, TypeError, OverflowError):
            raise InvalidArgument("that page link is not valid; start again from the newest jobs") from None
