"""Errors on the wire: one table from ``QuorraError.code`` to the HTTP status, and one
JSON envelope for every error the API returns (routing and method errors included):

    {"error": {"code": "not_found", "message": "No job has that id.", "details": null}}

Unknown exceptions become a 500 whose body never carries the exception's text; the
traceback goes to the log, tagged with the request id the client also received."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, jsonify
from werkzeug.exceptions import HTTPException

from quorra.errors import QuorraError

logger = logging.getLogger(__name__)

STATUS_BY_CODE: dict[str, int] = {
    "invalid_argument": 400,
    "unauthenticated": 401,
    "permission_denied": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "stale_lease": 409,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "internal": 500,
    "unavailable": 503,
    "schema_out_of_date": 503,
}
# HTTP errors raised by Flask's routing carry a status; the first code with it names them.
CODE_BY_STATUS: dict[int, str] = {status: code for code, status in reversed(STATUS_BY_CODE.items())}


class UnsupportedMediaType(QuorraError):
    """Send the request body as JSON, with Content-Type: application/json."""

    code = "unsupported_media_type"


def error_response(code: str, message: str, details: Any = None) -> tuple[Response, int]:
    body = {"error": {"code": code, "message": message, "details": details}}
    return jsonify(body), STATUS_BY_CODE.get(code, 500)


def handle_quorra_error(exc: QuorraError) -> tuple[Response, int]:
    if STATUS_BY_CODE.get(exc.code, 500) == 500:
        return handle_unexpected(exc)
    response, status = error_response(exc.code, exc.message, exc.details)
    retry_after = getattr(exc, "retry_after_seconds", None)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response, status


def handle_http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    code = CODE_BY_STATUS.get(status, "invalid_argument" if 400 <= status < 500 else "internal")
    response, _ = error_response(code, exc.description or exc.name)
    response.status_code = status
    for name, value in exc.get_headers():  # keeps Allow on a 405
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def handle_unexpected(exc: Exception) -> tuple[Response, int]:
    logger.error("request failed", extra={"event": "http.failed", "error_type": type(exc).__name__}, exc_info=exc)
    request_id = g.get("request_id")
    return error_response("internal", f"internal error; the server log has the details (request id {request_id})")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(QuorraError, handle_quorra_error)
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(Exception, handle_unexpected)
