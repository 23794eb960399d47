"""The OpenAPI description of access control's routes: /v1/keys (managed API keys) and
/v1/audit (the audit log), and the bearer-token security scheme. Kept beside openapi.py,
which merges these into the document."""

from __future__ import annotations

from typing import Any

from quorra.access import ALL_TENANTS, DEFAULT_TENANT, Role
from quorra.api.audit import NO_NUL
from quorra.api.openapi import _ref, _responses, _timestamp
from quorra.audit import MAX_ACTOR_CHARS, MAX_TARGET_CHARS, Action
from quorra.jobs import MAX_QUEUE_CHARS
from quorra.keys import KEY_NAME_PATTERN, MAX_EXPIRY_SECONDS, MAX_KEY_NAME_CHARS, TENANT_PATTERN
from quorra.store import MAX_LIST_LIMIT

SECURITY_SCHEMES = {
    "BearerJwt": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": (
            "A JWT (when QUORRA_JWT_SECRET or QUORRA_JWT_JWKS_URL is set), with exp and sub, the role in "
            "QUORRA_JWT_ROLE_CLAIM and the tenant in QUORRA_JWT_TENANT_CLAIM (absent: the default tenant; "
            f"{ALL_TENANTS!r}, every tenant, with the worker role only). A managed key is accepted here too."
        ),
    }
}
_KEY_ID = {
    "name": "key_id",
    "in": "path",
    "required": True,
    "description": "The key's id, or its prefix as lists show it (qk_...)",
    "schema": {"type": "string", "minLength": 1, "maxLength": 100},
}


_TENANT_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_QUEUE_CHARS, "pattern": TENANT_PATTERN}
_FOR_TENANT = (
    f"The tenant whose keys (default: the caller's). Another tenant's is for the installation's admins "
    f"(admins of the {DEFAULT_TENANT!r} tenant) only: anyone else gets a 403. Without it, another tenant's "
    "key is a 404, as a missing one"
)


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def access_paths() -> dict[str, Any]:
    # The dashboard's /audit page is for browsers, like its other pages (README, "The dashboard").
    return {**_key_paths(), "/v1/audit": {"get": _audit_operation()}}


def _key_paths() -> dict[str, Any]:
    one = _ref("ApiKey")
    shown_once = "The key, with its secret `key`: shown this once"
    created = _responses(201, _ref("ApiKeyCreated"), shown_once, 400, 401, 413, 415, 503)
    revoked = _responses(200, one, "The key, revoked", 400, 401, 404, 409, 503)
    revoked["409"]["description"] = "The key is revoked already"
    got = _responses(200, one, "The key (never its secret)", 400, 401, 404, 503)
    listed = _responses(200, _ref("ApiKeyList"), "The keys, oldest first", 400, 401, 503)
    for answers in (revoked, got):
        answers["404"]["description"] = "No key of the tenant has that id or prefix"
    for answers in (created, listed, revoked, got):
        answers["403"]["description"] = (
            "The role lacks keys:manage, or another tenant is named by no installation admin"
        )
    include = _query("include_revoked", {"type": "boolean", "default": False}, "List revoked keys too")
    tenant = _query("tenant", _TENANT_SCHEMA, _FOR_TENANT)
    body = {"required": True, "content": {"application/json": {"schema": _ref("KeySpec")}}}
    return {
        "/v1/keys": {
            "post": {"summary": "Create a managed API key", "operationId": "createKey", "requestBody": body}
            | {"responses": created},
            "get": {"summary": "List a tenant's managed API keys", "operationId": "listKeys"}
            | {"parameters": [include, tenant]}
            | {"responses": listed},
        },
        "/v1/keys/{key_id}": {
            "parameters": [_KEY_ID, tenant],
            "get": {"summary": "Read a managed API key", "operationId": "getKey", "responses": got},
            "delete": {
                "summary": "Revoke a key for good (other processes stop accepting it within QUORRA_KEY_CACHE_TTL)",
                "operationId": "revokeKey",
                "responses": revoked,
            },
        },
    }


