"""Quorra's exceptions. Each carries a stable ``code``; the wire layers map codes to
HTTP and gRPC statuses in one table each (api/errors.py, rpc/servicer.py)."""

from __future__ import annotations

from typing import Any


class QuorraError(Exception):
    """Quorra failed to do what was asked."""

    code = "internal"

    def __init__(self, message: str | None = None, *, details: Any = None):
        self.message = message or (self.__doc__ or "").strip()
        self.details = details
        super().__init__(self.message)


class InvalidArgument(QuorraError):
    """An argument of the request is invalid."""

    code = "invalid_argument"


class InvalidJobSpec(InvalidArgument):
    """The request is not a valid job."""


class NotAuthenticated(QuorraError):
    """A valid API key is required."""

    code = "unauthenticated"


class PermissionDenied(QuorraError):
    """The caller's role does not allow this."""

    code = "permission_denied"


class JobNotFound(QuorraError):
    """No job has that id."""

    code = "not_found"


class IllegalTransition(QuorraError):
    """The job is not in a state that allows this."""

    code = "conflict"


class IdempotencyKeyReused(IllegalTransition):
    """This idempotency key was used for a different job."""


class StaleLease(QuorraError):
    """The lease is no longer held: it expired, was reclaimed, or the job was settled."""

    code = "stale_lease"


class PayloadTooLarge(QuorraError):
    """The request body is larger than the configured limit."""

    code = "payload_too_large"


class DatabaseUnavailable(QuorraError):
    """The database cannot be reached; try again shortly."""

    code = "unavailable"


class SchemaOutOfDate(QuorraError):
    """The database schema is not at the latest migration; run `quorra migrate`."""

    code = "schema_out_of_date"


class InvalidConfig(QuorraError):
    """The configuration is invalid."""

    code = "invalid_config"


class ScheduleNotFound(QuorraError):
    """No schedule has that name."""

    code = "not_found"


class ScheduleExists(QuorraError):
    """A schedule of that name exists already."""

    code = "conflict"


class WorkflowNotFound(QuorraError):
    """No workflow has this id."""

    code = "not_found"


class ApiKeyNotFound(QuorraError):
    """No API key has that id."""

    code = "not_found"


class AuthUnavailable(QuorraError):
    """The signing keys of the token cannot be fetched; try again shortly."""

    code = "unavailable"


class TenantNotFound(QuorraError):
    """No tenant has that name (or it is not this caller's)."""

    code = "not_found"
