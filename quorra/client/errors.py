"""The client's exceptions: one base, one class per kind of answer, mapped from the error
``code`` the server puts in every error body (README, "Errors"):

    QuorraClientError            any failure; .code, .status, .message, .details, .request_id
      InvalidArgument            400 invalid_argument (and 405, 415); .fields: {field: message}
        PayloadTooLarge          413 payload_too_large
      Unauthenticated            401 unauthenticated
      NotFound                   404 not_found
      Conflict                   409 conflict, stale_lease
      Unavailable                503 unavailable, schema_out_of_date (502, 504 from a proxy); .retry_after
        Unreachable              no answer at all: refused, reset, timed out, unknown host
      ServerError                500 internal, or an answer that is not Quorra's
      WaitTimeout                wait() gave up before the job finished; .job is its last state
"""

from __future__ import annotations

from typing import Any


class QuorraClientError(Exception):
    """The Quorra server did not do what was asked."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: Any = None,
        request_id: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.details = details
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}" if self.status else self.message


class InvalidArgument(QuorraClientError):
    """The server refused the request as invalid; nothing was changed."""

    @property
    def fields(self) -> dict[str, str]:
        """{field: message} for each problem the server named (``jobs[3].priority``...)."""
        details = self.details if isinstance(self.details, list) else []
        return {str(d.get("field", "")): str(d.get("message", "")) for d in details if isinstance(d, dict)}


class PayloadTooLarge(InvalidArgument):
    """The request body is over the server's limit."""


class Unauthenticated(QuorraClientError):
    """The API key is missing or not one the server accepts."""


class NotFound(QuorraClientError):
    """No job has that id."""


class Conflict(QuorraClientError):
    """The job's status does not allow this (cancel a finished job, retry a pending one)."""


class Unavailable(QuorraClientError):
    """The server cannot serve the request now (database down, overloaded); retry later."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class Unreachable(Unavailable):
    """No answer from the server: connection refused or reset, timeout, unknown host."""

    def __init__(self, message: str, *, request_sent: bool, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.request_sent = request_sent  # False: the request surely never reached the server


class ServerError(QuorraClientError):
    """The server failed (a 500: its log has the details under the request id), or the
    answer is not one a Quorra server gives."""


class WaitTimeout(QuorraClientError, TimeoutError):
    """The job had not finished when the wait ended."""

    def __init__(self, message: str, *, job: Any):
        super().__init__(message)
        self.job = job


ERROR_BY_CODE: dict[str, type[QuorraClientError]] = {
    "invalid_argument": InvalidArgument,
    "method_not_allowed": InvalidArgument,
    "unsupported_media_type": InvalidArgument,
    "payload_too_large": PayloadTooLarge,
    "unauthenticated": Unauthenticated,
    "not_found": NotFound,
    "conflict": Conflict,
    "stale_lease": Conflict,
    "unavailable": Unavailable,
    "schema_out_of_date": Unavailable,
    "internal": ServerError,
}
# An answer without a Quorra error body (a proxy's 502, say) is named by its status.
ERROR_BY_STATUS: dict[int, type[QuorraClientError]] = {
    400: InvalidArgument,
    401: Unauthenticated,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def error_from_answer(status: int, body: Any, headers: Any) -> QuorraClientError:
    """The exception for an error answer: by the body's code, else by the HTTP status."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        code, message, details = error["code"], str(error.get("message") or ""), error.get("details")
        cls = ERROR_BY_CODE.get(code) or ERROR_BY_STATUS.get(status, ServerError)
    else:
        code, message, details = None, _short(body) or f"HTTP {status}", None
        cls = ERROR_BY_STATUS.get(status, ServerError if status >= 500 else QuorraClientError)
    common = {"code": code, "status": status, "details": details, "request_id": headers.get("x-request-id")}
    if issubclass(cls, Unavailable):
        return cls(message, retry_after=_retry_after(headers.get("retry-after")), **common)
    return cls(message, **common)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: not worth parsing, the backoff applies
        return None


def _short(body: Any) -> str:
    text = body if isinstance(body, str) else repr(body)
    return " ".join(text.split())[:200]
