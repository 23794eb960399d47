"""Managed API keys: create, find by prefix, list, revoke, and note their use. The key
itself never reaches the database, only its hash (quorra.keys says why that hash)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import exc as sa_exc
from sqlalchemy import func, insert, or_, select, update

from quorra.access import Role
from quorra.audit import AuditEntry
from quorra.errors import ApiKeyNotFound, IllegalTransition
from quorra.keys import ApiKey, CreatedKey, KeySpec, generate, key_hash, prefix_from_shown, shown
from quorra.schema import api_keys
from quorra.store.audit import record_audit
from quorra.store.base import StoreBase, logger, utcnow

MAX_KEYS_LISTED = 1000
PREFIX_ATTEMPTS = 5  # a new prefix that is taken (48 random bits: next to never) is drawn again


class ApiKeys(StoreBase):
    def create_api_key(
        self, spec: KeySpec, *, created_by: str, audit: AuditEntry | None = None, now: datetime | None = None
    ) -> CreatedKey:
        """A new key for `spec`; the returned secret is the only copy of the whole key."""
        for attempt in range(PREFIX_ATTEMPTS):
            prefix, secret = generate()
            try:
                return self._insert_key(spec, prefix, secret, created_by, audit, now)
            except sa_exc.IntegrityError:
                if attempt == PREFIX_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _insert_key(self, spec, prefix, secret, created_by, audit, now) -> CreatedKey:
        key_id = str(uuid.uuid4())
        with self._transaction() as conn:
            clock = self._clock(now)
            created_at = self._wall_now(conn, now)
            values = {
                "id": key_id,
                "name": spec.name,
                "prefix": prefix,
                "hash": key_hash(secret),
                "role": spec.role.value,
                "tenant": spec.tenant,
                "created_at": created_at,
                "created_by": created_by,
                "expires_at": spec.expires_at(created_at),
            }
            row = conn.execute(insert(api_keys).values(values).returning(*_PUBLIC)).one()
            if audit is not None:
                audit = audit.about(
                    key_id, name=spec.name, role=spec.role.value, tenant=spec.tenant, prefix=shown(prefix)
                )
            record_audit(conn, clock, audit)
        key = to_api_key(row)
        logger.info(
            "api key created",
            extra={"event": "api_key.created", "key_id": key.id, "prefix": prefix, "role": key.role.value},
        )
        return CreatedKey(key, secret)

    def find_api_key(self, prefix: str) -> tuple[ApiKey, str] | None:
        """The key with this prefix and its stored hash, revoked or not; None if none has it."""
        with self._one_statement() as conn:
            row = conn.execute(select(*_PUBLIC, api_keys.c.hash).where(api_keys.c.prefix == prefix)).one_or_none()
        return None if row is None else (to_api_key(row), row.hash)

    def get_api_key(self, key_id: str, *, tenant: str | None = None) -> ApiKey:
        """The key with this id (or shown prefix, qk_<prefix>), of `tenant` (None: of any
        tenant, for the server-side CLI); another tenant's key is not found."""
        with self._one_statement() as conn:
            return self._fetch_key(conn, key_id, tenant)

    def _fetch_key(self, conn, key_id: str, tenant: str | None) -> ApiKey:
        row = conn.execute(select(*_PUBLIC).where(*_by_id_or_prefix(key_id, tenant))).one_or_none()
        if row is None:
            raise ApiKeyNotFound(f"no API key has the id {key_id!r}")
        return to_api_key(row)

    def list_api_keys(self, *, include_revoked: bool = False, tenant: str | None = None) -> list[ApiKey]:
        """Keys by creation time, oldest first (people make them: a few hundred at most)."""
        query = select(*_PUBLIC).order_by(api_keys.c.created_at, api_keys.c.id).limit(MAX_KEYS_LISTED)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        if tenant is not None:
            query = query.where(api_keys.c.tenant == tenant)
        with self._transaction() as conn:
            return [to_api_key(row) for row in conn.execute(query)]

    def revoke_api_key(
        self,
        key_id: str,
        *,
        tenant: str | None = None,
        audit: AuditEntry | None = None,
        now: datetime | None = None,
    ) -> ApiKey:
        """Revoke a key (by id or shown prefix) of `tenant` (None: any) for good; a revoked
        key stays listed for the record."""
        with self._transaction() as conn:
            clock = self._clock(now)
            row = conn.execute(
                update(api_keys)
                .where(*_by_id_or_prefix(key_id, tenant), api_keys.c.revoked_at.is_(None))
                .values(revoked_at=self._wall_now(conn, now))
                .returning(*_PUBLIC)
            ).one_or_none()
            if row is None:
                self._fetch_key(conn, key_id, tenant)  # raises ApiKeyNotFound
                raise IllegalTransition(f"the API key {key_id!r} is revoked already")
            key = to_api_key(row)
            if audit is not None:
                audit = audit.about(key.id, name=key.name, prefix=shown(key.prefix))
            record_audit(conn, clock, audit)
        logger.info("api key revoked", extra={"event": "api_key.revoked", "key_id": key.id, "prefix": key.prefix})
        return key

    def touch_api_key(self, key_id: str, *, min_interval_seconds: float = 60.0, now: datetime | None = None) -> bool:
        """Set last_used_at, unless it was set less than `min_interval_seconds` ago (by any
        process): True if this call wrote it."""
        with self._one_statement() as conn:
            moment = self._wall_now(conn, now)
            statement = (
                update(api_keys)
                .where(
                    api_keys.c.id == key_id,
                    or_(
                        api_keys.c.last_used_at.is_(None),
                        api_keys.c.last_used_at <= moment - timedelta(seconds=min_interval_seconds),
                    ),
                )
                .values(last_used_at=moment)
            )
            return conn.execute(statement).rowcount == 1

    def _wall_now(self, conn, now: datetime | None) -> datetime:
        """A concrete time for a key's columns: `now`, the process clock (SQLite) or the database's."""
        if now is not None or self.dialect == "sqlite":
            return now or utcnow()
        return conn.execute(select(func.now())).scalar_one()


_PUBLIC = [column for column in api_keys.c if column.name != "hash"]


def _by_id_or_prefix(given: str, tenant: str | None) -> list:
    """A key named by its id, or by its shown prefix (qk_<prefix>) as lists print it, of
    `tenant` (None: of any)."""
    of_tenant = [] if tenant is None else [api_keys.c.tenant == tenant]
    try:
        return [api_keys.c.id == str(uuid.UUID(given)), *of_tenant]
    except (ValueError, AttributeError, TypeError):
        pass
    prefix = prefix_from_shown(given)
    if prefix is None:
        raise ApiKeyNotFound(f"no API key has the id {given!r}")
    return [api_keys.c.prefix == prefix, *of_tenant]


def to_api_key(row) -> ApiKey:
    data = {column.name: getattr(row, column.name) for column in _PUBLIC}
    data["id"] = str(uuid.UUID(str(data["id"])))
    data["role"] = Role(data["role"])
    return ApiKey(**data)
