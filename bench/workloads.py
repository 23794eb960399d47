"""The workloads of `make bench` (issue 9). Each `*_run` function measures one run and returns
its figures as a flat dict; bench/run.py repeats them and takes medians.

Jobs go in through REST and come out through `quorra-worker` processes running the no-op
handler of bench/noop_handlers.py. The bench reads its own throwaway database with a few
SQL counts (queue, status, finished_at, updated_at: the documented columns) to see when a
run is over, because GET /v1/queues groups the whole table and would load the very database
being measured; W3 fills that database with INSERT ... SELECT generate_series, a fixture."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

from sqlalchemy import text
from stack import API_KEY, BENCH_DIR, Stack, children, peak_rss_mb, stop_processes

from quorra.store import Store

JOB_TYPE = "bench.noop"
ENQUEUE_BATCH = 1000
WORKER_PROCESSES = 2
STALL_SECONDS = 120  # a run fails when nothing moves for this long
POLL_SECONDS = 0.05
KEEP_ALIVE_TRUSTED_SECONDS = 2.0  # W2 reuses a keep-alive connection idle for less than this
PACED_CONNECTIONS = 50  # W2's connections, and so its submits in flight at most


@dataclass
class Sizes:
    """How big each workload is: the issue's figures, or a fraction with --quick."""

    w1_jobs: int = 20_000
    w2_jobs: int = 2_000
    w2_rate: float = 200.0
    w3_pending: int = 1_000_000
    w3_finished: int = 200_000
    w4_leases: int = 10_000
    rest_seconds: float = 5.0
    rest_clients: int = 32
    rest_processes: int = 4
    worker_max_jobs: int = 10
    enqueue_clients: int = 4

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            w1_jobs=2_000, w2_jobs=200, w3_pending=100_000, w3_finished=20_000, w4_leases=1_000, rest_seconds=2.0
        )


@dataclass
class Bench:
    stack: Stack
    sizes: Sizes
    memory_mb: dict[str, float] = field(default_factory=dict)

    def note_peak(self, role: str, megabytes: float | None) -> None:
        if megabytes is not None:
            self.memory_mb[role] = max(self.memory_mb.get(role, 0.0), round(megabytes, 1))


# -- W1 throughput -----------------------------------------------------------------------------


def w1_run(bench: Bench, queue: str, note_memory: bool = True) -> dict[str, float]:
    """Enqueue through POST /v1/jobs/batch, then 2 worker processes drain the queue; every
    job must run exactly once. `note_memory`: keep the processes' peak RSS (W1's alone)."""
    count = bench.sizes.w1_jobs
    ids, enqueue_seconds = enqueue_batches(bench.stack, queue, count, bench.sizes.enqueue_clients)
    with tempfile.TemporaryDirectory(prefix="quorra-bench-records-") as record_dir:
        workers = bench.stack.start_workers(WORKER_PROCESSES, queue, Path(record_dir), bench.sizes.worker_max_jobs)
        try:
            wait_for_records(record_dir, count, workers)
            finished_at = wait_all_succeeded(bench.stack, queue, count)
            for worker in workers if note_memory else []:
                bench.note_peak("worker", peak_rss_mb(worker.pid))
        finally:
            stop_processes(workers)
        records = read_records(record_dir)
    if note_memory:
        note_server_memory(bench)
    first_start = min(started for _, started, _ in records)
    return {
        "enqueue_jobs_per_s": count / enqueue_seconds,
        "processing_jobs_per_s": count / (finished_at - first_start),
        **execution_check(ids, [job_id for job_id, _, _ in records]),
    }


def execution_check(ids: list[str], executed: list[str]) -> dict[str, int]:
    times = Counter(executed)
    return {
        "executions": len(executed),
        "distinct": len(times),
        "missing": len(set(ids) - times.keys()),
        "duplicates": sum(n - 1 for n in times.values()),
        "unexpected": len(times.keys() - set(ids)),
    }


def note_server_memory(bench: Bench) -> None:
    """Peak RSS of each server process, gunicorn's workers included (their own line)."""
    for role, process in bench.stack.servers.items():
        bench.note_peak(role if role != "web" else "web master", peak_rss_mb(process.pid))
    for pid in children(bench.stack.servers["web"].pid):
        bench.note_peak("web worker", peak_rss_mb(pid))


