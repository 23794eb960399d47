"""The SQL of rate and concurrency limits (quorra.limits): setting them on a queue or a
tenant, reading them, and granting a lease its share inside the lease transaction.

How a lease obeys them, fleet-wide: the fast lease statement (leasing._ready_cte) skips
every queue that has limits, and every queue of a tenant that has them, through its probe
of the queues and tenants tables. Those are leased by a transaction of their own
(Leasing._lease_limited): it locks the limited tenant and queue rows (SELECT ... FOR UPDATE,
tenant first, then queues by name, so two leases never wait on each other in a cycle),
counts the jobs in flight (through the indexes there are: ix_jobs_queue_status for a queue's,
the reaper's partial index of held leases for a tenant's, O(jobs in flight), bounded by what
the workers hold; an index of their own would cost every lease, limited or not, an insertion) and refills the token buckets, leases at most
what that allows, spends the tokens and commits. On PostgreSQL, in READ COMMITTED, each
statement after the lock sees every lease committed by the transaction that held it
before; on SQLite, BEGIN IMMEDIATE already serialises every writer.

Which queues take that path is known to each process through LimitCache, read again at
most once a second; a stale answer only delays a new limit's queue (the fast statement
skips it either way), it never lets a lease pass a limit.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Table, bindparam, exists, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import Select

from quorra.access import DEFAULT_TENANT
from quorra.audit import AuditEntry
from quorra.errors import InvalidArgument
from quorra.jobs import HOLDING_LEASE, MAX_QUEUE_CHARS, is_valid_name
from quorra.limits import NO_LIMITS, Limits, Rate
from quorra.schema import UTCDateTime, jobs, queues, tenants
from quorra.store.audit import record_audit
from quorra.store.base import Clock, StoreBase, logger, status_in

REFRESH_SECONDS = 1.0  # how stale a process's knowledge of which queues are limited may be


def has_limits(table: Table) -> ColumnElement:
    """The row (of queues or tenants) sets a limit."""
    return or_(table.c.max_in_flight.is_not(None), table.c.rate_limit.is_not(None))


def limits_of(row) -> Limits:
    rate = None if row.rate_limit is None else Rate(row.rate_limit, row.rate_period_seconds)
    return Limits(row.max_in_flight, rate)


@dataclass(frozen=True)
class KnownLimits:
    """The limited queues ((tenant, name) -> limits) and tenants of the installation."""

    queues: dict[tuple[str, str], Limits] = field(default_factory=dict)
    tenants: dict[str, Limits] = field(default_factory=dict)

    def apply_to(self, tenant: str, names: Sequence[str]) -> bool:
        """A lease of `tenant`'s `names` must take the limited path."""
        return tenant in self.tenants or any((tenant, name) in self.queues for name in names)

    def tenants_limited_on(self, names: Sequence[str]) -> list[str]:
        """The tenants whose limits apply to a fleet lease of `names`, by name."""
        named = set(names)
        return sorted(set(self.tenants) | {tenant for tenant, name in self.queues if name in named})

    def retry_after(self, tenant: str, names: Sequence[str]) -> float | None:
        """The longest a worker waiting on these queues should sleep before it asks again:
        the time a rate's empty bucket takes to fill (None: no rate applies)."""
        limits = [self.queues.get((tenant, name), NO_LIMITS) for name in names] + [self.tenants.get(tenant, NO_LIMITS)]
        waits = [each.rate.refill_seconds for each in limits if each.rate is not None]
        return min(waits) if waits else None


