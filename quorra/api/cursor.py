"""The list cursor: an opaque token for "the page after this job", signed by this deployment.

A cursor is ``base64url(JSON [created_at, id]) "." base64url(HMAC-SHA256[:16])``. Only the
server can make one, so a cursor it did not hand out is refused (400) before anything in it
is read: a forged one cannot reach the database or a date conversion (a made-up
``0001-01-01T00:00:00+01:00`` once overflowed into a 500).

The keys come from ``Settings.cursor_keys``: the first signs, every one verifies, so keys
rotate like API keys (add the new one in second place, then move it first, then drop the
old). Every web process of a deployment must share them; the default is derived from the
API keys, which they already share."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import UTC, datetime

from quorra.errors import InvalidArgument
from quorra.jobs import parse_job_id
from quorra.store import ListPosition

MAC_BYTES = 16  # 128 bits: forging one is out of reach, and the cursor stays short
_DOMAIN = b"quorra.list-cursor.v1:"  # a MAC of a cursor can never pass for a MAC of anything else


class CursorCodec:
    def __init__(self, keys: Sequence[bytes]):
        if not keys:
            raise ValueError("a cursor codec needs at least one key")
        self.keys = tuple(keys)

    def encode(self, position: ListPosition) -> str:
        body = json.dumps([position.created_at.isoformat(), position.id], separators=(",", ":")).encode()
        return f"{_b64(body)}.{_b64(self._mac(self.keys[0], body))}"

    def decode(self, cursor: str) -> ListPosition:
        """The position a cursor of ours holds; InvalidArgument for anything else."""
        try:
            body = self._verified_body(cursor)
            created_at, job_id = json.loads(body)
            return ListPosition(_aware_utc(created_at), _job_id(job_id))
        except (ValueError, TypeError, OverflowError, binascii.Error):
            raise InvalidArgument(
                "cursor is not one this server returned; start again without a cursor",
                details=[{"field": "cursor", "message": "not a next_cursor of this server"}],
            ) from None

    def _verified_body(self, cursor: str) -> bytes:
        body_text, _, mac_text = cursor.partition(".")
        body, mac = _unb64(body_text), _unb64(mac_text)
        if not any(hmac.compare_digest(mac, self._mac(key, body)) for key in self.keys):
            raise ValueError("bad signature")
        return body

    @staticmethod
    def _mac(key: bytes, body: bytes) -> bytes:
        return hmac.new(key, _DOMAIN + body, hashlib.sha256).digest()[:MAC_BYTES]


def _aware_utc(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError("naive timestamp")
    return when.astimezone(UTC)


def _job_id(text: str) -> str:
    canonical = parse_job_id(text)
    if canonical is None:
        raise ValueError("not a job id")
    return canonical


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    # ascii only: b64decode would take (and drop) other characters of a str
    return base64.urlsafe_b64decode(text.encode("ascii") + b"=" * (-len(text) % 4))
