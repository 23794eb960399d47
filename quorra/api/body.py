"""Reading a JSON request body safely: JSON content type only (415), a size limit checked
on Content-Length before reading and on the bytes actually read, so a chunked body
cannot slip past it (413), and malformed or absurdly nested JSON refused as a 400, as is an
object that repeats a key (parsers disagree on which value wins, so the client's intent is
unknowable)."""

from __future__ import annotations

import json
from typing import Any

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from quorra.api.errors import UnsupportedMediaType
from quorra.errors import InvalidArgument, PayloadTooLarge


def read_json(limit: int) -> Any:
    require_json_content_type()
    return decode_json(read_body(limit))


def require_json_content_type() -> None:
    mimetype = request.mimetype  # lower-cased, parameters (charset) removed
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType(
            f"expected Content-Type: application/json, got {request.content_type or 'no Content-Type'}"
        )


def read_body(limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    # A chunked body has no Content-Length. werkzeug stops reading it at max_content_length
    # and silently truncates there, so read one byte past the limit to tell "too large"
    # from "exactly the limit", without ever holding more than limit + 1 bytes.
    request.max_content_length = limit + 1
    try:
        raw = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise _too_large(limit) from None
    if len(raw) > limit:
        raise _too_large(limit)
    return raw


def decode_json(raw: bytes) -> Any:
    try:
        return json.loads(raw, object_pairs_hook=_object_without_repeated_keys)
    except RecursionError:
        raise InvalidArgument("the JSON body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, undecodable bytes, over-long integers
        raise InvalidArgument("the body is not valid JSON", details=[{"field": "", "message": str(exc)}]) from None


def _object_without_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) < len(pairs):
        seen: set[str] = set()
        repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise InvalidArgument(
            "the body repeats a key in one JSON object",
            details=[{"field": _escaped(repeated), "message": "given more than once in the same object"}],
        )
    return obj


def _escaped(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than {limit} bytes")
