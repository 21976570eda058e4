"""Generic ASGI: a per-request prodlens scope for any ASGI application.

Wrap the application *outside* OpenTelemetry's ``OpenTelemetryMiddleware``, so the identity is
resolved from the ASGI scope before the server span opens (a sampler then sees it at root
start, and the span is stamped when it starts)::

    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from prodlens.integrations.asgi import ProdlensASGIMiddleware

    app = ProdlensASGIMiddleware(OpenTelemetryMiddleware(app))

With ``ProdlensInstrumentor`` (``opentelemetry-instrument``) no wrapping is needed: it patches
``OpenTelemetryMiddleware`` itself, so any ASGI framework traced by it gets a scope opened just
before the server span, and Starlette/FastAPI are patched further (``path:`` and ``user``; see
``prodlens.integrations.starlette``). HTTP and websocket scopes get a prodlens scope that lasts
exactly as long as the request (the whole connection for a websocket); ``lifespan`` passes
through. Sources here are the early ones (header, cookie, query, jwt, baggage) and ``user`` /
``user:ATTR`` when an authentication middleware outside this one set ``scope["user"]``.
Environment variables::

    export PRODLENS_CUSTOMER_FROM=jwt:sub,header:x-customer-id
    export PRODLENS_COHORT_PLAN_FROM=header:x-plan
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, MutableMapping
from types import ModuleType
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.context import detach as _otel_detach
from opentelemetry.context import get_current as _otel_context
from opentelemetry.sdk.trace import Span

from prodlens import _runtime
from prodlens._safety import guard
from prodlens._scope import ScopeToken, apply, close_scope, open_scope
from prodlens.baggage import may_hold_prodlens, strip_current_context, strip_members
from prodlens.identity import Identity, merge
from prodlens.integrations import _patching
from prodlens.integrations._plan import source_plan
from prodlens.integrations._readers import MAX_COOKIE_CHARS, cookie_value, query_value
from prodlens.integrations._sources import resolve_early, resolve_headers, resolve_late

__all__ = [
    "TARGET",
    "ASGIScopeView",
    "ProdlensASGIMiddleware",
    "apply_late",
    "asgi_call",
    "enter_request",
    "exit_request",
    "patch",
    "run_in_scope",
]

#: The instrumentor patches OpenTelemetry's ASGI middleware when it is imported.
TARGET: Final = "opentelemetry.instrumentation.asgi"

ASGIScope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[ASGIScope, Receive, Send], Awaitable[Any]]

#: Set in the ASGI scope while a prodlens scope is open for it, so nested wrappers open one only.
SCOPE_KEY: Final = "prodlens.scope"
#: Set once the late sources (path, user) were resolved for this request.
LATE_KEY: Final = "prodlens.late"
#: The token of a context attached without a client's prodlens baggage, detached at the end.
_CONTEXT_KEY: Final = "prodlens.context"
_HTTP_TYPES: Final = frozenset({"http", "websocket"})
#: Header values are read on at most this many bytes (every reader bounds itself further).
_MAX_HEADER_BYTES: Final = 32 * 1024
_MAX_QUERY_BYTES: Final = 16 * 1024
#: Attributes tried, in order, for a bare ``user`` source (Starlette ``BaseUser.identity``,
#: Django Channels' ``pk``, then Starlette's ``display_name``).
_USER_ATTRIBUTES: Final = ("identity", "pk", "display_name")


def _text(raw: object) -> str | None:
    """An ASGI header value (bytes) read as UTF-8, invalid bytes replaced (as the WSGI
    integration reads them, so one client yields the same id under either); bounded."""
    if not isinstance(raw, (bytes, bytearray)):
        return raw[:_MAX_HEADER_BYTES] if isinstance(raw, str) else None
    return bytes(raw[:_MAX_HEADER_BYTES]).decode("utf-8", "replace")


def _user_value(user: object, attr: str) -> object | None:
    """``attr`` of an authenticated ASGI user, or its identity when ``attr`` is empty."""
    if user is None:
        return None
    if isinstance(user, (str, int)):  # some auth middleware store the bare id
        return None if attr else user
    try:
        if not getattr(user, "is_authenticated", False):
            return None
    except Exception:  # BaseUser subclasses may leave properties unimplemented
        return None
    for name in (attr,) if attr else _USER_ATTRIBUTES:
        try:
            value: object = getattr(user, name, None)
        except Exception:  # NotImplementedError from BaseUser, or a broken property
            continue
        if value is not None and not callable(value):
            return value
    return None


class ASGIScopeView:
    """A :class:`~prodlens.integrations._sources.RequestView` over an ASGI connection scope."""

    __slots__ = ("scope",)

    def __init__(self, scope: ASGIScope) -> None:
        self.scope = scope

    def _values(self, name: str) -> list[bytes]:
        wanted = name.encode("latin-1", "replace")
        found: list[bytes] = []
        size = 0
        for item in self.scope.get("headers") or ():
            if size > _MAX_HEADER_BYTES:
                break  # every reader is bounded below this: the rest cannot matter
            try:
                key, value = item
            except (TypeError, ValueError):
                continue
            if isinstance(key, (bytes, bytearray)) and isinstance(value, (bytes, bytearray)) \
                    and bytes(key).lower() == wanted:
                found.append(bytes(value))
                size += len(value)
        return found

    def header(self, name: str) -> str | None:
        values = self._values(name)
        return _text(values[0]) if values else None

    def cookie(self, name: str) -> str | None:
        # HTTP/2 may split cookies over several headers.
        values = self._values("cookie")
        # Cut before decoding: as the WSGI integration does, the bound is on bytes.
        return cookie_value(_text(b"; ".join(values)[:MAX_COOKIE_CHARS]), name) \
            if values else None

    def query(self, name: str) -> str | None:
        raw = self.scope.get("query_string")
        if not isinstance(raw, (bytes, bytearray)) or not raw:
            return None
        return query_value(bytes(raw[:_MAX_QUERY_BYTES]).decode("latin-1"), name)

    def path_param(self, name: str) -> object | None:
        params = self.scope.get("path_params")
        return params.get(name) if isinstance(params, dict) else None

    def user(self, attr: str) -> object | None:
        return _user_value(self.scope.get("user"), attr)

    def baggage(self) -> str | None:
        values = self._values("baggage")
        return _text(b",".join(values)) if values else None


def _strip_inbound_baggage(scope: ASGIScope) -> None:
    """Remove prodlens members from inbound ``baggage`` headers, whether or not a source read
    them, so OpenTelemetry's propagator does not pass what a client sent on to every
    destination. A rewritten header keeps only ASCII members (W3C baggage is ASCII; no
    propagator accepts others), so it decodes as UTF-8 in any instrumentation."""
    headers = scope.get("headers")
    if not headers:
        return
    replaced: dict[int, bytes | None] = {}
    for index, item in enumerate(headers):
        try:
            name, value = item
        except (TypeError, ValueError):
            continue
        if name.__class__ is not bytes or (name != b"baggage" and (
                name.islower() or name.lower() != b"baggage")):
            continue
        if not isinstance(value, (bytes, bytearray)):
            continue
        text = bytes(value).decode("latin-1")
        if may_hold_prodlens(text):
            stripped = strip_members(text)
            if stripped != text:
                replaced[index] = stripped.encode("ascii") if stripped else None
    if replaced:
        rewritten: list[Any] = []
        for index, item in enumerate(headers):
            if index not in replaced:
                rewritten.append(item)  # anything else is kept exactly as it was
            elif (new := replaced[index]) is not None:
                rewritten.append((item[0], new))
        scope["headers"] = rewritten


def _early_key(scope: ASGIScope, names: dict[bytes, int], count: int,
               repeats: int) -> tuple[object, ...] | None:
    """The raw values (bytes, or None when absent) of the headers ``names`` in one pass over
    ``scope["headers"]``, in key order: the first value of each, as the full resolution reads
    them; the pass stops once all are found. None when they cannot key the cache (a value that
    is not bytes, a malformed header list, or a repeat of the header at position ``repeats``,
    ``baggage``, whose values are joined): then resolve in full."""
    values: list[object] = [None] * count
    headers = scope.get("headers")
    if count and headers:
        missing = count
        try:
            for name, value in headers:
                index = names.get(name)
                if index is None:
                    if name.islower():  # ASGI names are lower-case; tolerate others
                        continue
                    index = names.get(name.lower())
                    if index is None:
                        continue
                if value.__class__ is not bytes:
                    return None
                if values[index] is None:
                    values[index] = value
                    missing -= 1
                    if not missing and repeats < 0:
                        break  # every header is found, and a repeat would change nothing
                elif index == repeats:
                    return None
        except (TypeError, ValueError, AttributeError):
            return None
    return tuple(values)


def enter_request(scope: ASGIScope, *, with_late: bool) -> ScopeToken | None:
    """Open the request's prodlens scope with its early identity (and, with ``with_late``, the
    ``user`` an outer authentication middleware set). None when prodlens is off, the connection
    is not HTTP or websocket, or a scope is already open for it. Never raises."""
    with guard("ASGI request start"):
        if scope.get("type") not in _HTTP_TYPES or scope.get(SCOPE_KEY):
            return None
        return _enter(scope, with_late)
    return None


def _enter(scope: ASGIScope, with_late: bool) -> ScopeToken | None:
    """:func:`enter_request` for an HTTP or websocket scope with no prodlens scope open."""
    with guard("ASGI request start"):
        runtime = _runtime.current()
        if not runtime.on:
            return None
        settings = runtime.settings
        plan = source_plan(settings)
        headers = plan.headers
        key = None
        if headers is not None:
            baggage = headers.asgi_baggage
            key = _early_key(scope, headers.asgi_names, len(headers.names), baggage)
        if headers is not None and key is not None:
            # Header-only sources: the identity is cached by the raw header values (a tuple of
            # bytes and None: hashable).
            identity: Identity | None = resolve_headers(headers, key, ASGIScopeView, scope)
        else:
            identity = resolve_early(ASGIScopeView(scope), settings)
        # Whether baggage is a source or not, a client's prodlens members go no further.
        _strip_inbound_baggage(scope)
        if _otel_context():  # an empty context holds no baggage: the common case, one call
            stripped = strip_current_context()
            if stripped is not None:
                scope[_CONTEXT_KEY] = stripped
        if with_late and plan.late:
            late = resolve_late(ASGIScopeView(scope), settings)
            if late is not None:
                identity = merge(identity, late, settings)
        scope[SCOPE_KEY] = True
        if identity is not None and _otel_context():  # an empty context holds no span
            span = trace.get_current_span()
            if (isinstance(span, Span) and span.is_recording()
                    and span.kind is trace.SpanKind.SERVER):
                # A server span opened outside us (OpenTelemetryMiddleware wrapped around this
                # middleware): tag it as well as every span started inside the request.
                token = open_scope(None)
                apply(identity)
                return token
        return open_scope(identity)
    # Reached only when the block above failed: no exit_request will run for it, detach now.
    if _CONTEXT_KEY in scope:
        _detach_stripped(scope)
    return None


def exit_request(scope: ASGIScope, token: ScopeToken | None) -> None:
    """Close a scope opened by :func:`enter_request`. Never raises."""
    if token is None:
        return
    with guard("ASGI request end"):
        close_scope(token)
        scope.pop(SCOPE_KEY, None)
        scope.pop(LATE_KEY, None)
        if _CONTEXT_KEY in scope:
            _detach_stripped(scope)


def _detach_stripped(scope: ASGIScope) -> None:
    """Detach the context attached without a client's prodlens baggage. Never raises."""
    with guard("ASGI request end"):
        _otel_detach(scope.pop(_CONTEXT_KEY))