# -- W2 latency ---------------------------------------------------------------------------------


class IdleWorkers:
    """2 worker processes on one queue for all W2 runs, warmed up and then left waiting."""

    def __init__(self, bench: Bench, queue: str):
        self.bench, self.queue = bench, queue
        self.record_dir = tempfile.mkdtemp(prefix="quorra-bench-records-")

    def __enter__(self) -> Self:
        stack = self.bench.stack
        self.workers = stack.start_workers(WORKER_PROCESSES, self.queue, Path(self.record_dir), 10)
        ids, _ = enqueue_batches(stack, self.queue, 20, 1)
        wait_for_records(self.record_dir, len(ids), self.workers)
        time.sleep(1.0)  # both back in their long poll
        return self

    def __exit__(self, *exc_info) -> None:
        stop_processes(self.workers)
        shutil.rmtree(self.record_dir, ignore_errors=True)


def w2_run(bench: Bench, idle: IdleWorkers) -> dict[str, float]:
    """Single POSTs at a steady rate to idle workers; submit -> handler start."""
    before = len(read_records(idle.record_dir))
    sent = paced_submits(bench.stack, idle.queue, bench.sizes.w2_jobs, bench.sizes.w2_rate)
    wait_for_records(idle.record_dir, before + len(sent.ids), idle.workers)
    wanted = set(sent.ids)
    records = [record for record in read_records(idle.record_dir) if record[0] in wanted and record[2] is not None]
    latencies = [(started - submitted) * 1000 for _, started, submitted in records]
    return {
        "submit_rate_per_s": len(sent.ids) / sent.send_seconds,
        "post_p50_ms": percentile(sent.post_ms, 0.50),
        "client_cpu_ms_per_job": sent.client_cpu_seconds * 1000 / len(sent.ids),
        "machine_busy_pct": sent.machine_busy * 100,
        "start_p50_ms": percentile(latencies, 0.50),
        "start_p95_ms": percentile(latencies, 0.95),
        "start_p99_ms": percentile(latencies, 0.99),
        "start_max_ms": max(latencies),
        **w2_breakdown(bench.stack, records),
    }


def w2_breakdown(stack: Stack, records: list[tuple[str, float, float | None]]) -> dict[str, float]:
    """Where submit -> start goes, from the job rows' clocks (the database's, on this same
    host): submit -> row inserted (created_at), inserted -> leased (leased_at: the publish,
    the wake-up and the lease statement's start), leased -> handler start (the lease's commit,
    the reply and the worker's hand-over to a thread). p50s, in ms."""
    sql = (
        "SELECT id::text, extract(epoch FROM created_at), extract(epoch FROM leased_at)"
        " FROM jobs WHERE id = ANY(CAST(:ids AS uuid[]))"
    )
    with stack.database.connect() as conn:
        found = conn.execute(text(sql), {"ids": [record[0] for record in records]})
        rows = {job_id: (float(created), float(leased)) for job_id, created, leased in found}
    parts: dict[str, list[float]] = {"submit_to_insert": [], "insert_to_lease": [], "lease_to_start": []}
    for job_id, started, submitted in records:
        if job_id in rows:
            created, leased = rows[job_id]
            parts["submit_to_insert"].append((created - submitted) * 1000)
            parts["insert_to_lease"].append((leased - created) * 1000)
            parts["lease_to_start"].append((started - leased) * 1000)
    return {f"{name}_p50_ms": percentile(values, 0.50) for name, values in parts.items()}


@dataclass
class PacedSubmits:
    ids: list[str]
    post_ms: list[float]
    send_seconds: float
    client_cpu_seconds: float  # this process's CPU while sending: it shares the machine with the stack
    machine_busy: float  # the share of the machine's CPU time not idle while sending (0 to 1)


