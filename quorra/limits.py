"""Rate and concurrency limits (issue 14 §4): what an operator sets on a queue or on a
tenant (all its queues together), and the token bucket that paces a rate. Pure Python: the
store keeps the numbers in the queues and tenants tables and applies them inside the lease
transaction (quorra.store.limits), so every gRPC server of a fleet obeys one count.

- ``max_in_flight``: at most this many jobs leased or processing at once.
- ``rate``: at most ``limit`` jobs started per second or per minute. A token bucket refilled
  continuously at limit/period that holds at most ``burst`` tokens, a tenth of the limit
  (at least 1): a queue idle for an hour starts that many jobs at once, then paces at the
  rate, so any window of t seconds holds at most burst + rate * t starts. Each leased job
  spends one token; a lease takes only whole tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from quorra.errors import InvalidArgument
from quorra.jobs import JsonInt, describe_errors

MAX_LIMIT = 1_000_000
PERIOD_SECONDS = {"second": 1, "minute": 60}
BURST_FRACTION = 0.1  # the bucket holds a tenth of the limit


@dataclass(frozen=True)
class Rate:
    """`limit` starts per `period_seconds` (1 or 60)."""

    limit: int
    period_seconds: int

    @property
    def per(self) -> str:
        return next(name for name, seconds in PERIOD_SECONDS.items() if seconds == self.period_seconds)

    @property
    def per_second(self) -> float:
        return self.limit / self.period_seconds

    @property
    def burst(self) -> int:
        """The most tokens the bucket holds: starts allowed at once after a pause."""
        return max(1, math.ceil(self.limit * BURST_FRACTION))

    @property
    def refill_seconds(self) -> float:
        """How long an empty bucket takes to fill: the longest a waiting worker need sleep
        before it asks again without letting a token go to waste."""
        return self.burst / self.per_second

    def tokens_at(self, now: datetime, tokens: float | None, refilled_at: datetime | None) -> float:
        """The tokens in the bucket at `now`, from what it held at `refilled_at` (a bucket
        never spent is full)."""
        if tokens is None or refilled_at is None:
            return float(self.burst)
        elapsed = max(0.0, (now - refilled_at).total_seconds())
        return min(float(self.burst), tokens + elapsed * self.per_second)

    def as_json(self) -> dict[str, Any]:
        return {"limit": self.limit, "per": self.per}


@dataclass(frozen=True)
class Limits:
    """The limits of one queue or tenant; both None: unlimited."""

    max_in_flight: int | None = None
    rate: Rate | None = None

    @property
    def is_limited(self) -> bool:
        return self.max_in_flight is not None or self.rate is not None

    def allowance(self, in_flight: int, tokens: float | None) -> float:
        """How many more jobs may start now (math.inf: no limit applies)."""
        room = math.inf if self.max_in_flight is None else max(0, self.max_in_flight - in_flight)
        paced = math.inf if self.rate is None or tokens is None else max(0, math.floor(tokens + 1e-9))
        return min(room, paced)

    def as_json(self) -> dict[str, Any]:
        return {"max_in_flight": self.max_in_flight, "rate": None if self.rate is None else self.rate.as_json()}


NO_LIMITS = Limits()


class RateSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: Annotated[JsonInt, Field(ge=1, le=MAX_LIMIT)]
    per: Literal["second", "minute"]


class LimitsSpec(BaseModel):
    """The body of PUT .../limits: it replaces both limits (a field left out or null: none)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_in_flight: Annotated[JsonInt, Field(ge=1, le=MAX_LIMIT)] | None = None
    rate: RateSpec | None = None

    @classmethod
    def parse(cls, data: object) -> Limits:
        if not isinstance(data, dict):
            raise InvalidArgument("limits must be a JSON object")
        try:
            spec = cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidArgument("the limits are invalid", details=describe_errors(exc)) from None
        return spec.limits()

    def limits(self) -> Limits:
        rate = None if self.rate is None else Rate(self.rate.limit, PERIOD_SECONDS[self.rate.per])
        return Limits(self.max_in_flight, rate)
