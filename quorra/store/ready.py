"""The ready walk: which ready jobs a lease takes, and in what order (fair scheduling).

A lease reads partitions, (tenant, queue) pairs: its tenant's named queues or, for a fleet
lease (tenant ALL_TENANTS), every tenant with waiting jobs in a named queue, found by
skipping through ix_jobs_ready (queue, tenant, ...): one index probe per tenant, never a
scan of the backlog. A paused partition yields nothing. Each other partition offers its
best ready jobs by its own order (priority DESC, run_at, id), walked one priority level at
a time (a probe of the index per level), so that delayed jobs of a higher priority are
stepped over, not read: first max_jobs shared among the lease's tenants (rounded up), then,
if the offers fall short of max_jobs, up to max_jobs from each partition that offered its
whole share. The lease then takes them in turns:

- within a tenant, priority first: a higher priority wins across the tenant's queues;
  among its queues at one level, round-robin (the 1st job of each, the 2nd of each, ...);
- across tenants, round-robin over each tenant's own sequence (the 1st job of every
  tenant, then the 2nd of every tenant, ...): a tenant's priorities order its own jobs only,
  and a tenant gets no larger share by spreading its jobs over more queues.

Which tenant (and which queue of a tenant) goes first in a round rotates from lease to
lease (`rotation`), so that leases of one job also take turns. A fleet lease over at least
max_jobs tenants takes one round, the first job of max_jobs of them: on PostgreSQL it walks
the tenants in their turn and stops there (_first_job_of_each_tenant), and walks every
partition when that finds fewer (too few of them with a job ready). PostgreSQL ranks
the jobs in the lease statement itself (ready_cte, or one_partition_cte for a lease of one
queue of one tenant); SQLite, whose lease is a walk of statements under BEGIN IMMEDIATE,
ranks them in Python (fair_order) by the same rule.
"""

from __future__ import annotations

import functools
import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    Integer,
    Text,
    bindparam,
    cast,
    distinct,
    exists,
    false,
    func,
    literal,
    select,
    union,
    union_all,
)
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import CTE, Select, Subquery

from quorra.jobs import LEASABLE
from quorra.schema import UTCDateTime, jobs, queues, tenants
from quorra.store.base import status_in
from quorra.store.limits import has_limits

_ROTATIONS = itertools.count()


def next_rotation(max_jobs: int) -> int:
    """Where this lease's rounds start: each lease of the process max_jobs further, so that
    successive leases start at the tenants the previous one did not reach."""
    return next(_ROTATIONS) * max_jobs % 2**30


@dataclass(frozen=True)
class Candidate:
    """A ready job one partition offers to the lease (SQLite's walk)."""

    tenant: str
    position: int  # of the queue in the lease's list
    id: str
    priority: int
    run_at: datetime


