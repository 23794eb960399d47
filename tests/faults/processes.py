"""A whole Quorra deployment as real processes, for the fault scenarios to break: `quorra
grpc`, `quorra scheduler`, `quorra web` and `bin/quorra-worker`, each with its JSON log
lines collected as they come (the scheduler and worker tests' harness), all on one
database and killed at the end of the test."""

from __future__ import annotations

import itertools
import os
import random
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import requests

from quorra.jobs import HOLDING_LEASE, Job, JobSpec
from quorra.store import Store
from tests import processes
from tests.conftest import TEST_API_KEY, free_port
from tests.faults import executions
from tests.rpc.test_process import wait_serving
from tests.scheduler.processes import SchedulerProcess
from tests.worker.support import WorkerProcess, wait_until

HANDLERS = "tests.faults.handlers"
QUEUE = "faults"
START_TIMEOUT_SECONDS = 120


class QuorraProcess(processes.QuorraProcess):
    """A server in a process group of its own: kill() ends it with every child it has
    (gunicorn's workers), at once."""

    def __init__(self, command: str, env: dict[str, str]):
        super().__init__(command, env, new_session=True)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and the exit code; SIGKILL (and fail) if it does not exit in time."""
        try:
            return super().stop(timeout)
        finally:
            self.kill()  # joins the reader

    def kill(self) -> None:
        self.kill_group()


def restartable_port() -> int:
    """A free port below the kernel's ephemeral range: while its server is down for a
    restart, no outgoing connection and no bind(0) elsewhere on the machine can take it."""
    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range")
    first_ephemeral = int(ephemeral.read_text().split()[0]) if ephemeral.exists() else 32768
    for _ in range(100):
        port = random.randrange(min(20000, first_ephemeral // 2), first_ephemeral)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    return free_port()


def base_env() -> dict[str, str]:
    """This environment without any Quorra setting of its own."""
    prefixes = ("QUORRA_", "REDIS_URL", "DATABASE_URL", "PROMETHEUS")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


@dataclass(frozen=True)
class Running:
    """Every process of a deployment, as start_all started them."""

    server: QuorraProcess
    scheduler: SchedulerProcess
    web: QuorraProcess
    base: str  # the web's URL
    workers: list[WorkerProcess]

    @property
    def processes(self) -> list:
        return [self.server, self.scheduler, self.web, *self.workers]


@dataclass
class Deployment:
    """One database; any number of servers, schedulers and workers started on it."""

    database_url: str
    executions_path: Path
    ttl_seconds: int = 2
    interval_seconds: float = 0.25
    redis_url: str | None = None
    log_level: str = "info"
    grpc_port: int = field(default_factory=restartable_port)
    started: list[WorkerProcess | SchedulerProcess] = field(default_factory=list)
    webs: list[QuorraProcess] = field(default_factory=list)
    _serial: itertools.count = field(default_factory=itertools.count)

    def env(self, **extra: str) -> dict[str, str]:
        shared = {
            "DATABASE_URL": self.database_url,
            "QUORRA_API_KEY": TEST_API_KEY,
            "QUORRA_LOG_FORMAT": "json",
            "QUORRA_LOG_LEVEL": self.log_level,
            "QUORRA_POLL_INTERVAL": "0.2s",
            "QUORRA_SHUTDOWN_GRACE": "5s",
        }
        if self.redis_url:
            shared["REDIS_URL"] = self.redis_url
        return base_env() | shared | extra

    def _track(self, process):
        self.started.append(process)
        return process

    # -- servers --------------------------------------------------------------------------

    def start_grpc(self) -> QuorraProcess:
        """`quorra grpc` on this deployment's port (the same after a restart); returns once
        it answers SERVING."""
        return self._serving(self._spawn_grpc())

    def _spawn_grpc(self) -> QuorraProcess:
        return self._track(QuorraProcess("grpc", self.env(QUORRA_GRPC_ADDR=f"127.0.0.1:{self.grpc_port}")))

    def _serving(self, process: QuorraProcess) -> QuorraProcess:
        # Its own line first: a channel that dialled a port nobody listened on yet backs off
        # (up to minutes), and a busy machine may take tens of seconds to start a process.
        if self.log_level in ("debug", "info"):  # rpc.started is an info line
            process.wait_for("rpc.started", timeout=START_TIMEOUT_SECONDS)
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            try:
                wait_serving(channel, process.popen)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{process.output()}\n{process.dump()}") from None
        return process

    def start_scheduler(self) -> SchedulerProcess:
        interval = f"{self.interval_seconds}s"
        extra = {"REDIS_URL": self.redis_url} if self.redis_url else {}
        return self._track(
            SchedulerProcess(self.database_url, interval=interval, QUORRA_LOG_LEVEL=self.log_level, **extra)
        )

    def start_web(self) -> tuple[QuorraProcess, str]:
        """`quorra web` (gunicorn) on a free port; returns it and its base URL once healthy."""
        return self._healthy(*self._spawn_web())

    def _spawn_web(self) -> tuple[QuorraProcess, str]:
        port = free_port()
        env = self.env(QUORRA_HTTP_ADDR=f"127.0.0.1:{port}", QUORRA_WEB_WORKERS="1", QUORRA_WEB_THREADS="4")
        process = self._track(QuorraProcess("web", env))
        self.webs.append(process)
        return process, f"http://127.0.0.1:{port}"

    def _healthy(self, process: QuorraProcess, base: str) -> tuple[QuorraProcess, str]:
        wait_until(lambda: process.popen.poll() is not None or _healthy(base), START_TIMEOUT_SECONDS, "web healthy")
        assert process.popen.poll() is None, f"quorra web exited:\n{process.dump()}"
        return process, base

    # -- workers --------------------------------------------------------------------------

    def start_worker(self, max_jobs: int = 5, queue: str = QUEUE, **env: str) -> WorkerProcess:
        """`bin/quorra-worker` with the recording handlers, an id of its own (fault-worker-N),
        this deployment's TTL, on one queue."""
        worker_id = f"fault-worker-{next(self._serial)}"
        process = WorkerProcess(
            self.grpc_port,
            "--handlers",
            HANDLERS,
            "--queues",
            queue,
            "--max-jobs",
            str(max_jobs),
            "--lease-ttl",
            f"{self.ttl_seconds}s",
            "--id",
            worker_id,
            **{executions.ENV: str(self.executions_path), "QUORRA_LOG_LEVEL": self.log_level, **env},
        )
        process.worker_id = worker_id
        return self._track(process)

    def start_all(self, workers: int) -> Running:
        """The gRPC server, a scheduler, the web and `workers` workers, started side by side
        (the workers once the server answers: a worker that finds no server backs off)."""
        server, scheduler, (web, base) = self._spawn_grpc(), self.start_scheduler(), self._spawn_web()
        self._serving(server)
        started = [self.start_worker() for _ in range(workers)]
        self._healthy(web, base)
        return Running(server, scheduler, web, base, started)

    def report(self) -> str:
        """Each process started: running or its exit code, and its last warnings and errors."""
        return "\n".join(_report(process) for process in self.started)

    def close(self) -> None:
        """Kill every process (SIGKILL: the test is over, no graceful stop to wait for)."""
        for process in reversed(self.started):
            process.kill()


