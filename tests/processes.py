"""Real subprocesses (quorra servers, workers) whose JSON log lines are collected as they come."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import REPO

SERVICE_VARIABLES = ("QUORRA_", "REDIS_URL", "DATABASE_URL", "PROMETHEUS")


def clean_environ(**env: str) -> dict[str, str]:
    """This environment without any Quorra setting of the caller's, plus `env`."""
    return {k: v for k, v in os.environ.items() if not k.startswith(SERVICE_VARIABLES)} | env


@dataclass(frozen=True)
class LogLine:
    received_at: float  # time.monotonic() in the test process
    record: dict[str, Any]

    @property
    def event(self) -> str | None:
        return self.record.get("event")


class LoggedProcess:
    """A real subprocess whose stderr JSON log lines are collected as they come."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path | None = None, *, new_session: bool = False):
        self.popen = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=new_session,  # a process group of its own, which kill_group ends
        )
        self.lines: list[LogLine] = []
        self.other_output: list[str] = []
        self._arrived = threading.Condition()
        self._ended = False  # stderr closed: every line is in
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for raw in self.popen.stderr:
            try:
                line = LogLine(time.monotonic(), json.loads(raw))
            except json.JSONDecodeError:
                self.other_output.append(raw)
                continue
            with self._arrived:
                self.lines.append(line)
                self._arrived.notify_all()
        with self._arrived:
            self._ended = True
            self._arrived.notify_all()

    def wait_for(self, events: str | tuple[str, ...], timeout: float = 60.0, **fields: Any) -> LogLine:
        """The first line with one of `events` (and `fields`); fails the test after `timeout` s."""
        events = (events,) if isinstance(events, str) else events

        def found():
            return next((line for line in self.lines if _matches(line, events, fields)), None)

        with self._arrived:
            self._arrived.wait_for(lambda: found() or self._ended, timeout)
            line = found()
        assert line is not None, f"no {events} from process {self.popen.pid} in {timeout} s:\n{self.dump()}"
        return line

    def events(self, event: str) -> list[LogLine]:
        with self._arrived:
            return [line for line in self.lines if line.event == event]

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then the exit code (SIGKILL and fail if it does not exit in time)."""
        if self.popen.poll() is None:
            self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            raise AssertionError(f"process {self.popen.pid} ignored SIGTERM for {timeout} s") from None

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(10)
        self._reader.join(10)

    def kill_group(self) -> None:
        """SIGKILL the process and every child it started (it must run in a session of its
        own: new_session=True), and wait until it is gone. No graceful stop: a test's
        teardown need not wait for one."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the whole group is gone already
        self.popen.wait(10)
        self._reader.join(10)

    def output(self) -> str:
        """Everything it wrote that was not a JSON log line, once it has exited."""
        self.popen.wait(30)
        self._reader.join(10)
        return "".join(self.other_output)

    def dump(self) -> str:
        return "\n".join([json.dumps(line.record) for line in self.lines] + self.other_output)


def _matches(line: LogLine, events: tuple[str, ...], fields: dict[str, Any]) -> bool:
    return line.event in events and all(line.record.get(k) == v for k, v in fields.items())


class QuorraProcess(LoggedProcess):
    """`quorra <command>` (web, grpc, scheduler) with its JSON log lines collected."""

    def __init__(self, command: str, env: dict[str, str], *, new_session: bool = False):
        self.role = command
        super().__init__([sys.executable, "-m", "quorra.cli.admin", command], env, cwd=REPO, new_session=new_session)
