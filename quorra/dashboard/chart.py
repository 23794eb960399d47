"""The overview's chart: jobs finished per minute over the last hour, succeeded and failed,
as the geometry of a server-rendered SVG (no chart library, no script): stacked bars, one per
minute, the failures on top."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

WIDTH, HEIGHT = 960, 150  # the SVG's viewBox; the stylesheet scales it to the page's width
LEFT, BOTTOM, TOP = 34, 18, 8  # room for the axis labels
MINUTES = 60


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    ok_y: float
    ok_height: float
    bad_y: float
    bad_height: float
    title: str


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    ticks: list[tuple[float, int]]  # (y, value) of each horizontal grid line
    succeeded: int
    failed: int
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    bottom: float = HEIGHT - BOTTOM


def throughput_chart(rows: Iterable[tuple[datetime, int, int]], now: datetime) -> Chart:
    """`rows`: (minute, succeeded, failed) for the minutes that had any; the chart covers the
    60 minutes up to `now`'s, the missing ones as zero."""
    last = now.replace(second=0, microsecond=0)
    first = last - timedelta(minutes=MINUTES - 1)
    by_minute = {minute.replace(second=0, microsecond=0): (ok, bad) for minute, ok, bad in rows}
    minutes = [first + timedelta(minutes=n) for n in range(MINUTES)]
    counts = [by_minute.get(minute, (0, 0)) for minute in minutes]
    top = nice_ceiling(max((ok + bad for ok, bad in counts), default=0))
    plot_height = HEIGHT - BOTTOM - TOP
    slot = (WIDTH - LEFT) / MINUTES

    def height_of(value: int) -> float:
        return plot_height * value / top

    bars = []
    for n, (minute, (ok, bad)) in enumerate(zip(minutes, counts, strict=True)):
        ok_height, bad_height = height_of(ok), height_of(bad)
        ok_y = HEIGHT - BOTTOM - ok_height
        title = f"{minute:%H:%M} UTC: {ok} succeeded, {bad} failed"
        bars.append(Bar(LEFT + n * slot + 1, max(slot - 2, 1), ok_y, ok_height, ok_y - bad_height, bad_height, title))
    ticks = [(HEIGHT - BOTTOM - height_of(value), value) for value in (0, top // 2, top) if value or top]
    return Chart(bars, _unique(ticks), sum(ok for ok, _ in counts), sum(bad for _, bad in counts))


def nice_ceiling(value: int) -> int:
    """The axis top: 1, 2 or 5 times a power of ten, at least `value` (and at least 2, so the
    half-way line is a whole number)."""
    if value <= 2:
        return 2
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)


def _unique(ticks: list[tuple[float, int]]) -> list[tuple[float, int]]:
    seen: dict[int, float] = {}
    for y, value in ticks:
        seen.setdefault(value, y)
    return [(y, value) for value, y in seen.items()]