def _report(process, last: int = 5) -> str:
    code = process.popen.poll()
    command = " ".join(str(arg) for arg in process.popen.args[1:])[:160]
    warnings = [line.record for line in process.lines if line.record.get("level") in ("WARNING", "ERROR", "CRITICAL")]
    said = [f"    {r.get('level')} {r.get('event')}: {r.get('message')} {r.get('error', '')}" for r in warnings[-last:]]
    said += [f"    {text.rstrip()}" for text in process.other_output[-last:]]
    state = "running" if code is None else f"exited with {code}"
    return "\n".join([f"  {command}: {state}, {len(warnings)} warnings or errors", *said])


def _healthy(base: str) -> bool:
    try:
        return requests.get(f"{base}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


# -- jobs, through the store ---------------------------------------------------------------------


def enqueue(store: Store, count: int, *, seconds: float = 0.0, max_retries: int = 10) -> list[str]:
    """`count` jobs of the recording handler on the faults queue, in batches of 1,000."""
    spec = JobSpec.parse(
        {"type": "record", "queue": QUEUE, "payload": {"seconds": seconds}, "max_retries": max_retries}
    )
    ids: list[str] = []
    for start in range(0, count, 1000):
        ids += [job.id for job in store.enqueue_many([spec] * min(1000, count - start))]
    return ids


def held_leases(store: Store, worker_id: str | None = None) -> list[Job]:
    """Jobs leased or processing now (by `worker_id`, if given)."""
    held = []
    for status in sorted(HOLDING_LEASE):
        cursor = None
        while True:
            page = store.list_jobs(queue=QUEUE, status=status, limit=500, cursor=cursor)
            held += [job for job in page.jobs if worker_id in (None, job.leased_by)]
            if (cursor := page.next_cursor) is None:
                break
    return held


def all_jobs(store: Store, queue: str = QUEUE) -> dict[str, Job]:
    """Every job of the queue, by id."""
    found: dict[str, Job] = {}
    cursor = None
    while True:
        page = store.list_jobs(queue=queue, limit=500, cursor=cursor)
        found |= {job.id: job for job in page.jobs}
        if (cursor := page.next_cursor) is None:
            return found


def status_counts(store: Store, queue: str = QUEUE) -> dict[str, int]:
    return {count.status: count.count for count in store.queue_counts() if count.queue == queue}


def wait_all_succeeded(store: Store, jobs: int, timeout: float, deployment: Deployment | None = None) -> float:
    """Block until `jobs` jobs of the queue succeeded; the monotonic time it happened. A
    timeout names the counts at that moment (not as the wait began: a message built up front
    once read as "no job ever ran"), and what became of the deployment's processes."""
    try:
        wait_until(lambda: status_counts(store).get("succeeded", 0) >= jobs, timeout, f"{jobs} jobs succeeded")
    except AssertionError as exc:
        report = "" if deployment is None else f"\n{deployment.report()}"
        raise AssertionError(f"{exc} (now {status_counts(store)}){report}") from None
    return time.monotonic()
