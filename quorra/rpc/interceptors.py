"""Server interceptors: the API-key check and the per-call metrics and request id.

Both wrap the method handler that gRPC resolved, keeping its shape (unary or streaming on
either side), so a refused streaming call is still answered as a stream. A non-blocking
behavior (the health service's Watch, which holds no thread while its stream is open)
stays non-blocking: its wrapper takes gRPC's `send_response_callback` too."""

from __future__ import annotations

import contextvars
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import grpc

from quorra import metrics
from quorra.access import (
    DEFAULT_TENANT,
    Authenticator,
    Credential,
    Permission,
    Principal,
    Role,
)
from quorra.errors import QuorraError
from quorra.logs import request_id

API_KEY_HEADER = "x-api-key"
AUTHORIZATION_HEADER = "authorization"
BEARER_PREFIX = "Bearer "
REQUEST_ID_HEADER = "x-request-id"
# The health service answers without a key, like REST's /healthz (probes send no metadata).
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)

Behavior = Callable[[Any, grpc.ServicerContext], Any]

# The principal of the call running in this context, set by ApiKeyInterceptor once it is
# admitted (each RPC runs in its own copy of the context, as the request id does).
caller: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("quorra_rpc_caller", default=None)


def caller_tenant() -> str:
    """The tenant the running call acts for: its caller's ("*" for a fleet worker). A call
    that no ApiKeyInterceptor admitted (a servicer driven without the server) is the
    default tenant's."""
    principal = caller.get()
    return principal.tenant if principal is not None else DEFAULT_TENANT


_FACTORIES = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


def is_non_blocking(behavior: Behavior) -> bool:
    """gRPC calls such a behavior with a third argument, `send_response_callback`, and frees
    the thread as soon as it returns (grpcio's `experimental_non_blocking`)."""
    return bool(getattr(behavior, "experimental_non_blocking", False))