def paced_submits(stack: Stack, queue: str, count: int, rate: float) -> PacedSubmits:
    """POST /v1/jobs `count` times on a fixed schedule (open loop: a slow answer does not
    delay the next submit, up to 50 in flight), from one asyncio loop speaking raw HTTP/1.1
    on keep-alive connections: the client shares the machine with the stack being measured,
    and one of 50 threads took 0.6 ms of CPU per job (this one 0.4) beside the stack's 7.5."""
    machine_before, cpu_before = _machine_times(), time.process_time()
    ids, post_ms, send_seconds = asyncio.run(_paced(stack, queue, count, rate))
    cpu, (busy, total) = time.process_time() - cpu_before, _machine_times(since=machine_before)
    return PacedSubmits(ids, post_ms, send_seconds, cpu, busy / max(total, 1))


async def _paced(stack: Stack, queue: str, count: int, rate: float) -> tuple[list[str], list[float], float]:
    address = urlsplit(stack.base_url)
    idle: deque[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = deque()  # (..., last used)
    in_flight = asyncio.Semaphore(PACED_CONNECTIONS)
    ids: list[str] = []
    post_ms: list[float] = []
    begin = time.time() + 0.2
    last_sent = begin

    async def submit(n: int) -> None:
        nonlocal last_sent
        await asyncio.sleep(max(0.0, begin + n / rate - time.time()))
        async with in_flight:
            reader, writer = await connection()
            body = {"type": JOB_TYPE, "queue": queue, "payload": {"submitted_at": time.time()}}
            started = time.perf_counter()
            answer = await _post_raw(reader, writer, "/v1/jobs", json.dumps(body).encode())
            post_ms.append((time.perf_counter() - started) * 1000)
            ids.append(answer["id"])
            last_sent = max(last_sent, time.time())
            idle.append((reader, writer, time.monotonic()))

    async def connection() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The connection idle the longest, so that submits take turns over all of them, as
        a client of many would, and spread over the web workers that accepted them; a new
        one for it if the server may have closed it by now (QUORRA_WEB_KEEPALIVE, 5 s)."""
        while idle:
            reader, writer, used = idle.popleft()
            if time.monotonic() - used < KEEP_ALIVE_TRUSTED_SECONDS:
                return reader, writer
            writer.close()
        return await asyncio.open_connection(address.hostname, address.port)

    for _ in range(PACED_CONNECTIONS):
        idle.append((*await asyncio.open_connection(address.hostname, address.port), time.monotonic()))
    try:
        await asyncio.gather(*(submit(n) for n in range(count)))
    finally:
        for _, writer, _ in idle:
            writer.close()
    return ids, post_ms, max(last_sent - begin, 1e-9)


async def _post_raw(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, body: bytes) -> dict:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nX-API-Key: {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    answer_head = await reader.readuntil(b"\r\n\r\n")
    status = int(answer_head.split(b" ", 2)[1])
    headers = (line.partition(b":") for line in answer_head.split(b"\r\n")[1:])
    length = next(int(value) for name, _, value in headers if name.strip().lower() == b"content-length")
    answer = await reader.readexactly(length)
    if status != 201:
        raise RuntimeError(f"POST {path} answered {status}: {answer[:300]!r}")
    return json.loads(answer)


def _machine_times(since: tuple[int, int] | None = None) -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine from /proc/stat, or their growth `since`."""
    with open("/proc/stat") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:]]
    total, idle = sum(ticks[:8]), ticks[3] + ticks[4]  # idle + iowait; guest time is in user already
    busy = total - idle
    return (busy, total) if since is None else (busy - since[0], total - since[1])


# -- W3 backlog ---------------------------------------------------------------------------------


def fill_backlog(bench: Bench) -> float:
    """Pending jobs in 10 other queues (1 in 10 delayed by an hour) and finished jobs of the
    last day, straight into the table; then ANALYZE, as autovacuum would. Returns seconds."""
    started = time.perf_counter()
    with bench.stack.database.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (id, type, queue, payload, priority, status, attempts, max_retries,"
                " run_at, created_at, updated_at)"
                " SELECT gen_random_uuid(), :type, 'backlog-' || (g % 10), '{\"n\": 1}'::jsonb, g % 3, 'pending', 0, 3,"
                " CASE WHEN g % 10 = 0 THEN now() + interval '1 hour' ELSE now() - interval '1 minute' END,"
                " now() - interval '1 minute', now() - interval '1 minute'"
                " FROM generate_series(1, :count) AS g"
            ),
            {"type": JOB_TYPE, "count": bench.sizes.w3_pending},
        )
        conn.execute(
            text(
                "INSERT INTO jobs (id, type, queue, payload, priority, status, attempts, max_retries,"
                " run_at, created_at, updated_at, finished_at, leased_by)"
                " SELECT gen_random_uuid(), :type, 'backlog-' || (g % 10), '{\"n\": 1}'::jsonb, 0, 'succeeded', 1, 3,"
                " t, t, t + interval '1 second', t + interval '1 second', 'bench-history'"
                " FROM generate_series(1, :count) AS g, LATERAL (SELECT now() - (g % 86400) * interval '1 second') AS s(t)"
            ),
            {"type": JOB_TYPE, "count": bench.sizes.w3_finished},
        )
    with bench.stack.database.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE jobs"))
    return time.perf_counter() - started


