"""The scheduler process (`quorra scheduler`): the periodic duties that keep jobs moving.

Every QUORRA_SCHEDULER_INTERVAL the leader (one scheduler at a time, see quorra.leader):

- reaps expired leases: each is a failed attempt with the error 'lease expired', retried
  after the backoff or dead, exactly as a nack would do;
- fires the due ticks of schedules (quorra.schedules): one job per tick, in the
  transaction that moves the schedule on, so a tick is never fired twice;
- wakes workers waiting on queues whose delayed or retrying jobs have just become due;
- prunes succeeded and cancelled jobs older than QUORRA_RETENTION (dead jobs stay),
  idempotency keys older than QUORRA_IDEMPOTENCY_TTL (a job stays while a key names it),
  and audit entries older than QUORRA_AUDIT_RETENTION.

Every scheduler process, leader or not, also runs the webhook deliverer (quorra.delivery),
the built-in worker of the queue quorra.webhooks, on a thread of its own.

Each duty takes `now` (the store's clock by default), so tests move time instead of
sleeping, and each is safe even if two schedulers ever overlapped: reaping and pruning
are guarded statements on locked rows, and a wake-up is only a hint.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from quorra.config import Settings
from quorra.delivery import Deliverer
from quorra.errors import DatabaseUnavailable, InvalidConfig, QuorraError
from quorra.jobs import Job
from quorra.leader import Leader, make_leader, owner_id
from quorra.manager import JobManager
from quorra.migrate import ensure_at_head
from quorra.notify import Notifier, make_notifier
from quorra.schedules import load_schedules_file
from quorra.shutdown import ShutdownSignal
from quorra.store import Store

logger = logging.getLogger(__name__)

REAP_BATCH_SIZE = 500
# Batches per duty per tick: a backlog is worked off over several ticks, between which
# the leadership is checked again, rather than in one long tick.
MAX_BATCHES_PER_TICK = 20
# The first tick after (re)gaining the leadership looks this far back for due jobs.
WAKE_LOOKBACK_SECONDS = 300.0
# Each wake-up window reaches this far into the previous one, so a job whose transaction
# committed a moment after its run_at had passed is still announced. A repeat is harmless.
WAKE_OVERLAP_SECONDS = 1.0
# A worker not seen for this long is dropped from the workers table (GET /v1/workers).
WORKER_RETENTION_SECONDS = 86400.0


@dataclass(frozen=True)
class TickReport:
    """What one tick did as leader."""

    reaped: tuple[Job, ...]
    woken: tuple[str, ...]
    pruned: int
    fired: tuple[Job, ...] = ()  # the jobs of schedule ticks


class Scheduler:
    reap_batch_size = REAP_BATCH_SIZE
    max_batches = MAX_BATCHES_PER_TICK

    def __init__(self, settings: Settings, store: Store, notifier: Notifier, leader: Leader):
        self.settings = settings
        self.store = store  # the clock (database_now) only; every change goes through the manager
        self.manager = JobManager(store, notifier, default_timeout_seconds=settings.default_job_timeout_seconds)
        self.leader = leader
        self.owner = owner_id()
        self._leading: bool | None = None  # None until the first attempt
        self._woken_until: datetime | None = None

    @property
    def notifier(self) -> Notifier:
        return self.manager.notifier

    @notifier.setter
    def notifier(self, notifier: Notifier) -> None:
        self.manager.notifier = notifier

    # -- one tick -----------------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> TickReport | None:
        """Run every duty if this scheduler leads; None if it does not (or lost the
        leadership part-way: the remaining duties are left to the new leader)."""
        if not self._lead():
            return None
        now = now or self.store.database_now()
        results = [self.reap(now)]
        for duty in (self.fire_schedules, self.wake_due, self.prune):
            if not self._still_leading():
                return None
            results.append(duty(now))
        reaped, fired, woken, pruned = results
        return TickReport(tuple(reaped), tuple(woken), pruned, tuple(fired))

    def reap(self, now: datetime) -> list[Job]:
        """Settle expired leases as failed attempts. A reaped job is retried after its
        backoff (at least 2 s), so its wake-up is wake_due's, once that run_at passes."""
        size = self.reap_batch_size
        batches = self._in_batches(lambda: self.manager.reap_expired(now=now, limit=size), size, len)
        reaped = [job for batch in batches for job in batch]
        if reaped:
            logger.info(
                "leases reaped", extra={"event": "leases.reaped", "count": len(reaped), "batches": len(batches)}
            )
        return reaped

    def fire_schedules(self, now: datetime) -> list[Job]:
        """Submit the job of each due schedule tick; a schedule behind by several late
        ticks fires one per pass, and passes repeat (between leadership checks) until none
        is due."""
        threshold = self.settings.schedule_misfire_threshold_seconds
        fired: list[Job] = []
        for _ in range(self.max_batches):
            carried = self.manager.fire_schedules(now, threshold)
            fired.extend(tick.job for tick in carried if tick.job is not None)
            if not carried or not self._still_leading():
                break
        return fired

    def wake_due(self, now: datetime) -> list[str]:
        """Publish a wake-up for each queue with a job whose run_at passed since the last tick."""
        after = now - timedelta(seconds=WAKE_LOOKBACK_SECONDS)
        if self._woken_until is not None:
            after = max(after, self._woken_until - timedelta(seconds=WAKE_OVERLAP_SECONDS))
        queues = self.manager.wake_due(after, now=now)
        self._woken_until = now
        if queues:
            logger.debug("queues woken", extra={"event": "queues.woken", "queues": queues})
        return queues

    def prune(self, now: datetime) -> int:
        """Delete expired idempotency keys and audit entries past QUORRA_AUDIT_RETENTION, then
        succeeded and cancelled jobs that finished more than the retention ago (and that no
        key names any more)."""
        self.prune_idempotency_keys(now)
        self.prune_audit(now)
        self.manager.prune_workers(now - timedelta(seconds=WORKER_RETENTION_SECONDS))
        before = now - timedelta(seconds=self.settings.retention_seconds)
        size = self.settings.prune_batch_size
        batches = self._in_batches(lambda: self.manager.prune(before, limit=size), size, int)
        pruned = sum(batches)
        if pruned:
            logger.info(
                "prune finished",
                extra={
                    "event": "prune.finished",
                    "count": pruned,
                    "batches": len(batches),
                    "finished_before": before.isoformat(),
                },
            )
        return pruned

    def prune_idempotency_keys(self, now: datetime) -> int:
        """Delete the idempotency keys that expired (QUORRA_IDEMPOTENCY_TTL after their use)."""
        size = self.settings.prune_batch_size
        return sum(self._in_batches(lambda: self.manager.prune_idempotency_keys(now, limit=size), size, int))

    def prune_audit(self, now: datetime) -> int:
        """Delete the audit entries older than QUORRA_AUDIT_RETENTION."""
        before = now - timedelta(seconds=self.settings.audit_retention_seconds)
        size = self.settings.prune_batch_size
        return sum(self._in_batches(lambda: self.manager.prune_audit(before, limit=size), size, int))

    def _in_batches(self, take: Callable[[], Any], size: int, count: Callable[[Any], int]) -> list[Any]:
        """Call `take` until a batch comes back short, at most max_batches times."""
        batches = []
        for _ in range(self.max_batches):
            batches.append(take())
            if count(batches[-1]) < size:
                break
        return batches

    # -- leadership -----------------------------------------------------------------------

    def _lead(self) -> bool:
        """Keep or take the leadership (followers try again every tick)."""
        return self._note(self.leader.hold())

    def _still_leading(self) -> bool:
        return self._note(self.leader.is_held())

    def _note(self, leading: bool) -> bool:
        if leading != self._leading:
            self._log_leadership(leading)
            if leading:
                self._woken_until = None  # a new term looks back afresh
        self._leading = leading
        return leading

    def _log_leadership(self, leading: bool) -> None:
        if leading:
            message, event, level = "leadership acquired", "leadership.acquired", logging.INFO
        elif self._leading is None:
            message, event, level = "waiting for leadership", "leadership.awaited", logging.INFO
        else:
            message, event, level = "leadership lost", "leadership.lost", logging.WARNING
        logger.log(level, message, extra={"event": event, "owner": self.owner, "lock": self.leader.description})

    def resign(self) -> None:
        """Give the leadership up (if held) so a follower takes over at its next tick."""
        was_leading = self._leading
        self.leader.release()
        self._leading = False
        if was_leading:
            logger.info(
                "leadership released",
                extra={"event": "leadership.released", "owner": self.owner, "lock": self.leader.description},
            )

    # -- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Tick every interval until `stop` is set; then finish, and resign."""
        interval = self.settings.scheduler_interval_seconds
        logger.info(
            "scheduler started", extra={"event": "scheduler.started", "owner": self.owner, "interval_seconds": interval}
        )
        self._warn_if_not_vacuumed()
        try:
            while not stop.is_set():
                started = time.monotonic()
                self._tick_safely()
                stop.wait(max(0.0, interval - (time.monotonic() - started)))
        finally:
            self.resign()
            logger.info("scheduler stopped", extra={"event": "scheduler.stopped", "owner": self.owner})

    def _warn_if_not_vacuumed(self) -> None:
        """Say so once, at start, if autovacuum cannot reach the jobs table: every lease and
        settle leaves an old row version behind, and without it they pile up in the table and
        its indexes, and the reaper and the leases read more of them every day."""
        try:
            reasons = self.store.autovacuum_off()
        except Exception:  # the database may not answer yet: the check is advice, not a duty
            logger.debug("autovacuum not checked", extra={"event": "db.autovacuum_unchecked"}, exc_info=True)
            return
        if reasons:
            logger.warning(
                "autovacuum is off for the jobs table: old row versions will pile up; turn it on"
                " (or VACUUM ANALYZE jobs on a schedule)",
                extra={"event": "db.autovacuum_off", "reasons": reasons},
            )

    def _tick_safely(self) -> None:
        try:
            self.tick()
        except DatabaseUnavailable:
            pass  # the store logged it; the next tick tries again
        except Exception:  # one bad tick must not end the scheduler
            logger.exception("scheduler tick failed", extra={"event": "scheduler.failed"})