class LimitCache:
    """What this process knows of the installation's limits. The first lease reads them (and
    the first after this process changed one); after that, the first lease that finds them
    older than REFRESH_SECONDS has them read again in a thread of its own and goes on with
    what is known: no lease waits for the two reads (an idle worker's next job would, each
    second), and a stale copy only delays a new limit, since the lease statement itself skips
    limited queues."""

    def __init__(self) -> None:
        self._known = KnownLimits()
        self._read_at = -math.inf
        self._reading = threading.Lock()

    def get(self, read: Callable[[], KnownLimits]) -> KnownLimits:
        age = time.monotonic() - self._read_at
        if age < REFRESH_SECONDS or not self._reading.acquire(blocking=False):
            return self._known
        if math.isinf(age):
            self._read(read, raising=True)
            return self._known
        known = self._known  # this lease's copy, whenever the thread is done
        threading.Thread(target=self._read, args=(read,), name="quorra-limits-refresh", daemon=True).start()
        return known

    def _read(self, read: Callable[[], KnownLimits], *, raising: bool = False) -> None:
        """Read the limits (holding the reading lock, which this releases)."""
        try:
            self._known, self._read_at = read(), time.monotonic()
        except Exception:
            if raising:
                raise
            self._read_at = time.monotonic()  # tried again in REFRESH_SECONDS, not by every lease
            logger.warning(
                "could not read the limits; keeping the last known", extra={"event": "limits.unread"}, exc_info=True
            )
        finally:
            self._reading.release()

    def expire(self) -> None:
        """This process changed a limit: read them again at the next lease."""
        self._read_at = -math.inf


class LimitSettings(StoreBase):
    """Set and read the limits of queues and tenants."""

    def __init__(self, engine) -> None:
        super().__init__(engine)
        self._limit_cache = LimitCache()

    def set_queue_limits(
        self, queue: str, limits: Limits, *, tenant: str = DEFAULT_TENANT, audit: AuditEntry | None = None
    ) -> Limits:
        """Replace `queue`'s limits (a queue that holds no job yet may be limited too). Its
        rate's bucket starts full."""
        if not is_valid_name(queue, MAX_QUEUE_CHARS):
            raise InvalidArgument(f"invalid queue name {queue!r}: use letters, digits and _.:- (1-100 characters)")
        with self._transaction() as conn:
            clock = self._clock(None)
            row = {"tenant": tenant, "name": queue, "is_paused": False} | _limit_values(limits, clock)
            self._upsert_limits(conn, queues, row, [queues.c.tenant, queues.c.name], _limit_values(limits, clock))
            record_audit(conn, clock, audit)
        self._limits_changed("queue", tenant, limits, queue=queue)
        return limits

    def set_tenant_limits(self, tenant: str, limits: Limits, *, audit: AuditEntry | None = None) -> Limits:
        """Replace the limits of `tenant`'s queues all together."""
        with self._transaction() as conn:
            clock = self._clock(None)
            row = {"name": tenant} | _limit_values(limits, clock)
            self._upsert_limits(conn, tenants, row, [tenants.c.name], _limit_values(limits, clock))
            record_audit(conn, clock, audit)
        self._limits_changed("tenant", tenant, limits)
        return limits

    def queue_limits(self, *, tenant: str = DEFAULT_TENANT) -> dict[str, Limits]:
        """The limited queues of `tenant`, by name."""
        query = select(queues).where(queues.c.tenant == tenant, has_limits(queues)).order_by(queues.c.name)
        with self._transaction() as conn:
            return {row.name: limits_of(row) for row in conn.execute(query)}

    def tenant_limits(self, tenant: str) -> Limits:
        with self._transaction() as conn:
            row = conn.execute(select(tenants).where(tenants.c.name == tenant)).one_or_none()
        return NO_LIMITS if row is None else limits_of(row)

    def known_limits(self) -> KnownLimits:
        """Which queues and tenants are limited, as this process knows (REFRESH_SECONDS)."""
        return self._limit_cache.get(self._read_known_limits)

    def _read_known_limits(self) -> KnownLimits:
        with self._one_statement() as conn:
            limited = {(row.tenant, row.name): limits_of(row) for row in conn.execute(_LIMITED_QUEUES)}
        with self._one_statement() as conn:
            limited_tenants = {row.name: limits_of(row) for row in conn.execute(_LIMITED_TENANTS)}
        return KnownLimits(limited, limited_tenants)

    def _upsert_limits(self, conn: Connection, table: Table, row: dict, key: list, changes: dict) -> None:
        insert = (postgresql if self.dialect == "postgresql" else sqlite).insert(table)
        conn.execute(insert.values(row).on_conflict_do_update(index_elements=key, set_=changes))

    def _limits_changed(self, kind: str, tenant: str, limits: Limits, **target: str) -> None:
        self._limit_cache.expire()
        logger.info(
            "limits set",
            extra={"event": f"{kind}.limits_set", "tenant": tenant, **target, **limits.as_json()},
        )