# -- W4 reap ------------------------------------------------------------------------------------


def w4_run(bench: Bench, queue: str, ttl_seconds: float = 3.0) -> dict[str, float]:
    """Lease every job of a queue in one store call (so all leases expire at one instant) and
    never settle them; time the scheduler's reaper bringing them all back to `failed`."""
    count = bench.sizes.w4_leases
    enqueue_batches(bench.stack, queue, count, bench.sizes.enqueue_clients)
    store = Store.from_url(bench.stack.database_url)
    try:
        leased = store.lease_jobs([queue], "bench-lease-holder", count, ttl_seconds)
    finally:
        store.close()
    if len(leased) != count:
        raise RuntimeError(f"W4 leased {len(leased)} of {count} jobs")
    expired_at = max(job.lease_expires_at for job in leased).timestamp()
    all_failed_at = wait_for_status(bench.stack, queue, "failed", count)
    first_reaped_at = _scalar(
        bench.stack,
        "SELECT extract(epoch FROM min(updated_at)) FROM jobs WHERE queue = :queue AND status = 'failed'",
        queue,
    )
    return {
        "expiry_to_all_failed_s": all_failed_at - expired_at,
        "reaping_s": all_failed_at - float(first_reaped_at),
    }


# -- REST ---------------------------------------------------------------------------------------


def rest_run(bench: Bench, mode: str, ids_file: str) -> dict[str, float]:
    """`rest_clients` keep-alive connections spread over `rest_processes` client processes,
    all measuring the same wall-clock window."""
    sizes = bench.sizes
    command = [sys.executable, str(BENCH_DIR / "loadgen.py"), "--url", bench.stack.base_url, "--mode", mode]
    command += [
        "--api-key",
        API_KEY,
        "--ids-file",
        ids_file,
        "--threads",
        str(sizes.rest_clients // sizes.rest_processes),
    ]
    clients = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(sizes.rest_processes)
    ]
    for client in clients:
        if client.stdout.readline().strip() != "ready":
            raise RuntimeError("a REST client process did not start")
    start_at = time.time() + 0.5  # every connection open and going by then
    for client in clients:
        client.stdin.write(f"{start_at} {start_at + sizes.rest_seconds}\n")
        client.stdin.flush()
    outputs = [json.loads(client.communicate(timeout=sizes.rest_seconds + 120)[0]) for client in clients]
    latencies = [ms for output in outputs for ms in output["latencies_ms"]]
    return {
        "requests_per_s": sum(o["done"] for o in outputs) / sizes.rest_seconds,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "errors": sum(o["errors"] for o in outputs),
        "client_cpu_cores": sum(o["cpu_seconds"] for o in outputs) / sizes.rest_seconds,
    }


def write_ids_for_gets(bench: Bench, path: str, count: int = 1000) -> None:
    ids, _ = enqueue_batches(bench.stack, "bench-rest-get", count, 1)
    Path(path).write_text("\n".join(ids))


# -- helpers ------------------------------------------------------------------------------------


