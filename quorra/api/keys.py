"""/v1/keys: managed API keys, for admins (keys:manage). A new key is shown once, in the
answer to its POST; afterwards only its prefix. Revoking (DELETE) is for good, and takes
effect at once in this process and within QUORRA_KEY_CACHE_TTL in every other.

An admin manages its own tenant's keys: another tenant's key is a 404. The installation's
admins (admins of the default tenant) may name another tenant (`tenant` in the body, or
`?tenant=` on reads and DELETE); anyone else naming one gets a 403 saying why."""

from __future__ import annotations

from typing import Annotated, Any

from flask import Blueprint, request, url_for
from pydantic import BaseModel, ConfigDict, Field

from quorra.access import Permission
from quorra.api.auth import current_actor, current_principal, require_api_key, requires
from quorra.api.body import read_json
from quorra.api.jobs import parse_query, timestamp
from quorra.api.services import services
from quorra.jobs import MAX_QUEUE_CHARS
from quorra.keys import TENANT_PATTERN, ApiKey, KeySpec, shown

bp = Blueprint("keys", __name__, url_prefix="/v1/keys")
bp.before_request(require_api_key)


TenantName = Annotated[str, Field(min_length=1, max_length=MAX_QUEUE_CHARS, pattern=TENANT_PATTERN)]


class TenantQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: TenantName | None = None  # None: the caller's

    def chosen_tenant(self) -> str:
        """The tenant whose keys the request is about, once the caller may act for it."""
        principal = current_principal()
        if self.tenant is None:
            return principal.tenant
        principal.require_tenant(self.tenant)
        return self.tenant


class ListQuery(TenantQuery):
    include_revoked: bool = False


@bp.post("")
@requires(Permission.KEYS_MANAGE)
def create():
    """201 and the new key, with its secret `key` (never shown again). The tenant defaults to
    the creator's; another is for the installation's admins only."""
    body = read_json(services().settings.max_payload_bytes)
    if isinstance(body, dict) and "tenant" not in body:
        body = {**body, "tenant": current_principal().tenant}
    spec = KeySpec.parse(body)
    current_principal().require_tenant(spec.tenant)
    created = services().manager.create_key(spec, actor=current_actor())
    headers = {"Location": url_for(".get_key", key_id=created.key.id)}
    return {**key_json(created.key), "key": created.secret}, 201, headers


@bp.get("")
@requires(Permission.KEYS_MANAGE)
def list_keys():
    query = parse_query(ListQuery, request.args)
    found = services().store.list_api_keys(include_revoked=query.include_revoked, tenant=query.chosen_tenant())
    return {"keys": [key_json(key) for key in found]}


@bp.get("/<key_id>")
@requires(Permission.KEYS_MANAGE)
def get_key(key_id: str):
    tenant = parse_query(TenantQuery, request.args).chosen_tenant()
    return key_json(services().store.get_api_key(key_id, tenant=tenant))


@bp.delete("/<key_id>")
@requires(Permission.KEYS_MANAGE)
def revoke(key_id: str):
    """Revoke the key (by id, or by its prefix as lists show it); 200 and the revoked key."""
    tenant = parse_query(TenantQuery, request.args).chosen_tenant()
    key = services().manager.revoke_key(key_id, tenant=tenant, actor=current_actor())
    services().key_resolver.forget(key.id)
    return key_json(key)


def key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": shown(key.prefix),
        "role": key.role.value,
        "tenant": key.tenant,
        "created_at": timestamp(key.created_at),
        "created_by": key.created_by,
        "last_used_at": timestamp(key.last_used_at),
        "expires_at": timestamp(key.expires_at),
        "revoked_at": timestamp(key.revoked_at),
    }
