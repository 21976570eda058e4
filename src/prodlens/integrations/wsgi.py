"""Generic WSGI: a per-request prodlens scope for any WSGI application.

Wrap the application *outside* OpenTelemetry's ``OpenTelemetryMiddleware``, so the identity is
resolved before the server span opens (a sampler then sees it at root start, and the span is
stamped when it starts)::

    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
    from prodlens.integrations.wsgi import ProdlensMiddleware

    application = ProdlensMiddleware(OpenTelemetryMiddleware(application))

Flask and Django need no wrapping: ``ProdlensInstrumentor`` patches them. Sources available here
are the early ones (header, cookie, query, jwt, baggage) and ``user`` (the server's
``REMOTE_USER``); ``path:PARAM`` needs a framework that routes. Environment variables::

    export PRODLENS_CUSTOMER_FROM=jwt:sub,header:x-customer-id
    export PRODLENS_COHORT_PLAN_FROM=header:x-plan

Spans started while the server iterates a streamed response body, after the application
returned, are not tagged (the scope ends when the application returns).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, Final

from opentelemetry.context import detach as _otel_detach
from opentelemetry.context import get_current as _otel_context

from prodlens import _runtime
from prodlens._safety import guard
from prodlens._scope import ScopeToken, close_scope, open_scope
from prodlens.baggage import may_hold_prodlens, strip_current_context, strip_members
from prodlens.identity import merge
from prodlens.integrations._plan import source_plan
from prodlens.integrations._readers import (
    MAX_COOKIE_CHARS,
    MAX_QUERY_CHARS,
    cookie_value,
    environ_key,
    query_value,
)
from prodlens.integrations._sources import resolve_early, resolve_headers, resolve_late

__all__ = ["EnvironView", "ProdlensMiddleware", "enter_request", "environ_key", "exit_request"]

Environ = MutableMapping[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

#: Set in the environ while a prodlens scope is open for it, so nested wrappers open one only.
ENVIRON_KEY: Final = "prodlens.scope"
#: The token of a context attached without a client's prodlens baggage, detached at the end.
_CONTEXT_KEY: Final = "prodlens.context"

def _wsgi_text(value: object) -> str | None:
    """A WSGI header value (latin-1 "bytes as str" per PEP 3333) read as UTF-8 where possible."""
    if not isinstance(value, str):
        return None
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:  # already real text (some servers)
        return value


def _head(value: object, limit: int) -> object:
    """The first ``limit`` bytes of a WSGI value (PEP 3333: one latin-1 character per byte),
    cut before it is decoded, so a huge header costs no more than its first ``limit`` bytes."""
    return value[:limit] if isinstance(value, str) else value


class EnvironView:
    """A :class:`~prodlens.integrations._sources.RequestView` over a WSGI environ."""

    __slots__ = ("environ",)

    def __init__(self, environ: Environ) -> None:
        self.environ = environ

    def header(self, name: str) -> str | None:
        value = self.environ.get(environ_key(name))
        if value.__class__ is str and value.isascii():  # the common case, without a call
            return value
        return _wsgi_text(value)

    def cookie(self, name: str) -> str | None:
        return cookie_value(_wsgi_text(_head(self.environ.get("HTTP_COOKIE"),
                                             MAX_COOKIE_CHARS)), name)

    def query(self, name: str) -> str | None:
        return query_value(_wsgi_text(_head(self.environ.get("QUERY_STRING"),
                                            MAX_QUERY_CHARS)), name)

    def path_param(self, name: str) -> object | None:
        return None

    def user(self, attr: str) -> object | None:
        # The server's authenticated user name; it has no further attributes.
        return None if attr else _wsgi_text(self.environ.get("REMOTE_USER"))

    def baggage(self) -> str | None:
        value = self.environ.get("HTTP_BAGGAGE")
        return value if isinstance(value, str) else None


def enter_request(
    environ: Environ, *, with_remote_user: bool
) -> ScopeToken | None:
    """Open the request's scope with its early identity; None when prodlens is off or a scope is
    already open for this environ. Strips prodlens members from inbound baggage once read.
    Never raises."""
    with guard("WSGI request start"):
        runtime = _runtime.current()
        if not runtime.on or ENVIRON_KEY in environ:
            return None
        settings = runtime.settings
        plan = source_plan(settings)
        headers = plan.headers
        if headers is not None:
            # Header-only sources: the identity is cached by the raw environ values.
            identity = resolve_headers(headers, tuple(map(environ.get, headers.environ_keys)),
                                       EnvironView, environ)
        else:
            identity = resolve_early(EnvironView(environ), settings)
        if with_remote_user and plan.late:
            late = resolve_late(EnvironView(environ), settings)
            if late is not None:
                identity = merge(identity, late, settings)
        header = environ.get("HTTP_BAGGAGE")
        if header.__class__ is str and header and may_hold_prodlens(header):
            # Whether read as a source or not, prodlens members a client sent go no further:
            # OpenTelemetry's propagator would put them in the context, and from there into
            # every outgoing request and message.
            environ["HTTP_BAGGAGE"] = strip_members(header)
        if _otel_context():  # an empty context holds no baggage: the common case, one call
            stripped = strip_current_context()
            if stripped is not None:
                environ[_CONTEXT_KEY] = stripped
        environ[ENVIRON_KEY] = True
        return open_scope(identity)
    # Reached only when the block above failed: no exit_request will run for it, detach now.
    with guard("WSGI request start"):
        _detach_stripped(environ)
    return None


def exit_request(environ: Environ, token: ScopeToken | None) -> None:
    """Close a scope opened by :func:`enter_request`. Never raises."""
    if token is None:
        return
    with guard("WSGI request end"):
        close_scope(token)
        environ.pop(ENVIRON_KEY, None)
        _detach_stripped(environ)


def _detach_stripped(environ: Environ) -> None:
    """Detach the context attached without a client's prodlens baggage, if any."""
    stripped = environ.pop(_CONTEXT_KEY, None)
    if stripped is not None:
        _otel_detach(stripped)


class ProdlensMiddleware:
    """WSGI middleware: one prodlens scope per request, identity resolved before the inner app.

    Example::

        from prodlens.integrations.wsgi import ProdlensMiddleware

        application = ProdlensMiddleware(application)
    """

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        token = enter_request(environ, with_remote_user=True)
        try:
            return self.app(environ, start_response)
        finally:
            exit_request(environ, token)
