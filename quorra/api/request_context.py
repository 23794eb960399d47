"""Per-request context: the X-Request-ID (a sane incoming one is kept, otherwise one is
made), echoed on every response and bound to ``quorra.logs.request_id`` so every log line
of the request carries it; and one access-log line per request, through our own logging
(gunicorn's access log is off)."""

from __future__ import annotations

import logging
import random
import re
import time

from flask import Flask, Response, g, request

from quorra import logs

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
# Bounded length and a charset that cannot forge log lines or headers.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
# Probes and scrapes arrive every few seconds; their access lines are DEBUG, not INFO.
_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


def bind_request_id() -> None:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    context = g._get_current_object()  # one context lookup for the three fields
    context.request_id = incoming if _SANE_REQUEST_ID.fullmatch(incoming) else new_request_id()
    context.request_id_token = logs.request_id.set(context.request_id)
    context.started_at = time.perf_counter()


def new_request_id() -> str:
    """32 random hex digits, like uuid4().hex without a UUID object nor a getrandom system
    call (which lets go of the GIL, and another request thread takes it): ids need to be
    unique, not secret. `random` is reseeded in each forked worker."""
    return f"{random.getrandbits(128):032x}"


def finish_request(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
        rule = route(request._get_current_object())
        level = logging.DEBUG if rule in _QUIET_ROUTES else logging.INFO
        if logger.isEnabledFor(level):  # below the level, the fields are not even built
            logger.log(level, "request served", extra=_access_fields(response, rule))
    return response


def unbind_request_id(_exc: BaseException | None = None) -> None:
    token = g.pop("request_id_token", None)
    if token is not None:
        logs.request_id.reset(token)


def _access_fields(response: Response, rule: str) -> dict[str, object]:
    return {
        "event": "http.request",
        "method": request.method,
        "route": rule,
        "status": response.status_code,
        "duration_seconds": round(time.perf_counter() - g.started_at, 6),
    }


def route(req) -> str:
    """The URL rule ('/v1/jobs/<job_id>'), not the raw path: bounded cardinality in metrics."""
    rule = req.url_rule
    return rule.rule if rule is not None else "<unmatched>"


def register_request_context(app: Flask) -> None:
    app.before_request(bind_request_id)
    app.after_request(finish_request)
    app.teardown_request(unbind_request_id)
