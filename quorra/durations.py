"""Durations as people write them: '30s', '500ms', '2m', '1h', '7d' or a bare number of
seconds. Pure Python, shared by the settings, the REST API (?wait=) and the client."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
# The same grammar in JSON Schema (ECMA-262) spelling, for the OpenAPI document.
DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"


def parse_duration(value: object) -> object:
    """'30s', '500ms', '2m', '1h', '7d' or a bare number of seconds -> float seconds; any
    other string raises ValueError, and a value that is not a string is returned as it is."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError("expected a duration such as 30s, 500ms, 2m, 1h, 7d or a number of seconds")
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return value
