"""Queues as an operator sets them: paused or not. A queue needs no row to exist (it is
made by its first job); a row is written the first time it is paused, and a lease reads
it by primary key (see leasing.not_paused), so a pause holds for every gRPC server at once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from quorra.access import DEFAULT_TENANT
from quorra.audit import AuditEntry
from quorra.errors import InvalidArgument
from quorra.jobs import MAX_QUEUE_CHARS, is_valid_name
from quorra.schema import queues
from quorra.store.audit import record_audit
from quorra.store.base import StoreBase, logger


@dataclass(frozen=True)
class QueueState:
    queue: str
    is_paused: bool
    paused_at: datetime | None = None


class Queues(StoreBase):
    """Pause and resume queues; read which are paused."""

    def set_queue_paused(
        self,
        queue: str,
        is_paused: bool,
        *,
        tenant: str = DEFAULT_TENANT,
        now: datetime | None = None,
        audit: AuditEntry | None = None,
    ) -> QueueState:
        """Pause or resume `queue` (idempotent: pausing a paused queue keeps its paused_at).
        A queue that holds no job yet may be paused too: its first jobs then wait."""
        if not is_valid_name(queue, MAX_QUEUE_CHARS):
            raise InvalidArgument(f"invalid queue name {queue!r}: use letters, digits and _.:- (1-100 characters)")
        with self._transaction() as conn:
            clock = self._clock(now)
            insert = (postgresql if self.dialect == "postgresql" else sqlite).insert(queues)
            paused_at = clock.now() if is_paused else None
            statement = insert.values(
                tenant=tenant,
                name=queue,
                is_paused=is_paused,
                paused_at=paused_at,
                updated_at=clock.now(),
            )
            changed = queues.c.is_paused != statement.excluded.is_paused
            statement = statement.on_conflict_do_update(
                index_elements=[queues.c.tenant, queues.c.name],
                set_={
                    "is_paused": is_paused,
                    "paused_at": paused_at,
                    "updated_at": clock.now(),
                },
                where=changed,
            )
            conn.execute(statement)
            row = conn.execute(select(queues).where(queues.c.tenant == tenant, queues.c.name == queue)).one()
            record_audit(conn, clock, audit)
        event = "queue.paused" if is_paused else "queue.resumed"
        logger.info(event.replace(".", " "), extra={"event": event, "queue": queue, "tenant": tenant})
        return QueueState(row.name, row.is_paused, row.paused_at)

    def paused_queues(self, *, tenant: str = DEFAULT_TENANT) -> dict[str, datetime | None]:
        """Every paused queue of `tenant` and since when."""
        query = select(queues.c.name, queues.c.paused_at).where(queues.c.tenant == tenant, queues.c.is_paused)
        query = query.order_by(queues.c.name)
        with self._transaction() as conn:
            return dict(conn.execute(query).all())

    def paused_by_tenant(self) -> dict[tuple[str, str], datetime | None]:
        """Every paused queue of every tenant, by (tenant, queue), and since when (the
        metrics' scrape)."""
        query = select(queues.c.tenant, queues.c.name, queues.c.paused_at).where(queues.c.is_paused)
        with self._transaction() as conn:
            return {(tenant, name): paused_at for tenant, name, paused_at in conn.execute(query)}
