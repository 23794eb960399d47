"""/v1/audit: the audit log, newest first, for admins (audit:read): the entries of their own
tenant's principals only. Read only: no route changes or deletes an entry
(QUORRA_AUDIT_RETENTION prunes them)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from flask import Blueprint, request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from quorra.access import Permission
from quorra.api.auth import current_tenant, require_api_key, requires
from quorra.api.cursor import CursorCodec
from quorra.api.jobs import parse_query, timestamp
from quorra.api.services import services
from quorra.audit import MAX_ACTOR_CHARS, MAX_TARGET_CHARS, Action, AuditRecord
from quorra.store import MAX_LIST_LIMIT, AuditFilter

bp = Blueprint("audit", __name__, url_prefix="/v1/audit")
_NUMBER = re.compile(r"[-+]?\d+(\.\d*)?([eE][-+]?\d+)?")
NO_NUL = "^[^\\x00]*$"  # PostgreSQL text cannot hold NUL: refused as bad input, not failed in the query
bp.before_request(require_api_key)


class AuditQuery(BaseModel):
    """The query string of GET /v1/audit; unknown parameters are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Action | None = None
    actor: Annotated[str, Field(min_length=1, max_length=MAX_ACTOR_CHARS, pattern=NO_NUL)] | None = None
    target: Annotated[str, Field(min_length=1, max_length=MAX_TARGET_CHARS, pattern=NO_NUL)] | None = None
    since: AwareDatetime | None = None  # inclusive
    until: AwareDatetime | None = None  # exclusive
    limit: int = Field(50, ge=1, le=MAX_LIST_LIMIT)
    cursor: str | None = Field(None, min_length=1, max_length=500)

    @field_validator("since", "until", mode="before")
    @classmethod
    def _text_time(cls, value: object) -> object:
        # pydantic would read '1700000000' as Unix time: only ISO 8601, as documented
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            raise ValueError("expected an ISO 8601 date and time with its zone, e.g. 2026-12-01T00:00:00Z")
        return value

    @field_validator("since", "until")
    @classmethod
    def _in_utc(cls, moment: datetime | None) -> datetime | None:
        try:
            return None if moment is None else moment.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00:00+01:00 is before the first UTC moment
            raise ValueError("out of range") from None


@bp.get("")
@requires(Permission.AUDIT_READ)
def list_audit():
    query = parse_query(AuditQuery, request.args)
    codec = CursorCodec(services().settings.cursor_keys)
    where = AuditFilter(
        action=query.action.value if query.action else None,
        actor=query.actor,
        target=query.target,
        since=query.since,
        until=query.until,
    )
    page = services().store.list_audit(
        where,
        tenant=current_tenant(),
        limit=query.limit,
        cursor=codec.decode(query.cursor) if query.cursor else None,
    )
    return {
        "entries": [entry_json(record) for record in page.records],
        "next_cursor": codec.encode(page.next_cursor) if page.next_cursor else None,
    }


def entry_json(record: AuditRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "occurred_at": timestamp(record.occurred_at),
        "tenant": record.tenant,
        "actor": record.actor,
        "actor_name": record.actor_name,
        "action": record.action,
        "target": record.target,
        "remote_addr": record.remote_addr,
        "request_id": record.request_id,
        "details": record.details,
    }
