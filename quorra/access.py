"""Who may do what: the one place where a credential becomes a principal, and where a
principal's role decides whether it may do an action. REST views, gRPC calls and the
dashboard all ask here, so a role means the same thing on every edge.

A role is a fixed set of permissions (no per-key grants to audit one by one). The keys of
QUORRA_API_KEY are admins (the bootstrap keys of a deployment); the keys of
QUORRA_READONLY_API_KEYS are viewers. More ways to authenticate (managed keys in the
database, JWTs) plug in as resolvers, tried in order after the configured keys.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from quorra.errors import PermissionDenied

DEFAULT_TENANT = "default"
# The tenant of a worker key that serves every tenant's queues (a shared fleet of workers);
# only the worker role may have it, as it reads and acts on no tenant's jobs but its leases.
ALL_TENANTS = "*"


class Permission(enum.StrEnum):
    JOBS_READ = "jobs:read"  # jobs, attempts, queues, workers, statistics, the dashboard's views
    JOBS_SUBMIT = "jobs:submit"  # submit one job, a batch or a workflow
    JOBS_MANAGE = "jobs:manage"  # cancel, retry, delete, bulk retry and delete
    JOBS_WORK = "jobs:work"  # lease, heartbeat and settle over gRPC
    QUEUES_MANAGE = "queues:manage"  # pause, resume, limits
    SCHEDULES_READ = "schedules:read"
    SCHEDULES_MANAGE = "schedules:manage"
    WEBHOOKS_MANAGE = "webhooks:manage"
    KEYS_MANAGE = "keys:manage"
    TENANTS_MANAGE = "tenants:manage"  # a tenant's limits; only the installation's admins use it
    AUDIT_READ = "audit:read"


class Role(enum.StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    PRODUCER = "producer"
    WORKER = "worker"
    VIEWER = "viewer"


_VIEW = frozenset({Permission.JOBS_READ, Permission.SCHEDULES_READ})
ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.OPERATOR: _VIEW
    | {Permission.JOBS_SUBMIT, Permission.JOBS_MANAGE, Permission.QUEUES_MANAGE, Permission.SCHEDULES_MANAGE},
    Role.PRODUCER: frozenset({Permission.JOBS_READ, Permission.JOBS_SUBMIT}),
    Role.WORKER: frozenset({Permission.JOBS_WORK}),
    Role.VIEWER: _VIEW,
}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    subject: str  # who, in logs and the audit log: "env-key:1a2b3c4d", "key:<id>", "jwt:<sub>"
    name: str  # a label for people
    role: Role
    tenant: str = DEFAULT_TENANT
    key_id: str | None = None  # the managed key, if it was one
    # Where this caller's idempotency keys live, so two callers never share one.
    idempotency_scope: str = ""

    @property
    def permissions(self) -> frozenset[Permission]:
        return ROLE_PERMISSIONS[self.role]

    def can(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]

    def require(self, permission: Permission) -> None:
        if not self.can(permission):
            raise PermissionDenied(
                f"the {self.role} role lacks the {permission} permission",
                details={"permission": str(permission), "role": str(self.role)},
            )

    @property
    def is_installation_admin(self) -> bool:
        """An admin of the default tenant: the installation's admins, who alone may act on
        another tenant's behalf (make its keys, set its limits)."""
        return self.role is Role.ADMIN and self.tenant == DEFAULT_TENANT

    def require_tenant(self, tenant: str) -> None:
        """Acting for `tenant` (naming it explicitly): one's own, or any for an installation admin."""
        if tenant != self.tenant and not self.is_installation_admin:
            raise PermissionDenied(
                f"only admins of the {DEFAULT_TENANT!r} tenant may act for another tenant ({tenant!r})",
                details={"tenant": tenant, "role": str(self.role)},
            )


def check_tenant_of_role(tenant: str, role: Role) -> None:
    """ALL_TENANTS is a fleet worker's tenant only: any other role would read or steer every
    tenant's jobs. ValueError naming the rule otherwise."""
    if tenant == ALL_TENANTS and role is not Role.WORKER:
        raise ValueError(f"the tenant {ALL_TENANTS!r} (every tenant) is for the worker role only, not {role}")


CredentialKind = Literal["api_key", "bearer"]


@dataclass(frozen=True)
class Credential:
    """What the caller presented: an API key (X-API-Key, gRPC x-api-key, the dashboard's
    sign-in) or a bearer token (Authorization: Bearer)."""

    kind: CredentialKind
    value: str


Resolver = Callable[[Credential], "Principal | None"]


class Authenticator:
    """Turns a credential into a principal, or None. The configured keys are compared in
    constant time with every one of them (never stopping at a match, so the time taken tells
    nothing about which key matched); then each resolver is asked in turn."""

    def __init__(self, admin_keys: Iterable[str], viewer_keys: Iterable[str] = (), resolvers: Sequence[Resolver] = ()):
        self._keys = [(key.encode(), _key_principal(key, Role.ADMIN)) for key in admin_keys]
        self._keys += [(key.encode(), _key_principal(key, Role.VIEWER)) for key in viewer_keys]
        self._resolvers = list(resolvers)

    def add_resolver(self, resolver: Resolver) -> None:
        self._resolvers.append(resolver)

    def authenticate(self, credential: Credential) -> Principal | None:
        if not credential.value:
            return None
        if credential.kind == "api_key":
            principal = self._configured_key(credential.value.encode())
            if principal is not None:
                return principal
        for resolve in self._resolvers:
            principal = resolve(credential)
            if principal is not None:
                return principal
        return None

    def authenticate_key(self, key: str) -> Principal | None:
        return self.authenticate(Credential("api_key", key))

    def _configured_key(self, given: bytes) -> Principal | None:
        found = None
        for key, principal in self._keys:
            if hmac.compare_digest(given, key) and found is None:
                found = principal
        return found


def _key_principal(key: str, role: Role) -> Principal:
    digest = hashlib.sha256(key.encode()).hexdigest()
    # The idempotency scope of a configured key is the sha256 of the key itself, as it
    # was before roles existed, so keys stored then still replay.
    return Principal(
        subject=f"env-key:{digest[:8]}", name=f"{role} key {digest[:8]}", role=role, idempotency_scope=digest
    )