# -- the process ------------------------------------------------------------------------------


def serve(settings: Settings) -> None:
    """`quorra scheduler`: run until SIGTERM or SIGINT, then finish the tick in progress,
    release the leadership, close the pools and exit 0 (1 if the tick outlived the grace)."""
    store = Store.from_url(settings.database_url, pool_size=3, application_name="quorra-scheduler")
    leader = _leader_for(store, settings)
    notifier = make_notifier(settings)
    shutdown, stop = ShutdownSignal(), threading.Event()
    scheduler = Scheduler(settings, store, notifier, leader)
    _sync_schedules_file(scheduler, settings)
    thread = threading.Thread(target=scheduler.run, args=(stop,), name="scheduler", daemon=True)
    thread.start()
    deliverer = _start_deliverer(settings, scheduler, stop)
    if not _wait(thread, shutdown, stop, settings.shutdown_grace_seconds):
        sys.exit(1)  # the loop still uses the pools; exiting frees them and the lock anyway
    if deliverer is not None:
        # A delivery still posting at the end of the grace is left to its lease's expiry:
        # it runs again later (at least once), which exiting now cannot break.
        deliverer.join(settings.shutdown_grace_seconds)
    for closable in (leader, notifier, store):
        closable.close()
    sys.exit(0)


def _start_deliverer(settings: Settings, scheduler: Scheduler, stop: threading.Event) -> threading.Thread | None:
    """The webhook deliverer (quorra.delivery), in every scheduler process, leader or not,
    unless QUORRA_WEBHOOK_CONCURRENCY=0."""
    if settings.webhook_concurrency == 0:
        return None
    deliverer = Deliverer(settings, scheduler.store, scheduler.manager, worker_id=f"{scheduler.owner}-webhooks")
    thread = threading.Thread(target=deliverer.run, args=(stop,), name="webhooks", daemon=True)
    thread.start()
    return thread


