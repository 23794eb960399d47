"""/v1/tenants/{tenant}/limits: a tenant's rate and concurrency limits over all its queues
together (quorra.limits). Set by the installation's admins only (the admins of the default
tenant): a tenant's own keys may read its limits, never raise them."""

from __future__ import annotations

from flask import Blueprint

from quorra.access import DEFAULT_TENANT, Permission, Principal, Role
from quorra.api.auth import current_actor, current_principal, require_api_key, requires
from quorra.api.body import read_json
from quorra.api.services import services
from quorra.errors import InvalidArgument, PermissionDenied, TenantNotFound
from quorra.jobs import MAX_QUEUE_CHARS, is_valid_name
from quorra.limits import LimitsSpec

bp = Blueprint("tenants", __name__, url_prefix="/v1/tenants")
bp.before_request(require_api_key)
MAX_BODY_BYTES = 4 * 1024


@bp.get("/<tenant>/limits")
@requires(Permission.JOBS_READ)
def limits(tenant: str):
    _visible(current_principal(), _tenant_name(tenant))
    return {"tenant": tenant, "limits": services().store.tenant_limits(tenant).as_json()}


@bp.put("/<tenant>/limits")
@requires(Permission.TENANTS_MANAGE)
def set_limits(tenant: str):
    """Replace the tenant's limits: {"max_in_flight": int|null, "rate": {"limit", "per"}|null}."""
    principal = current_principal()
    _visible(principal, _tenant_name(tenant))
    if not is_installation_admin(principal):  # an admin of its own tenant may not lift its limits
        raise PermissionDenied(
            "only the installation's admins (admins of the default tenant) set a tenant's limits",
            details={"permission": str(Permission.TENANTS_MANAGE), "role": str(principal.role)},
        )
    limits = LimitsSpec.parse(read_json(MAX_BODY_BYTES))
    limits = services().manager.set_tenant_limits(tenant, limits, actor=current_actor())
    return {"tenant": tenant, "limits": limits.as_json()}


def is_installation_admin(principal: Principal) -> bool:
    return principal.role is Role.ADMIN and principal.tenant == DEFAULT_TENANT


def _visible(principal: Principal, tenant: str) -> None:
    """Another tenant is a 404 to everybody but the installation's admins (no existence leak)."""
    if tenant != principal.tenant and not is_installation_admin(principal):
        raise TenantNotFound(f"no tenant is named {tenant!r}")


def _tenant_name(tenant: str) -> str:
    if not is_valid_name(tenant, MAX_QUEUE_CHARS):
        raise InvalidArgument(
            "invalid tenant name",
            details=[{"field": "tenant", "message": "1-100 characters from A-Z a-z 0-9 _ . : -"}],
        )
    return tenant