def enqueue_batches(stack: Stack, queue: str, count: int, clients: int) -> tuple[list[str], float]:
    """POST /v1/jobs/batch with ENQUEUE_BATCH jobs each, from `clients` connections at once.
    Bodies are encoded beforehand, so the clock runs for the server only."""
    bodies = [
        json.dumps({"jobs": [{"type": JOB_TYPE, "queue": queue, "payload": {"n": n}} for n in range(size)]})
        for size in _chunks(count, ENQUEUE_BATCH)
    ]
    ids: list[list[str]] = [[] for _ in bodies]

    def sender(first: int) -> None:
        conn = _connection(stack)
        for n in range(first, len(bodies), clients):
            ids[n] = [job["id"] for job in _post_json(conn, "/v1/jobs/batch", bodies[n])["jobs"]]
        conn.close()

    started = time.perf_counter()
    _in_threads(sender, min(clients, len(bodies)))
    return [job_id for batch in ids for job_id in batch], time.perf_counter() - started


def _chunks(count: int, size: int) -> list[int]:
    return [min(size, count - start) for start in range(0, count, size)]


def _in_threads(target: Callable[[int], None], count: int) -> None:
    with ThreadPoolExecutor(count) as pool:
        for future in [pool.submit(target, n) for n in range(count)]:
            future.result()


def _connection(stack: Stack) -> http.client.HTTPConnection:
    address = urlsplit(stack.base_url)
    return http.client.HTTPConnection(address.hostname, address.port, timeout=60)


def _post_json(conn: http.client.HTTPConnection, path: str, body: object) -> dict:
    encoded = body if isinstance(body, str | bytes) else json.dumps(body)
    conn.request("POST", path, encoded, {"X-API-Key": API_KEY, "Content-Type": "application/json"})
    response = conn.getresponse()
    answer = response.read()
    if response.status != 201:
        raise RuntimeError(f"POST {path} answered {response.status}: {answer[:300]!r}")
    return json.loads(answer)


def read_records(directory: str) -> list[tuple[str, float, float | None]]:
    """Every execution the no-op handler noted: (job id, handler start, submitted_at)."""
    records = []
    for name in sorted(os.listdir(directory)):
        for line in Path(directory, name).read_text().splitlines():
            if len(line.split()) != 3:
                continue  # a line being written right now
            job_id, started, submitted = line.split()
            records.append((job_id, float(started), None if submitted == "-" else float(submitted)))
    return records


def _count_lines(directory: str) -> int:
    return sum(Path(directory, name).read_bytes().count(b"\n") for name in os.listdir(directory))


def wait_for_records(directory: str, count: int, workers: list[subprocess.Popen]) -> None:
    """Until the handlers noted `count` executions; fail when a worker dies or all stalls."""
    _wait_until(lambda: _count_lines(directory), count, workers, f"executions in {directory}")


def wait_all_succeeded(stack: Stack, queue: str, count: int) -> float:
    """Until `count` jobs of `queue` succeeded; the unix time the last one finished."""
    wait_for_status(stack, queue, "succeeded", count)
    sql = "SELECT extract(epoch FROM max(finished_at)) FROM jobs WHERE queue = :queue AND status = 'succeeded'"
    return float(_scalar(stack, sql, queue))


def wait_for_status(stack: Stack, queue: str, status: str, count: int) -> float:
    """Until `count` jobs of `queue` have `status`; the unix time that was first seen."""
    sql = "SELECT count(*) FROM jobs WHERE queue = :queue AND status = :status"
    with stack.database.connect() as conn:

        def current() -> int:
            value = conn.execute(text(sql), {"queue": queue, "status": status}).scalar_one()
            conn.commit()
            return value

        _wait_until(current, count, [], f"{status} jobs of {queue}", stack)
    return time.time()


def _wait_until(current: Callable[[], int], count: int, workers, what: str, stack: Stack | None = None) -> None:
    last, moved_at = -1, time.monotonic()
    while (value := current()) < count:
        if value != last:
            last, moved_at = value, time.monotonic()
        if time.monotonic() - moved_at > STALL_SECONDS:
            raise RuntimeError(f"stalled at {value} of {count} {what}")
        for worker in workers:
            if worker.poll() is not None:
                raise RuntimeError(f"a worker exited with {worker.returncode}")
        if stack is not None:
            stack.check_alive()
        time.sleep(POLL_SECONDS)


def _scalar(stack: Stack, sql: str, queue: str) -> object:
    with stack.database.connect() as conn:
        return conn.execute(text(sql), {"queue": queue}).scalar_one()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))] if ordered else float("nan")


def median(values: list[float]) -> float:
    return statistics.median(values)
