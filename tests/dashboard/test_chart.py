"""The overview's chart geometry: 60 one-minute bars up to now, failures stacked on top."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from quorra.dashboard.chart import HEIGHT, MINUTES, nice_ceiling, throughput_chart

NOW = datetime(2026, 12, 2, 1, 30, 42, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "top"), [(0, 2), (1, 2), (3, 5), (7, 10), (10, 10), (11, 20), (120, 200), (4999, 5000)]
)
def test_the_axis_top_is_a_round_number_at_least_the_largest_bar(value, top):
    assert nice_ceiling(value) == top


def test_a_minute_without_jobs_is_an_empty_bar_and_the_hour_has_sixty():
    chart = throughput_chart([], NOW)
    assert len(chart.bars) == MINUTES
    assert all(bar.ok_height == 0 and bar.bad_height == 0 for bar in chart.bars)
    assert chart.succeeded == chart.failed == 0
    assert chart.bars[-1].title == "01:30 UTC: 0 succeeded, 0 failed"
    assert chart.bars[0].title == "00:31 UTC: 0 succeeded, 0 failed"


def test_bars_stack_failures_on_successes_scaled_to_the_axis():
    minute = NOW.replace(second=0, microsecond=0)
    rows = [(minute, 6, 4), (minute - timedelta(minutes=1), 5, 0), (minute - timedelta(hours=2), 99, 99)]
    chart = throughput_chart(rows, NOW)
    last, before = chart.bars[-1], chart.bars[-2]
    assert chart.succeeded == 11 and chart.failed == 4  # the row outside the hour is left out
    assert last.ok_height == pytest.approx(before.ok_height * 6 / 5)
    assert last.bad_y + last.bad_height == pytest.approx(last.ok_y)  # failures sit on top
    assert last.ok_y + last.ok_height == pytest.approx(HEIGHT - 18)  # bars stand on the axis
    assert [value for _, value in chart.ticks] == [0, 5, 10]