def _leader_for(store: Store, settings: Settings) -> Leader:
    """The leader lock, once the database answers and its schema is at head; otherwise
    exit 1 with the reason."""
    try:
        store.ping()
        ensure_at_head(store.engine)
        return make_leader(settings.database_url)
    except QuorraError as exc:
        store.close()
        sys.exit(f"quorra: {exc.message}")


def _sync_schedules_file(scheduler: Scheduler, settings: Settings) -> None:
    """Create or update the schedules of QUORRA_SCHEDULES_FILE; exit 2 if it is invalid."""
    if settings.schedules_file is None:
        return
    try:
        scheduler.manager.sync_schedules(load_schedules_file(settings.schedules_file))
    except InvalidConfig as exc:
        print(f"quorra: {exc.message}", file=sys.stderr)
        sys.exit(2)


def _wait(thread: threading.Thread, shutdown: ShutdownSignal, stop: threading.Event, grace_seconds: float) -> bool:
    """Block until a signal arrives, set `stop` here (never in the handler: a second signal
    landing inside Event.set() would deadlock on its lock), then allow the loop `grace_seconds`."""
    while thread.is_alive() and not shutdown.wait(0.2):
        pass
    stop.set()
    thread.join(grace_seconds)
    if thread.is_alive():
        logger.error(
            "scheduler did not stop within the grace period",
            extra={"event": "scheduler.stuck", "grace_seconds": grace_seconds},
        )
    return shutdown.received is not None and not thread.is_alive()