def wrap_handler(handler: grpc.RpcMethodHandler, wrap: Callable[[Behavior, bool], Behavior]) -> grpc.RpcMethodHandler:
    """The same handler with its behavior replaced by ``wrap(behavior, response_streaming)``;
    a wrapper of a non-blocking behavior is marked non-blocking too (and must take the callback)."""
    attribute, factory = _FACTORIES[(handler.request_streaming, handler.response_streaming)]
    behavior = getattr(handler, attribute)
    wrapped = wrap(behavior, handler.response_streaming)
    if is_non_blocking(behavior) and wrapped is not behavior:
        wrapped.experimental_non_blocking = True
        wrapped.experimental_thread_pool = getattr(behavior, "experimental_thread_pool", None)
    return factory(
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def metadata_value(details: grpc.HandlerCallDetails, key: str) -> str | None:
    for name, value in details.invocation_metadata or ():
        if name == key:
            return value if isinstance(value, str) else None
    return None


class ApiKeyInterceptor(grpc.ServerInterceptor):
    """Every call but the health check needs a credential (`x-api-key`, or `authorization:
    Bearer <token>`) whose principal holds the permission its service needs. A service not
    listed in `permissions` is refused to every caller but an admin (fail closed).

    The credential is checked when the call runs, on its pool thread, not here: grpcio runs
    intercept_service on its one serving thread, and resolving a managed key (a query, once
    per cache period) or a JWT (a JWKS fetch, now and then) there would stall every other call.
    It is still checked before the call gate and the ledger, so a refused caller takes no slot."""

    def __init__(self, authenticator: Authenticator, permissions: Mapping[str, Permission]):
        self._authenticator = authenticator
        self._permissions = permissions  # "/package.Service/" -> permission

    def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = continuation(details)
        if handler is None or details.method.startswith(OPEN_METHOD_PREFIXES):
            return handler
        credential = _credential(details)
        if credential is None:
            return wrap_handler(handler, lambda _behavior, _streaming: _refuse_unauthenticated)
        permission = self._permissions.get(details.method[: details.method.rfind("/") + 1])
        return wrap_handler(
            handler, lambda behavior, streaming: self._checked(behavior, streaming, credential, permission)
        )

    def _checked(
        self, behavior: Behavior, streaming: bool, credential: Credential, permission: Permission | None
    ) -> Behavior:
        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            self._admit(credential, permission, context)
            return behavior(request, context)

        def stream(request: Any, context: grpc.ServicerContext) -> Iterable[Any]:
            self._admit(credential, permission, context)
            yield from behavior(request, context)

        return stream if streaming else unary

    def _admit(self, credential: Credential, permission: Permission | None, context: grpc.ServicerContext) -> None:
        """Return if the caller may make this call; else abort it (raises)."""
        try:
            principal = self._authenticator.authenticate(credential)
        except QuorraError as exc:  # a refused token says why; an unreachable JWKS or database is transient
            context.abort(_AUTH_STATUS.get(exc.code, grpc.StatusCode.INTERNAL), exc.message)
        if principal is None:
            context.abort(*_UNAUTHENTICATED)
        if not _allowed(principal, permission):
            message = f"the {principal.role} role lacks the {permission or 'admin'} permission"
            context.abort(grpc.StatusCode.PERMISSION_DENIED, message)
        caller.set(principal)


_AUTH_STATUS = {"unauthenticated": grpc.StatusCode.UNAUTHENTICATED, "unavailable": grpc.StatusCode.UNAVAILABLE}


def _allowed(principal: Principal, permission: Permission | None) -> bool:
    if permission is None:  # an unlisted service
        return principal.role is Role.ADMIN
    return principal.can(permission)


def _credential(details: grpc.HandlerCallDetails) -> Credential | None:
    key = metadata_value(details, API_KEY_HEADER)
    if key:
        return Credential("api_key", key)
    authorization = metadata_value(details, AUTHORIZATION_HEADER) or ""
    if authorization.startswith(BEARER_PREFIX) and authorization[len(BEARER_PREFIX) :].strip():
        return Credential("bearer", authorization[len(BEARER_PREFIX) :].strip())
    return None


def _refuser(code: grpc.StatusCode, message: str) -> Behavior:
    def refuse(_request: Any, context: grpc.ServicerContext) -> None:
        context.abort(code, message)

    return refuse


_UNAUTHENTICATED = (grpc.StatusCode.UNAUTHENTICATED, f"a valid API key is required as `{API_KEY_HEADER}` metadata")
_refuse_unauthenticated = _refuser(*_UNAUTHENTICATED)


class ObservingInterceptor(grpc.ServerInterceptor):
    """Counts each call by method and final status code, times it, and binds a request id
    (the caller's `x-request-id`, or a new one) to the call's log lines."""

    def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = continuation(details)
        if handler is None:
            return None
        call_id = metadata_value(details, REQUEST_ID_HEADER) or uuid.uuid4().hex[:16]
        return wrap_handler(
            handler, lambda behavior, streaming: _observed(behavior, streaming, details.method, call_id)
        )


def _observed(behavior: Behavior, streaming: bool, method: str, call_id: str) -> Behavior:
    if is_non_blocking(behavior):
        return _observed_non_blocking(behavior, method, call_id)

    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        request_id.set(call_id)  # each RPC runs in its own copy of the context
        started, error = time.perf_counter(), None
        try:
            return behavior(request, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _record(method, context, started, error)

    def stream(request: Any, context: grpc.ServicerContext) -> Iterable[Any]:
        request_id.set(call_id)
        started, error = time.perf_counter(), None
        try:
            yield from behavior(request, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _record(method, context, started, error)

    return stream if streaming else unary


def _observed_non_blocking(behavior: Behavior, method: str, call_id: str) -> Behavior:
    """The call outlives the behavior: record it when the call terminates."""

    def non_blocking(request: Any, context: grpc.ServicerContext, send_response: Any) -> Any:
        request_id.set(call_id)
        started = time.perf_counter()
        if not context.add_callback(lambda: _record(method, context, started, None)):
            _record(method, context, started, None)
        return behavior(request, context, send_response)

    return non_blocking


def _record(method: str, context: grpc.ServicerContext, started: float, error: BaseException | None) -> None:
    metrics.grpc_call_observed(method, _final_code(context, error).name, time.perf_counter() - started)


def _final_code(context: grpc.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    code = context.code()  # set by abort() or set_code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(error, GeneratorExit) or not context.is_active():
        return grpc.StatusCode.CANCELLED  # the caller went away (cancelled, deadline, disconnected)
    return grpc.StatusCode.UNKNOWN if error is not None else grpc.StatusCode.OK