def _audit_operation() -> dict[str, Any]:
    text = {"type": "string", "minLength": 1, "pattern": NO_NUL}
    parameters = [
        _query("action", {"type": "string", "enum": [a.value for a in Action]}, "Only entries of this action"),
        _query("actor", {**text, "maxLength": MAX_ACTOR_CHARS}, "Only this actor's (key:<id>, jwt:<sub>, ...)"),
        _query(
            "target", {**text, "maxLength": MAX_TARGET_CHARS}, "Only entries about this job, schedule, queue or key"
        ),
        _query("since", {"type": "string", "format": "date-time"}, "Entries at or after this time (with its zone)"),
        _query("until", {"type": "string", "format": "date-time"}, "Entries before this time (after since)"),
        _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT, "default": 50}, "Page size"),
        _query("cursor", {"type": "string", "minLength": 1, "maxLength": 500}, "The next_cursor of the last page"),
    ]
    return {
        "summary": "The audit log of the caller's tenant, newest first (keyset pagination); read only",
        "operationId": "listAudit",
        "parameters": parameters,
        "responses": _responses(200, _ref("AuditPage"), "One page of entries", 400, 401, 503),
    }


def access_schemas() -> dict[str, Any]:
    key = _key_schema()
    created = {**key, "required": [*key["required"], "key"]}
    created["properties"] = {**key["properties"], "key": {"type": "string", "description": "The key: shown once"}}
    return {
        "KeySpec": _key_spec_schema(),
        "ApiKey": key,
        "ApiKeyCreated": created,
        "ApiKeyList": {"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array", "items": key}}},
        "AuditEntry": _audit_entry_schema(),
        "AuditPage": {
            "type": "object",
            "required": ["entries", "next_cursor"],
            "properties": {
                "entries": {"type": "array", "items": _ref("AuditEntry")},
                "next_cursor": {"type": ["string", "null"]},
            },
        },
    }


def _key_spec_schema() -> dict[str, Any]:
    seconds = {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_EXPIRY_SECONDS}
    return {
        "type": "object",
        "required": ["name", "role"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_NAME_CHARS, "pattern": KEY_NAME_PATTERN},
            "role": {"type": "string", "enum": [r.value for r in Role]},
            "tenant": _TENANT_SCHEMA
            | {
                "description": (
                    f"Default: the creator's. Another tenant's key is for the installation's admins only (403). "
                    f"{ALL_TENANTS!r}: every tenant, for a worker key only (a fleet of workers)"
                )
            },
            "expires_in_seconds": {
                "anyOf": [seconds, {"type": "null"}],
                "description": "Seconds until it expires (7776000: 90 days); null or absent: never",
            },
        },
        # the tenant '*' is a worker's only
        "if": {"required": ["tenant"], "properties": {"tenant": {"const": ALL_TENANTS}}},
        "then": {"properties": {"role": {"const": Role.WORKER.value}}},
    }


def _key_schema() -> dict[str, Any]:
    properties = {
        "id": {"type": "string", "format": "uuid"},
        "name": {"type": "string"},
        "prefix": {"type": "string", "description": "What the key starts with, shown to people (qk_...)"},
        "role": {"type": "string", "enum": [r.value for r in Role]},
        "tenant": {"type": "string"},
        "created_at": _timestamp(),
        "created_by": {"type": "string", "description": "The subject that made it (key:<id>, jwt:<sub>, cli:<user>)"},
        "last_used_at": {**_timestamp(nullable=True), "description": "Written at most once a minute"},
        "expires_at": _timestamp(nullable=True),
        "revoked_at": _timestamp(nullable=True),
    }
    return {"type": "object", "required": list(properties), "properties": properties}


def _audit_entry_schema() -> dict[str, Any]:
    nullable = {"type": ["string", "null"]}
    properties = {
        "id": {"type": "string", "format": "uuid"},
        "occurred_at": _timestamp(),
        "tenant": {"type": "string"},
        "actor": {"type": "string", "description": "key:<id>, env-key:<sha256 prefix>, jwt:<sub> or cli:<user>"},
        "actor_name": nullable,
        "action": {"type": "string", "description": "<noun>.<verb>, e.g. " + ", ".join(a.value for a in Action)},
        "target": nullable,
        "remote_addr": nullable,
        "request_id": nullable,
        "details": {"type": ["object", "null"]},
    }
    return {"type": "object", "required": list(properties), "properties": properties}
