"""The audit log: entries written inside the transaction of the action they record
(``record_audit``, called by the verbs of the other store modules), read newest first in
keyset pages, and pruned by age. Nothing here updates an entry."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, insert, literal, select, tuple_
from sqlalchemy.sql.elements import ColumnElement

from quorra.access import DEFAULT_TENANT
from quorra.audit import AuditEntry, AuditRecord
from quorra.errors import InvalidArgument
from quorra.schema import UTCDateTime, audit_log
from quorra.store.base import MAX_LIST_LIMIT, Clock, ListPosition, StoreBase, logger


@dataclass(frozen=True)
class AuditPage:
    records: list[AuditRecord]
    next_cursor: ListPosition | None  # None on the last page


@dataclass(frozen=True)
class AuditFilter:
    """What GET /v1/audit may ask for; every field narrows the list."""

    action: str | None = None
    actor: str | None = None
    target: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


def record_audit(conn: Connection, clock: Clock, entry: AuditEntry | None) -> None:
    """Insert `entry` on `conn`, in the caller's transaction: the action and its record
    commit together or not at all. None (no actor known) records nothing."""
    if entry is not None:
        conn.execute(insert(audit_log).values(id=str(uuid.uuid4()), occurred_at=clock.now(), **entry.row()))


class AuditLog(StoreBase):
    """Reading and pruning the log (writing is record_audit's, inside each action)."""

    def record_event(self, entry: AuditEntry, *, now: datetime | None = None) -> None:
        """Record an entry that changes nothing else (a dashboard sign-in), in a transaction of its own."""
        with self._transaction() as conn:
            record_audit(conn, self._clock(now), entry)

    def list_audit(
        self,
        where: AuditFilter = AuditFilter(),
        *,
        tenant: str = DEFAULT_TENANT,
        limit: int = 50,
        cursor: ListPosition | None = None,
    ) -> AuditPage:
        """`tenant`'s entries (the actions of its principals), newest first."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidArgument(f"limit must be between 1 and {MAX_LIST_LIMIT}")
        terms = [audit_log.c.tenant == tenant, *_filters(where, cursor)]
        query = select(audit_log).where(*terms).order_by(*_NEWEST_FIRST).limit(limit + 1)
        with self._transaction() as conn:
            rows = conn.execute(query).all()
        next_cursor = _position(rows[limit - 1]) if len(rows) > limit else None
        return AuditPage([to_record(row) for row in rows[:limit]], next_cursor)

    def prune_audit(self, before: datetime, *, limit: int = 500) -> int:
        """Delete up to `limit` entries older than `before` (QUORRA_AUDIT_RETENTION ago)."""
        doomed = select(audit_log.c.id).where(audit_log.c.occurred_at < literal(before, UTCDateTime)).limit(limit)
        if self.dialect == "postgresql":
            doomed = doomed.with_for_update(skip_locked=True)
        with self._transaction() as conn:
            deleted = conn.execute(delete(audit_log).where(audit_log.c.id.in_(doomed.scalar_subquery()))).rowcount
        if deleted:
            logger.info("audit entries pruned", extra={"event": "audit.pruned", "count": deleted})
        return deleted


_NEWEST_FIRST = (audit_log.c.occurred_at.desc(), audit_log.c.id.desc())


def _filters(where: AuditFilter, cursor: ListPosition | None) -> list[ColumnElement]:
    conditions = [
        audit_log.c[name] == getattr(where, name)
        for name in ("action", "actor", "target")
        if getattr(where, name) is not None
    ]
    if where.since is not None:
        conditions.append(audit_log.c.occurred_at >= literal(where.since, UTCDateTime))
    if where.until is not None:
        conditions.append(audit_log.c.occurred_at < literal(where.until, UTCDateTime))
    if cursor is not None:
        after = tuple_(literal(cursor.created_at, UTCDateTime), literal(cursor.id, audit_log.c.id.type))
        conditions.append(tuple_(audit_log.c.occurred_at, audit_log.c.id) < after)
    return conditions


def _position(row) -> ListPosition:
    return ListPosition(row.occurred_at, str(uuid.UUID(str(row.id))))


def to_record(row) -> AuditRecord:
    data = row._asdict()
    data["id"] = str(uuid.UUID(str(data["id"])))
    return AuditRecord(**data)
