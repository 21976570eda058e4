"""Django: a prodlens scope per request, inserted automatically.

``ProdlensInstrumentor`` patches ``django.core.handlers.base.BaseHandler``:

- ``get_response`` / ``get_response_async`` open the request's scope and resolve the early
  sources (header, cookie, query, jwt, baggage) *before* the middleware chain runs, so before the
  Django OpenTelemetry middleware (first in the chain) opens the server span;
- ``load_middleware`` appends a ``process_view`` hook after every other middleware's: by then all
  authentication middleware has run (a late ``RemoteUserMiddleware`` counts), so ``user`` /
  ``user:ATTR`` (``request.user`` when authenticated; default attribute ``pk``) and ``path:PARAM``
  (URL kwargs) resolve there and tag the open server span. Spans that ended before it (the
  session and user queries of the authentication middleware) carry only the early identity.

Authentication inside the view (Django REST framework) is invisible to ``user``: call
``prodlens.identify(request.user.pk)`` in the view. Handlers created before instrumentation get
the early sources only. Environment variables::

    export DJANGO_SETTINGS_MODULE=mysite.settings
    export PRODLENS_CUSTOMER_FROM=user
    export PRODLENS_COHORT_TENANT_FROM=path:tenant
    opentelemetry-instrument python manage.py runserver --noreload
"""

from __future__ import annotations

import contextvars
from types import ModuleType
from typing import Any, Final

from prodlens import _runtime
from prodlens._safety import internal_error
from prodlens.identity import Scope, apply, close_scope, open_scope
from prodlens.integrations import _patching
from prodlens.integrations._sources import (
    cookie_value,
    needs_late,
    query_value,
    resolve_early,
    resolve_late,
    strip_prodlens_members,
    uses_baggage,
)

__all__ = ["TARGET", "DjangoView", "patch"]

TARGET: Final = "django.core.handlers.base"

_SPECIAL_HEADERS: Final = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}
_MARK: Final = "_prodlens_scope"


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


class DjangoView:
    """A request view over a Django ``HttpRequest`` (URL kwargs once the view is resolved)."""

    __slots__ = ("kwargs", "meta", "request")

    def __init__(self, request: Any, kwargs: Any = None) -> None:
        self.request = request
        self.meta = getattr(request, "META", {})
        self.kwargs = kwargs

    def header(self, name: str) -> str | None:
        key = _SPECIAL_HEADERS.get(name) or "HTTP_" + name.upper().replace("-", "_")
        return _text(self.meta.get(key))

    def cookie(self, name: str) -> str | None:
        # Not request.COOKIES: that parses every cookie, unbounded.
        return cookie_value(_text(self.meta.get("HTTP_COOKIE")), name)

    def query(self, name: str) -> str | None:
        return query_value(_text(self.meta.get("QUERY_STRING")), name)

    def path_param(self, name: str) -> object | None:
        return self.kwargs.get(name) if isinstance(self.kwargs, dict) else None

    def user(self, attr: str) -> object | None:
        user = getattr(self.request, "user", None)
        if user is None or not getattr(user, "is_authenticated", False):
            return None
        value: object = getattr(user, attr or "pk", None)
        return value

    def baggage(self) -> str | None:
        return _text(self.meta.get("HTTP_BAGGAGE"))


def _enter(request: Any) -> contextvars.Token[Scope | None] | None:
    try:
        runtime = _runtime.current()
        if not runtime.enabled or getattr(request, _MARK, False):
            return None
        settings = runtime.settings
        identity = resolve_early(DjangoView(request), settings)
        if uses_baggage(settings):
            meta = request.META
            header = meta.get("HTTP_BAGGAGE")
            if isinstance(header, str) and "prodlens." in header:
                meta["HTTP_BAGGAGE"] = strip_prodlens_members(header)
        setattr(request, _MARK, True)
        return open_scope(identity, isolate_ancestors=False)
    except Exception as error:
        internal_error("Django request start", error)
        return None


def _exit(token: contextvars.Token[Scope | None] | None) -> None:
    if token is not None:
        try:
            close_scope(token)
        except Exception as error:
            internal_error("Django request end", error)


def _request_arg(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return args[0] if args else kwargs.get("request")


def _get_response(wrapped: Any, instance: Any, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> Any:
    token = _enter(_request_arg(args, kwargs))
    try:
        return wrapped(*args, **kwargs)
    finally:
        _exit(token)


async def _get_response_async(wrapped: Any, instance: Any, args: tuple[Any, ...],
                              kwargs: dict[str, Any]) -> Any:
    token = _enter(_request_arg(args, kwargs))
    try:
        return await wrapped(*args, **kwargs)
    finally:
        _exit(token)


def _late(request: Any, view_kwargs: Any) -> None:
    try:
        runtime = _runtime.current()
        if runtime.enabled and needs_late(runtime.settings):
            identity = resolve_late(DjangoView(request, view_kwargs), runtime.settings)
            if identity is not None:
                apply(identity)
    except Exception as error:
        internal_error("Django late sources", error)


def process_view(request: Any, view_func: Any, view_args: Any, view_kwargs: Any) -> None:
    """Resolve ``user`` and ``path`` sources after every other middleware's process_view."""
    _late(request, view_kwargs)


async def process_view_async(request: Any, view_func: Any, view_args: Any,
                             view_kwargs: Any) -> None:
    """The async handler's twin of :func:`process_view`."""
    _late(request, view_kwargs)


def _load_middleware(wrapped: Any, instance: Any, args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> Any:
    result = wrapped(*args, **kwargs)
    try:
        is_async = bool(kwargs.get("is_async", args[0] if args else False))
        hooks = getattr(instance, "_view_middleware", None)
        if isinstance(hooks, list):
            hooks.append(process_view_async if is_async else process_view)
    except Exception as error:
        internal_error("Django middleware set-up", error)
    return result


def patch(module: ModuleType) -> None:
    """Patch ``BaseHandler`` (idempotent)."""
    handler = module.BaseHandler
    _patching.wrap(handler, "get_response", _get_response)
    _patching.wrap(handler, "get_response_async", _get_response_async)
    _patching.wrap(handler, "load_middleware", _load_middleware)