def apply_late(scope: ASGIScope) -> None:
    """Resolve ``path:PARAM`` (``scope["path_params"]``) and ``user`` / ``user:ATTR``
    (``scope["user"]``) once the request is routed, and tag the open server span; once per
    request. Never raises."""
    with guard("ASGI late sources"):
        runtime = _runtime.current()
        # Without user/path sources there is nothing to do: one identity check per call.
        if not runtime.on or not source_plan(runtime.settings).late:
            return
        if scope.get(LATE_KEY) or scope.get("type") not in _HTTP_TYPES:
            return
        scope[LATE_KEY] = True
        identity = resolve_late(ASGIScopeView(scope), runtime.settings)
        if identity is not None:
            apply(identity)


async def run_in_scope(app: Any, scope: ASGIScope, receive: Any, send: Any, *,
                       with_late: bool) -> Any:
    """Await ``app(scope, receive, send)`` inside the request's prodlens scope."""
    token = enter_request(scope, with_late=with_late)
    try:
        return await app(scope, receive, send)
    finally:
        exit_request(scope, token)


class ProdlensASGIMiddleware:
    """ASGI middleware: one prodlens scope per HTTP or websocket connection, identity resolved
    from the ASGI scope before the inner application (and its server span) runs.

    Example::

        from prodlens.integrations.asgi import ProdlensASGIMiddleware

        app = ProdlensASGIMiddleware(app)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> Any:
        if scope.get("type") not in _HTTP_TYPES:
            return await self.app(scope, receive, send)
        return await run_in_scope(self.app, scope, receive, send, with_late=True)


def wrap_app_call(wrapped: Any, instance: Any, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> Any:
    """A wrapt wrapper for an ASGI ``__call__(scope, receive, send)``: the call runs inside a
    prodlens scope (opened only if none is open for this connection yet)."""
    if len(args) != 3 or kwargs:  # not the ASGI calling convention: leave it alone
        return wrapped(*args, **kwargs)
    scope = args[0]
    # Nested layers (FastAPI, Starlette, OpenTelemetryMiddleware) pass through on the first
    # test: the outermost one opened the scope.
    if (scope.__class__ is dict or isinstance(scope, MutableMapping)) \
            and SCOPE_KEY not in scope and scope.get("type") in _HTTP_TYPES:
        return run_in_scope(wrapped, scope, args[1], args[2], with_late=False)
    return wrapped(*args)


_ASGI_PARAMETERS: Final = ("self", "scope", "receive", "send")


def asgi_call(original: Any) -> Any:
    """A plain ``async def __call__(self, scope, receive, send)`` doing what
    :func:`wrap_app_call` does around ``original``, for :func:`_patching.replace`; None when
    ``original`` is not such a coroutine function (then the wrapt wrapper is used)."""
    if not _patching.has_parameters(original, _ASGI_PARAMETERS) \
            or not inspect.iscoroutinefunction(original):
        return None

    @functools.wraps(original)
    async def __call__(self: Any, scope: Any, receive: Any, send: Any) -> Any:
        # Nested layers (FastAPI, Starlette, OpenTelemetryMiddleware) pass through on the
        # first test: the outermost one opened the scope.
        if (scope.__class__ is dict or isinstance(scope, MutableMapping)) \
                and SCOPE_KEY not in scope and scope.get("type") in _HTTP_TYPES:
            token = _enter(scope, False)
            try:
                return await original(self, scope, receive, send)
            finally:
                exit_request(scope, token)
        return await original(self, scope, receive, send)

    return __call__


def patch(module: ModuleType) -> None:
    """Patch ``OpenTelemetryMiddleware.__call__`` so a prodlens scope opens just outside the
    server span of any ASGI application it traces (idempotent)."""
    middleware = getattr(module, "OpenTelemetryMiddleware", None)
    if middleware is not None and "__call__" in vars(middleware):
        _patching.replace(middleware, "__call__", asgi_call, wrap_app_call)