def fair_order(candidates: Sequence[Candidate], rotation: int, queue_count: int) -> list[str]:
    """SQLite: the ids of `candidates` in the order the lease takes them (the module's rule;
    ready_cte's ranking on PostgreSQL)."""
    by_tenant: dict[str, list[Candidate]] = defaultdict(list)
    for candidate in candidates:
        by_tenant[candidate.tenant].append(candidate)
    tenants = sorted(by_tenant)
    turns = []
    for rank, tenant in enumerate(tenants):
        sequence = _tenant_sequence(by_tenant[tenant], rotation // len(tenants), queue_count)
        tenant_turn = (rank + rotation) % len(tenants)
        turns += [((turn, tenant_turn), candidate.id) for turn, candidate in enumerate(sequence)]
    return [job_id for _, job_id in sorted(turns)]


def _tenant_sequence(candidates: list[Candidate], queue_rotation: int, queue_count: int) -> list[Candidate]:
    """One tenant's jobs in its order: priority DESC, then its queues at that level in turns."""
    ordered = sorted(candidates, key=lambda c: (c.position, -c.priority, c.run_at, c.id))
    rank_in_level = {}
    for (_, _), group in itertools.groupby(ordered, key=lambda c: (c.position, c.priority)):
        rank_in_level |= {candidate.id: rank for rank, candidate in enumerate(group)}
    return sorted(
        candidates,
        key=lambda c: (-c.priority, rank_in_level[c.id], (c.position + queue_rotation) % queue_count),
    )


# -- the partitions ---------------------------------------------------------------------------


def partition_is_leasable(tenant: ColumnElement, queue: ColumnElement, within_limits: bool = False) -> ColumnElement:
    """The partition's queue may be leased now: it is not paused, and (unless the lease is
    `within_limits`, the limited path's, quorra.store.limits) neither it nor its tenant has
    limits. One primary-key probe of the queues table per partition (a subquery per row,
    which the planner cannot turn into a scan of the whole table), not a test per job, and
    one of the tenants table."""
    named = (queues.c.tenant == tenant) & (queues.c.name == queue)
    held = queues.c.is_paused if within_limits else queues.c.is_paused | has_limits(queues)
    is_held = select(held).where(named).scalar_subquery()
    leasable = func.coalesce(is_held, false()).is_(false())
    return leasable if within_limits else leasable & ~exists().where(tenants.c.name == tenant, has_limits(tenants))


@functools.lru_cache(maxsize=64)
def partitions(queue_count: int, fleet: bool, within_limits: bool = False) -> Select:
    """The lease's leasable partitions: tenant, queue, position (of the queue in the lease's
    list). Parameters: queue_0 ... queue_n, and lease_tenant unless `fleet`."""
    if fleet:
        named = union_all(*(_tenants_of_queue(n) for n in range(queue_count))).subquery("named")
    else:
        tenant = cast(bindparam("lease_tenant"), Text)
        named = union_all(*(select(tenant.label("tenant"), *_queue_columns(n)) for n in range(queue_count)))
        named = named.subquery("named")
    return select(named).where(partition_is_leasable(named.c.tenant, named.c.queue, within_limits))


def _queue_columns(n: int) -> tuple[ColumnElement, ColumnElement]:
    return cast(bindparam(f"queue_{n}"), Text).label("queue"), literal(n, Integer).label("position")


def _tenants_of_queue(n: int) -> Select:
    """The tenants with waiting jobs in the lease's n-th queue, a loose index scan: a
    recursive CTE whose every step is one probe of ix_jobs_ready for the next tenant."""
    queue = bindparam(f"queue_{n}")
    tenants = select(_next_tenant(queue, None).label("tenant")).cte(f"tenants_{n}", recursive=True)
    tenants = tenants.union_all(select(_next_tenant(queue, tenants.c.tenant)).where(tenants.c.tenant.is_not(None)))
    return select(tenants.c.tenant, *_queue_columns(n)).where(tenants.c.tenant.is_not(None))


def _next_tenant(queue, after) -> ColumnElement:
    probe = select(jobs.c.tenant).where(jobs.c.queue == queue, status_in(LEASABLE))
    probe = probe.where(jobs.c.tenant > after) if after is not None else probe
    return probe.order_by(jobs.c.tenant).limit(1).correlate_except(jobs).scalar_subquery()


# -- one partition's walk ---------------------------------------------------------------------


def top_level(tenant, queue, below) -> Select:
    """The highest priority among the partition's waiting jobs (ready or delayed), below
    `below` if given: one probe of ix_jobs_ready."""
    probe = select(jobs.c.priority).where(_of_partition(tenant, queue), status_in(LEASABLE))
    probe = probe.where(jobs.c.priority < below) if below is not None else probe
    return probe.order_by(jobs.c.priority.desc()).limit(1).correlate_except(jobs)


def ready_at_level(tenant, queue, priority, now, *, lock: bool) -> Select:
    """The partition's first ready jobs of one priority, by run_at then id: a range scan of
    ix_jobs_ready (under SKIP LOCKED with `lock`, so those rows are locked)."""
    ready = (
        select(jobs.c.id, jobs.c.priority, jobs.c.run_at)
        .where(_of_partition(tenant, queue), status_in(LEASABLE), jobs.c.priority == priority)
        .where(jobs.c.run_at <= now)
        .order_by(jobs.c.run_at, jobs.c.id)
        .limit(bindparam("max_jobs"))
        .correlate_except(jobs)
    )
    return ready.with_for_update(skip_locked=True) if lock else ready


def _of_partition(tenant, queue) -> ColumnElement:
    """A prefix of ix_jobs_ready."""
    return (jobs.c.queue == queue) & (jobs.c.tenant == tenant)


@functools.lru_cache(maxsize=4)
def level_walk() -> tuple[Select, Select, Select]:
    """SQLite's walk of one partition, a statement per step: its top level, the next level
    below, the ready jobs of one level. Parameters: walk_tenant, walk_queue, now, ..."""
    tenant, queue = bindparam("walk_tenant"), bindparam("walk_queue")
    at_level = ready_at_level(tenant, queue, bindparam("priority"), bindparam("now", type_=UTCDateTime), lock=False)
    return top_level(tenant, queue, None), top_level(tenant, queue, bindparam("below")), at_level


# -- PostgreSQL: the whole walk and the ranking in one statement ---------------------------------


@functools.lru_cache(maxsize=64)
def ready_cte(queue_count: int, fleet: bool, fixed_now: bool, within_limits: bool = False) -> CTE:
    """The ready jobs a lease takes, locked, with their position in the lease (the module's
    rule), at most max_jobs; MATERIALIZED, so computed once (LIMIT inside IN (SELECT ...
    SKIP LOCKED) may lock more rows than asked). Parameters: partitions' and max_jobs,
    rotation, and now with `fixed_now`."""
    parts = partitions(queue_count, fleet, within_limits).cte("partitions")
    shared = _shared_walk(parts, queue_count, fixed_now)
    if not fleet:
        return shared.cte("ready").prefix_with("MATERIALIZED")
    # A fleet lease whose quota is one job a partition (at least max_jobs tenants) first tries
    # the tenants one by one in their turn; it falls back on the walk of every partition when
    # the quota is more (fewer tenants: no try, or a lease of a few tenants, the common case,
    # would pay for the walk twice) or when the tenants in turn gave fewer than max_jobs.
    # PostgreSQL computes a CTE as far as it is read, stops an AND at its first false term,
    # and the branch whose one-time filter is false reads nothing.
    one_each = _first_job_of_each_tenant(parts, queue_count, fixed_now).cte("one_each").prefix_with("MATERIALIZED")
    found = select(func.count()).select_from(one_each).scalar_subquery()
    enough = (_quota(parts) == 1) & (found >= bindparam("max_jobs"))
    in_turn = func.row_number().over(order_by=one_each.c.tenant_turn)
    shared = shared.subquery("shared")
    chosen = union_all(
        select(one_each.c.id, in_turn.label("position")).where(enough),
        select(shared.c.id, shared.c.position).where(~enough),
    )
    return chosen.cte("ready").prefix_with("MATERIALIZED")


def _shared_walk(parts: CTE, queue_count: int, fixed_now: bool) -> Select:
    """Every partition offers its quota (topped up when short), ranked by the module's rule:
    the ids and positions of the first max_jobs."""
    quota = _quota(parts)
    first = _offered(parts, quota, fixed_now, "levels").cte("first_offered").prefix_with("MATERIALIZED")
    offered = union(select(first), _topped_up(parts, first, quota, fixed_now)).subquery("offered")
    turns = _turns(_ranked(offered), queue_count)
    position = func.row_number().over(order_by=(turns.c.turn, turns.c.tenant_turn))
    ready = select(turns.c.id, position.label("position")).order_by(turns.c.turn, turns.c.tenant_turn)
    return ready.limit(bindparam("max_jobs"))


def _first_job_of_each_tenant(parts: CTE, queue_count: int, fixed_now: bool) -> Select:
    """A fleet lease over many tenants, at least max_jobs: the shared walk's quota is then one
    job a partition, and the lease takes the first job of each of max_jobs tenants in their
    turn. So take the tenants in turn (rank by name, rotated), each its first job (its highest
    priority, then its queues in turn), and stop at max_jobs: the other tenants' partitions
    are neither read nor locked (a lease of 10 beside 200 small tenants walked 201 partitions
    and locked a job in each). With fewer tenants ready_cte does not try this; when it finds
    fewer than max_jobs (tenants with only delayed or locked jobs), it falls back on the
    shared walk."""
    names = select(parts.c.tenant).distinct().subquery("lease_tenants")
    rank = func.row_number().over(order_by=names.c.tenant.collate("C")) - 1
    ranked = select(names.c.tenant, rank.label("tenant_rank"), func.count().over().label("tenants"))
    ranked = ranked.subquery("ranked_tenants")
    rotation = bindparam("rotation", type_=Integer)
    tenant_turn = ((ranked.c.tenant_rank + rotation) % ranked.c.tenants).label("tenant_turn")
    # ordered here, so that the lateral walks below run in turn and stop at max_jobs
    turns = select(ranked.c.tenant, ranked.c.tenants, tenant_turn).order_by(tenant_turn).subquery("tenant_turns")
    own = parts.alias("own_partitions")
    walk = _partition_walk(own, literal(1), fixed_now, "first_levels")
    queue_turn = (own.c.position + rotation // turns.c.tenants) % queue_count
    first = (
        select(walk.c.id)
        .select_from(own.join(walk, literal(True)))
        .where(own.c.tenant == turns.c.tenant)
        .order_by(walk.c.priority.desc(), queue_turn)
        .limit(1)
        .lateral("first_job")
    )
    taken = select(first.c.id, turns.c.tenant_turn).select_from(turns.join(first, literal(True)))
    return taken.order_by(turns.c.tenant_turn).limit(bindparam("max_jobs"))


@functools.lru_cache(maxsize=8)
def one_partition_cte(fixed_now: bool, within_limits: bool = False) -> CTE:
    """ready_cte for a lease of one queue of one tenant (a worker's usual lease): that
    partition's walk, in its own order (priority DESC, run_at, id), which is the module's rule
    for a single partition, without the quotas, top-ups and turns that share a lease among
    partitions. Parameters: queue_0, lease_tenant, max_jobs, and now with `fixed_now`."""
    parts = partitions(1, False, within_limits).cte("partitions")
    walk = _partition_walk(parts, bindparam("max_jobs"), fixed_now, "levels")
    offered = select(walk.c.id, walk.c.priority, walk.c.run_at).select_from(parts.join(walk, literal(True)))
    offered = offered.subquery("offered")
    position = func.row_number().over(order_by=(offered.c.priority.desc(), offered.c.run_at, offered.c.id))
    return select(offered.c.id, position.label("position")).cte("ready").prefix_with("MATERIALIZED")


def _quota(parts: CTE) -> ColumnElement:
    """What each partition offers at first: max_jobs shared out among the lease's tenants,
    rounded up (all of max_jobs for one tenant), so that a fleet lease over many tenants
    locks about max_jobs rows per tenant in all, not per partition."""
    tenants = select(func.greatest(func.count(distinct(parts.c.tenant)), 1, type_=Integer)).scalar_subquery()
    return (cast(bindparam("max_jobs"), Integer) + tenants - 1) // tenants


def _topped_up(parts: CTE, first: CTE, quota: ColumnElement, fixed_now: bool) -> Select:
    """When the first offers fall short of max_jobs (tenants with fewer ready jobs than their
    share), the partitions that offered their whole quota offer up to max_jobs (their first
    offers again among them: the lease's own locks do not hide rows from it)."""
    full = (
        select(first.c.tenant, first.c.position)
        .group_by(first.c.tenant, first.c.position)
        .having(func.count() >= quota)
        .subquery("full")
    )
    short = select(func.count()).select_from(first).scalar_subquery() < bindparam("max_jobs")
    joined = (parts.c.tenant == full.c.tenant) & (parts.c.position == full.c.position)
    topping = select(parts).join(full, joined).where(short).cte("topping")
    return _offered(topping, bindparam("max_jobs"), fixed_now, "more_levels")


def _offered(parts, limit: ColumnElement, fixed_now: bool, levels_name: str) -> Select:
    walk = _partition_walk(parts, limit, fixed_now, levels_name)
    columns = (parts.c.tenant, parts.c.position, walk.c.id, walk.c.priority, walk.c.run_at)
    return select(*columns).select_from(parts.join(walk, literal(True)))


def _partition_walk(parts, limit: ColumnElement, fixed_now: bool, levels_name: str) -> Subquery:
    """Per partition (LATERAL), its priority levels from the top (a recursive CTE of index
    probes), at each level its first ready jobs, stopping at `limit`."""
    levels = select(top_level(parts.c.tenant, parts.c.queue, None).scalar_subquery().label("priority"))
    levels = levels.cte(levels_name, recursive=True, nesting=True)
    below = top_level(parts.c.tenant, parts.c.queue, levels.c.priority).scalar_subquery()
    levels = levels.union_all(select(below).where(levels.c.priority.is_not(None)))
    now = bindparam("now", type_=UTCDateTime) if fixed_now else func.now()
    at_level = ready_at_level(parts.c.tenant, parts.c.queue, levels.c.priority, now, lock=True).lateral("at_level")
    walk = select(at_level).select_from(levels.join(at_level, literal(True)))
    return walk.limit(limit).lateral("walk")


def _ranked(offered: Subquery) -> Subquery:
    """Each job's rank among its partition's jobs of its level, its tenant's rank (from 0)
    among the lease's tenants, and how many tenants there are."""
    rank_in_level = func.row_number().over(
        partition_by=(offered.c.tenant, offered.c.position, offered.c.priority),
        order_by=(offered.c.run_at, offered.c.id),
    )
    tenant_rank = func.dense_rank().over(order_by=offered.c.tenant.collate("C")) - 1
    ranked = select(offered, rank_in_level.label("rank_in_level"), tenant_rank.label("tenant_rank")).subquery("ranked")
    tenants = func.max(ranked.c.tenant_rank).over() + 1
    return select(ranked, tenants.label("tenants")).subquery("counted")


def _turns(ranked: Subquery, queue_count: int) -> Subquery:
    """Each job's turn in its tenant's sequence, and its tenant's place within a round."""
    rotation = bindparam("rotation", type_=Integer)
    queue_turn = (ranked.c.position + rotation // ranked.c.tenants) % queue_count
    turn = func.row_number().over(
        partition_by=ranked.c.tenant,
        order_by=(ranked.c.priority.desc(), ranked.c.rank_in_level, queue_turn),
    )
    tenant_turn = (ranked.c.tenant_rank + rotation) % ranked.c.tenants
    return select(ranked.c.id, turn.label("turn"), tenant_turn.label("tenant_turn")).subquery("turns")
