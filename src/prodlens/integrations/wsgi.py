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

import contextvars
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, Final

from prodlens import _runtime
from prodlens._safety import internal_error
from prodlens.identity import Scope, close_scope, merge, open_scope
from prodlens.integrations._sources import (
    cookie_value,
    needs_late,
    query_value,
    resolve_early,
    resolve_late,
    strip_prodlens_members,
    uses_baggage,
)

__all__ = ["EnvironView", "ProdlensMiddleware", "enter_request", "exit_request"]

Environ = MutableMapping[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

#: Set in the environ while a prodlens scope is open for it, so nested wrappers open one only.
ENVIRON_KEY: Final = "prodlens.scope"

_SPECIAL_HEADERS: Final = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}
#: Header name -> environ key, computed once per name (names come from the settings: bounded).
_ENVIRON_KEYS: dict[str, str] = {}


def environ_key(name: str) -> str:
    """The WSGI environ key of header ``name`` (lower-case), e.g. ``HTTP_X_CUSTOMER_ID``."""
    key = _ENVIRON_KEYS.get(name)
    if key is None:
        key = _SPECIAL_HEADERS.get(name) or "HTTP_" + name.upper().replace("-", "_")
        if len(_ENVIRON_KEYS) < 1024:
            _ENVIRON_KEYS[name] = key
    return key


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


class EnvironView:
    """A :class:`~prodlens.integrations._sources.RequestView` over a WSGI environ."""

    __slots__ = ("environ",)

    def __init__(self, environ: Environ) -> None:
        self.environ = environ

    def header(self, name: str) -> str | None:
        value = self.environ.get(_ENVIRON_KEYS.get(name) or environ_key(name))
        if value.__class__ is str and value.isascii():  # the common case, without a call
            return value
        return _wsgi_text(value)

    def cookie(self, name: str) -> str | None:
        return cookie_value(_wsgi_text(self.environ.get("HTTP_COOKIE")), name)

    def query(self, name: str) -> str | None:
        return query_value(_wsgi_text(self.environ.get("QUERY_STRING")), name)

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
) -> contextvars.Token[Scope | None] | None:
    """Open the request's scope with its early identity; None when prodlens is off or a scope is
    already open for this environ. Strips prodlens members from inbound baggage once read.
    Never raises."""
    try:
        runtime = _runtime.current()
        if not runtime.on or ENVIRON_KEY in environ:
            return None
        settings = runtime.settings
        view = EnvironView(environ)
        identity = resolve_early(view, settings)
        if with_remote_user and needs_late(settings):
            late = resolve_late(view, settings)
            if late is not None:
                identity = merge(identity, late)
        if "HTTP_BAGGAGE" in environ and uses_baggage(settings):
            header = environ.get("HTTP_BAGGAGE")
            if isinstance(header, str) and "prodlens." in header:
                # Read once; OpenTelemetry's propagator must not pass it on to every destination.
                environ["HTTP_BAGGAGE"] = strip_prodlens_members(header)
        environ[ENVIRON_KEY] = True
        return open_scope(identity, isolate_ancestors=False)
    except Exception as error:
        internal_error("WSGI request start", error)
        return None


def exit_request(environ: Environ, token: contextvars.Token[Scope | None] | None) -> None:
    """Close a scope opened by :func:`enter_request`. Never raises."""
    if token is None:
        return
    try:
        close_scope(token)
        environ.pop(ENVIRON_KEY, None)
    except Exception as error:
        internal_error("WSGI request end", error)


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