_LIMITED_QUEUES = select(queues).where(has_limits(queues))
_LIMITED_TENANTS = select(tenants).where(has_limits(tenants))


def _limit_values(limits: Limits, clock: Clock) -> dict:
    rate = limits.rate
    return {
        "max_in_flight": limits.max_in_flight,
        "rate_limit": None if rate is None else rate.limit,
        "rate_period_seconds": None if rate is None else rate.period_seconds,
        "rate_tokens": None,  # a full bucket
        "rate_refilled_at": None,
        "updated_at": clock.now(),
    }


# -- inside a lease ---------------------------------------------------------------------------


def limits_apply(conn: Connection, tenant: str, names: Sequence[str]) -> bool:
    """SQLite, inside the lease's transaction: do limits apply to this lease?"""
    queue_limited = select(queues.c.name).where(queues.c.tenant == tenant, queues.c.name.in_(names), has_limits(queues))
    tenant_limited = select(tenants.c.name).where(tenants.c.name == tenant, has_limits(tenants))
    return conn.execute(select(exists(queue_limited) | exists(tenant_limited))).scalar()


@dataclass
class Bucketed:
    """A limited queue or tenant during one lease: its limits, what it allows now, and the
    tokens its bucket holds (None: no rate)."""

    limits: Limits
    left: float
    tokens: float | None
    refilled_at: datetime | None
    taken: int = 0

    def take(self, count: int) -> None:
        self.left -= count
        self.taken += count


@dataclass
class Grant:
    """What the limits allow one lease, as it leases group after group of queues."""

    now: datetime
    tenant: Bucketed | None
    queues: dict[str, Bucketed]

    def groups(self, names: Sequence[str]) -> Iterator[list[str]]:
        """Each limited queue alone (the worker's order), then every other queue together."""
        yield from ([name] for name in names if name in self.queues)
        free = [name for name in names if name not in self.queues]
        if free:
            yield free

    def allows(self, group: list[str], wanted: int) -> int:
        bounds = [wanted]
        if group[0] in self.queues:
            bounds.append(self.queues[group[0]].left)
        if self.tenant is not None:
            bounds.append(self.tenant.left)
        return max(0, int(min(bounds)))

    def allows_any(self, names: Sequence[str]) -> bool:
        return any(self.allows(group, 1) for group in self.groups(names))

    def took(self, group: list[str], count: int) -> None:
        if group[0] in self.queues:
            self.queues[group[0]].take(count)
        if self.tenant is not None:
            self.tenant.take(count)


def grant(conn: Connection, clock: Clock, tenant: str, names: Sequence[str]) -> Grant:
    """Lock the limited rows of this lease, refill their buckets and, unless the buckets
    allow nothing anyway (a worker asking again before a token came: most asks of a busy
    rate), count the jobs in flight. The fewer statements, the shorter the lock is held."""
    lock_tenant, lock_queues = _locks(conn.dialect.name)
    tenant_row = conn.execute(lock_tenant, {"tenant": tenant}).one_or_none()
    queue_rows = conn.execute(lock_queues, {"tenant": tenant, "names": sorted(names)}).all()
    locked = [row for row in (tenant_row, *queue_rows) if row is not None]
    now = clock.fixed or (locked[-1].locked_at if locked else _database_now(conn))
    granted = _granted(now, tenant_row, queue_rows, {})
    if any(row.max_in_flight is not None for row in locked) and granted.allows_any(names):
        counted = None if tenant_row is not None else [row.name for row in queue_rows]
        granted = _granted(now, tenant_row, queue_rows, _in_flight(conn, tenant, counted))
    return granted


