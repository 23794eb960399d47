"""Client traffic during a fault: a thread that submits a job over REST every few
milliseconds and keeps every answer, so a test can tell what was accepted, what was
refused (and how), and when."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Self

import requests

from tests.conftest import TEST_API_KEY
from tests.faults.processes import QUEUE

AUTH = {"X-API-Key": TEST_API_KEY}


@dataclass(frozen=True)
class Answer:
    sent_at: float  # monotonic
    sent_at_wall: float  # time.time(), to compare with the executions' started_at
    status: int | None  # None: no HTTP answer at all (refused connection, timeout)
    job_id: str | None
    payload: dict


class Submitter:
    """POSTs a `record` job every `every` seconds until stopped."""

    def __init__(self, base: str, *, every: float = 0.02, seconds: float = 0.02, timeout: float = 30.0):
        self.base = base
        self.every = every
        self.payload = {"type": "record", "queue": QUEUE, "payload": {"seconds": seconds}, "max_retries": 10}
        self.timeout = timeout
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="submitter", daemon=True)
        self._session = requests.Session()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 5)
        self._session.close()

    def submit(self, session: requests.Session | None = None, **fields) -> Answer:
        """One POST (from the calling thread: the thread's session is its own)."""
        body = self.payload | fields
        sent_at, sent_at_wall = time.monotonic(), time.time()
        try:
            response = (session or requests).post(f"{self.base}/v1/jobs", json=body, headers=AUTH, timeout=self.timeout)
        except requests.RequestException:
            return Answer(sent_at, sent_at_wall, None, None, body)
        job_id = response.json().get("id") if response.status_code == 201 else None
        return Answer(sent_at, sent_at_wall, response.status_code, job_id, body)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.answers.append(self.submit(self._session))

    def accepted(self) -> list[Answer]:
        return [answer for answer in list(self.answers) if answer.status == 201]

    def between(self, start: float, end: float) -> list[Answer]:
        return [answer for answer in list(self.answers) if start <= answer.sent_at < end]
