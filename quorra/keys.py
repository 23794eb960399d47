"""Managed API keys: how one is made, shown, stored and recognised. Pure Python; the store
keeps them (quorra.store.keys) and ``KeyResolver`` turns a presented key into a Principal
for the Authenticator.

A key reads ``qk_<prefix>_<secret>``: the prefix (12 hex digits) finds the row and is what
people see in lists and the audit log; the secret (256 random bits) is shown once, when the
key is made, and only a keyed hash of the whole key is stored.

Why HMAC-SHA256 and not bcrypt or argon2: slow hashes protect passwords, which people choose
from a small space. A key here is 256 random bits: nobody can search that space, however
fast each guess is, so a slow hash would add no safety and would cost every request
(tens of milliseconds of CPU each). The HMAC's key is a fixed domain label, so a stored hash
cannot pass for the hash of anything else. Comparison is in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Protocol

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, ValidationInfo, field_validator

from quorra.access import ALL_TENANTS, DEFAULT_TENANT, Credential, Principal, Role, check_tenant_of_role
from quorra.errors import InvalidArgument
from quorra.jobs import MAX_QUEUE_CHARS, NAME_PATTERN, describe_errors

KEY_MARK = "qk"
PREFIX_CHARS = 12  # 48 bits: a collision is retried, and the prefix alone opens nothing
SECRET_BYTES = 32
MAX_KEY_NAME_CHARS = 200
MAX_EXPIRY_SECONDS = 10 * 366 * 86400
_HASH_KEY = b"quorra.api-key.v1"
# A key's name: no control characters, no space at either end. The same text serves Python
# (re.fullmatch) and the OpenAPI document (ECMA-262).
KEY_NAME_PATTERN = "^[^\\x00-\\x1f\\x7f\\s](?:[^\\x00-\\x1f\\x7f]*[^\\x00-\\x1f\\x7f\\s])?$"
_KEY_NAME = re.compile(KEY_NAME_PATTERN[1:-1])
# A key's tenant: a name as queues have, or "*" (every tenant: fleet workers only).
TENANT_PATTERN = f"^(?:{NAME_PATTERN[1:-1]}|\\{ALL_TENANTS})$"
_HEX = frozenset("0123456789abcdef")


def generate() -> tuple[str, str]:
    """A new key: (prefix, the whole key to hand to its owner once)."""
    prefix = secrets.token_hex(PREFIX_CHARS // 2)
    return prefix, f"{KEY_MARK}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"


def prefix_of(credential: str) -> str | None:
    """The prefix of a credential shaped like a managed key, else None (not ours: another
    resolver's, or garbage). The secret may itself hold '_' and '-' (urlsafe base64)."""
    mark, _, rest = credential.partition("_")
    prefix, sep, secret = rest.partition("_")
    if mark != KEY_MARK or not sep or not secret or len(prefix) != PREFIX_CHARS or not set(prefix) <= _HEX:
        return None
    return prefix


def prefix_from_shown(text: str) -> str | None:
    """'qk_<prefix>' (as lists show a key) -> its prefix, else None."""
    mark, _, prefix = text.partition("_")
    if mark != KEY_MARK or len(prefix) != PREFIX_CHARS or not set(prefix) <= _HEX:
        return None
    return prefix


def key_hash(credential: str) -> str:
    return hmac.new(_HASH_KEY, credential.encode(), hashlib.sha256).hexdigest()


def shown(prefix: str) -> str:
    """How a key is named to people: its mark and prefix, never its secret."""
    return f"{KEY_MARK}_{prefix}"


@dataclass(frozen=True)
class ApiKey:
    """A managed key as stored, without its hash."""

    id: str
    name: str
    prefix: str
    role: Role
    tenant: str
    created_at: datetime
    created_by: str
    last_used_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def is_active(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def principal(self) -> Principal:
        subject = f"key:{self.id}"
        scope = hashlib.sha256(subject.encode()).hexdigest()  # its idempotency keys are its own
        return Principal(subject, self.name, self.role, self.tenant, key_id=self.id, idempotency_scope=scope)


@dataclass(frozen=True)
class CreatedKey:
    """A key just made: its record and the whole key, which is never shown again."""

    key: ApiKey
    secret: str


class KeySpec(BaseModel):
    """What a new key is: POST /v1/keys and `quorra keys create` validate through this."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[StrictStr, Field(min_length=1, max_length=MAX_KEY_NAME_CHARS)]
    role: Role
    tenant: Annotated[StrictStr, Field(min_length=1, max_length=MAX_QUEUE_CHARS, pattern=TENANT_PATTERN)] = (
        DEFAULT_TENANT
    )
    # seconds (a JSON number); None: the key never expires (revoke it instead). The CLI takes '90d'.
    expires_in_seconds: Annotated[float, Field(gt=0, le=MAX_EXPIRY_SECONDS, strict=True)] | None = None

    @field_validator("name")
    @classmethod
    def _printable(cls, name: str) -> str:
        if _KEY_NAME.fullmatch(name) is None:
            raise ValueError("no control characters, and no spaces at either end")
        return name

    @field_validator("tenant")
    @classmethod
    def _every_tenant_for_workers_only(cls, tenant: str, info: ValidationInfo) -> str:
        role = info.data.get("role")  # declared before tenant; absent if it was refused
        if role is not None:
            check_tenant_of_role(tenant, role)
        return tenant

    @classmethod
    def parse(cls, data: object) -> KeySpec:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidArgument("invalid key", details=describe_errors(exc)) from None

    def expires_at(self, now: datetime) -> datetime | None:
        return None if self.expires_in_seconds is None else now + timedelta(seconds=self.expires_in_seconds)


# -- recognising a presented key --------------------------------------------------------------


class KeyStore(Protocol):
    def find_api_key(self, prefix: str) -> tuple[ApiKey, str] | None: ...
    def touch_api_key(self, key_id: str, *, min_interval_seconds: float) -> bool: ...


@dataclass
class _Cached:
    key: ApiKey | None  # None: no active key matches this credential
    until: float


class KeyResolver:
    """A resolver for the Authenticator: a managed key -> its Principal.

    Each process keeps what it looked up for `ttl_seconds` (QUORRA_KEY_CACHE_TTL), so a busy
    key costs no query per request. The bound that follows: a key revoked (or expired) in
    another process still works here for at most `ttl_seconds`; in the process that revoked
    it, `forget` makes the revocation immediate. An expiry is checked on every use, cached or not.
    last_used_at is written at most once a minute per key (a guarded UPDATE, so processes
    do not pile up writes either), never once per request."""

    TOUCH_INTERVAL_SECONDS = 60.0
    MAX_CACHED = 10_000  # a flood of made-up keys cannot grow the cache without bound

    def __init__(self, store: KeyStore, ttl_seconds: float, *, clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self._cache: dict[str, _Cached] = {}
        self._touched: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, credential: Credential) -> Principal | None:
        """Either kind of credential may carry a managed key (X-API-Key, or Authorization: Bearer)."""
        prefix = prefix_of(credential.value)
        if prefix is None:
            return None
        key = self._lookup(credential.value, prefix)
        if key is None or not key.is_active(datetime.now(UTC)):
            return None
        self._touch(key.id)
        return key.principal()

    def forget(self, key_id: str | None = None) -> None:
        """Drop cached lookups (of one key, or all): a revocation made here applies at once."""
        with self._lock:
            if key_id is None:
                self._cache.clear()
            else:
                self._cache = {h: c for h, c in self._cache.items() if c.key is None or c.key.id != key_id}

    def _lookup(self, credential: str, prefix: str) -> ApiKey | None:
        digest = key_hash(credential)
        now = self.clock()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and cached.until > now:
            return cached.key
        found = self.store.find_api_key(prefix)
        key = found[0] if found is not None and hmac.compare_digest(digest, found[1]) else None
        with self._lock:
            if len(self._cache) >= self.MAX_CACHED:
                self._cache = {h: c for h, c in self._cache.items() if c.until > now}
                if len(self._cache) >= self.MAX_CACHED:
                    self._cache.clear()
            self._cache[digest] = _Cached(key, now + self.ttl_seconds)
        return key

    def _touch(self, key_id: str) -> None:
        now = self.clock()
        with self._lock:
            if now - self._touched.get(key_id, -float("inf")) < self.TOUCH_INTERVAL_SECONDS:
                return
            self._touched[key_id] = now
        self.store.touch_api_key(key_id, min_interval_seconds=self.TOUCH_INTERVAL_SECONDS)