def _granted(now: datetime, tenant_row, queue_rows, in_flight: dict[str, int]) -> Grant:
    limited = {row.name: _bucketed(row, now, in_flight.get(row.name, 0)) for row in queue_rows}
    whole = None if tenant_row is None else _bucketed(tenant_row, now, sum(in_flight.values()))
    return Grant(now, whole, limited)


def spend(conn: Connection, tenant: str, granted: Grant) -> None:
    """Take the leased jobs' tokens out of the buckets."""
    for name, queue in granted.queues.items():
        if queue.tokens is not None and queue.taken:
            where = (queues.c.tenant == tenant) & (queues.c.name == name)
            conn.execute(update(queues).where(where).values(_bucket_after(queue, granted.now)))
    whole = granted.tenant
    if whole is not None and whole.tokens is not None and whole.taken:
        conn.execute(update(tenants).where(tenants.c.name == tenant).values(_bucket_after(whole, granted.now)))


def _bucketed(row, now: datetime, in_flight: int) -> Bucketed:
    limits = limits_of(row)
    tokens = None if limits.rate is None else limits.rate.tokens_at(now, row.rate_tokens, row.rate_refilled_at)
    return Bucketed(limits, limits.allowance(in_flight, tokens), tokens, row.rate_refilled_at)


def _bucket_after(bucketed: Bucketed, now: datetime) -> dict:
    """The bucket's state after this lease. Never dated back: `now` may be a little older
    than the last holder's (read as the lock was asked for, see _LOCK_QUEUES)."""
    refilled_at = now if bucketed.refilled_at is None else max(now, bucketed.refilled_at)
    return {"rate_tokens": bucketed.tokens - bucketed.taken, "rate_refilled_at": refilled_at}


def _in_flight(conn: Connection, tenant: str, names: list[str] | None) -> dict[str, int]:
    """Jobs leased or processing, by queue: of `names`, or of every queue of the tenant."""
    query = _IN_FLIGHT if names is None else _IN_FLIGHT.where(jobs.c.queue.in_(names))
    return dict(conn.execute(query, {"tenant": tenant}).all())


def _database_now(conn: Connection):
    """PostgreSQL's clock as this statement runs: now() is the transaction's start, which
    may be before the lock this lease waited for."""
    return conn.execute(select(func.clock_timestamp())).scalar_one()


@functools.cache
def _locks(dialect: str) -> tuple[Select, Select]:
    """SELECT ... FOR UPDATE of the tenant's row, then of the queues' rows by name (SQLite
    has no row locks: BEGIN IMMEDIATE holds the database). On PostgreSQL each row comes
    with the clock, computed as the row is read, before the lock is granted, and again if
    the holder changed the row meanwhile (as a lease that spent tokens does): never older
    than the bucket's rate_refilled_at, and never written back older (_bucket_after)."""
    clock = func.clock_timestamp() if dialect == "postgresql" else literal(None, UTCDateTime)
    tenant = select(tenants, clock.label("locked_at")).where(tenants.c.name == bindparam("tenant"), has_limits(tenants))
    named = queues.c.name.in_(bindparam("names", expanding=True))
    queue = select(queues, clock.label("locked_at")).where(queues.c.tenant == bindparam("tenant"), named)
    queue = queue.where(has_limits(queues)).order_by(queues.c.name)
    return tenant.with_for_update(), queue.with_for_update()


_IN_FLIGHT = (
    select(jobs.c.queue, func.count())
    .where(jobs.c.tenant == bindparam("tenant"), status_in(HOLDING_LEASE))
    .group_by(jobs.c.queue)
)
