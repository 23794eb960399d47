"""The stack the bench measures, as production runs it: a throwaway PostgreSQL database
(created, `quorra migrate`d, dropped), `quorra web` (gunicorn), `quorra grpc`, `quorra
scheduler` and `quorra-worker` processes with the bench's no-op handler, on free loopback
ports. Only public interfaces: the commands, their environment variables, REST and gRPC."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import requests
from lease_throughput import throwaway_postgres
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

API_KEY = "bench-api-key"
BENCH_DIR = Path(__file__).resolve().parent
BIN_DIR = Path(sys.executable).parent
READY_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    env: dict[str, str]
    workdir: Path
    database: Engine
    servers: dict[str, subprocess.Popen] = field(default_factory=dict)
    bin_dir: Path = BIN_DIR  # whose `quorra` and `quorra-worker` run (bench/compare.py: another checkout's)

    @property
    def base_url(self) -> str:
        return f"http://{self.env['QUORRA_HTTP_ADDR']}"

    @property
    def database_url(self) -> str:
        return self.env["DATABASE_URL"]

    def start_server(self, role: str) -> None:
        self.servers[role] = self._spawn([str(self.bin_dir / "quorra"), role], self.env, role)

    def start_workers(self, count: int, queue: str, record_dir: Path, max_jobs: int) -> list[subprocess.Popen]:
        env = self.env | {
            "PYTHONPATH": str(BENCH_DIR),
            "QUORRA_BENCH_RECORD_DIR": str(record_dir),
            "QUORRA_WORKER_HANDLERS": "noop_handlers",
            "QUORRA_WORKER_QUEUES": queue,
            "QUORRA_WORKER_MAX_JOBS": str(max_jobs),
        }
        return [
            self._spawn([str(self.bin_dir / "quorra-worker"), "--id", f"bench-{queue}-{n}"], env, f"worker-{queue}-{n}")
            for n in range(count)
        ]

    def _spawn(self, command: list[str], env: dict[str, str], name: str) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - the process owns it
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        with grpc.insecure_channel(self.env["QUORRA_GRPC_ADDR"]) as channel:
            grpc.channel_ready_future(channel).result(timeout=READY_TIMEOUT_SECONDS)
        while not _answers(f"{self.base_url}/readyz"):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"quorra web did not get ready; see {self.workdir}")
            time.sleep(0.1)

    def check_alive(self) -> None:
        for role, process in self.servers.items():
            if process.poll() is not None:
                raise RuntimeError(f"quorra {role} exited with {process.returncode}; see {self.workdir}/{role}.log")

    def stop_servers(self) -> None:
        stop_processes(list(self.servers.values()))


def stop_processes(processes: list[subprocess.Popen]) -> None:
    """SIGTERM, then wait (their graceful shutdown); SIGKILL whatever is left after that."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False


def stack_env(database_url: str, redis_url: str | None, workdir: Path) -> dict[str, str]:
    """The environment of every process: the product's defaults, except quieter logs (the
    bench measures the queue, not log shipping) and ports of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUORRA_", "REDIS_URL", "PROMETHEUS", "DATABASE"))}
    env |= {
        "DATABASE_URL": database_url,
        "QUORRA_API_KEY": API_KEY,
        "QUORRA_LOG_LEVEL": "warning",
        "QUORRA_HTTP_ADDR": f"127.0.0.1:{free_port()}",
        "QUORRA_GRPC_ADDR": f"127.0.0.1:{free_port()}",
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "prometheus"),
        "QUORRA_SHUTDOWN_GRACE": "4s",
        "QUORRA_WORKER_SHUTDOWN_GRACE": "4s",
    }
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


@contextmanager
def running_stack(
    pg_server_url: str, redis_url: str | None, keep_logs: bool = False, bin_dir: Path = BIN_DIR
) -> Iterator[Stack]:
    """A migrated throwaway database and the three servers, ready; all gone afterwards.
    `bin_dir`: the virtualenv's bin directory whose commands run (default: this one's)."""
    workdir = Path(tempfile.mkdtemp(prefix="quorra-bench-"))
    try:
        with throwaway_postgres(pg_server_url) as database_url:
            env = stack_env(database_url, redis_url, workdir)
            subprocess.run([str(bin_dir / "quorra"), "migrate"], env=env, check=True, capture_output=True)
            engine = create_engine(make_url(database_url).set(drivername="postgresql+psycopg2"), pool_size=2)
            stack = Stack(env, workdir, engine, bin_dir=bin_dir)
            try:
                for role in ("web", "grpc", "scheduler"):
                    stack.start_server(role)
                stack.wait_ready()
                yield stack
            finally:
                stack.stop_servers()
                engine.dispose()
    except BaseException:
        keep_logs = True
        print(f"server logs kept in {workdir}", file=sys.stderr)
        raise
    finally:
        if not keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)


# -- measurements of the processes ---------------------------------------------------------------


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM: the most resident memory the process ever had."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def grpc_calls(stack: Stack) -> float:
    """The calls the stack's gRPC server has answered so far, every method and code
    (quorra_grpc_requests_total, on the web process's /metrics with the multiprocess directory)."""
    exposition = requests.get(f"{stack.base_url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        if family.name == "quorra_grpc_requests"
        for sample in family.samples
        if sample.name == "quorra_grpc_requests_total"
    )


def backend_pids(database: str) -> list[int]:
    """The PostgreSQL server processes serving `database` (on this host)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    words = cmdline.read().split(b" ")
            except OSError:
                continue
            if words[0] == b"postgres:" and database.encode() in words:
                found.append(int(entry))
    return found


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    # the command may contain spaces and parentheses: the ppid follows the last ')'
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


def server_version(engine: Engine) -> str:
    with engine.connect() as conn:
        return conn.execute(text("SHOW server_version")).scalar_one()


# The server's settings that move the figures: without autovacuum the jobs table keeps every
# old row version (a CI machine may turn it off); fsync and synchronous_commit set a commit's cost.
SERVER_SETTINGS = ("autovacuum", "fsync", "synchronous_commit")


def server_settings(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {name: conn.execute(text(f"SHOW {name}")).scalar_one() for name in SERVER_SETTINGS}
