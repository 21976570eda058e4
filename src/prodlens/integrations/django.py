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

Under ASGI (``get_response_async``) the hook runs in the event loop, where touching the lazy
``request.user`` raises Django's ``SynchronousOnlyOperation``: there the user is loaded with
``await request.auser()`` (Django >= 5, ``AuthenticationMiddleware``), else in a worker thread,
and only when a ``user`` source is configured. A ``user:ATTR`` that needs another query (a related
model) is not read in async views; identify from the view instead.

Authentication inside the view (Django REST framework) is invisible to ``user``: call
``prodlens.identify(request.user.pk)`` in the view. Handlers created before instrumentation get
the early sources only. Environment variables::

    export DJANGO_SETTINGS_MODULE=mysite.settings
    export PRODLENS_CUSTOMER_FROM=user
    export PRODLENS_COHORT_TENANT_FROM=path:tenant
    opentelemetry-instrument python manage.py runserver --noreload
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Final

from prodlens import _runtime
from prodlens._safety import guard
from prodlens._scope import apply
from prodlens.integrations import _patching
from prodlens.integrations._plan import needs_late, source_plan
from prodlens.integrations._sources import resolve_late
from prodlens.integrations.wsgi import EnvironView, enter_request, exit_request

__all__ = ["TARGET", "DjangoView", "patch"]

TARGET: Final = "django.core.handlers.base"
#: DjangoView's "read ``request.user`` yourself" (None is a loaded "no user").
_UNLOADED: Final[Any] = object()


class DjangoView(EnvironView):
    """A request view over a Django ``HttpRequest``: its ``META`` is the WSGI environ (read as
    the WSGI integration reads it), plus URL kwargs and ``request.user`` once resolved."""

    __slots__ = ("kwargs", "loaded_user", "request")

    def __init__(self, request: Any, kwargs: Any = None, loaded_user: Any = _UNLOADED) -> None:
        super().__init__(getattr(request, "META", {}))
        self.request = request
        self.kwargs = kwargs
        #: The user loaded ahead (async handler), else ``request.user`` is read.
        self.loaded_user = loaded_user

    def path_param(self, name: str) -> object | None:
        return self.kwargs.get(name) if isinstance(self.kwargs, dict) else None

    def user(self, attr: str) -> object | None:
        user = self.loaded_user
        if user is _UNLOADED:
            user = getattr(self.request, "user", None)
        if user is None or not getattr(user, "is_authenticated", False):
            return None
        value: object = getattr(user, attr or "pk", None)
        return value


def _meta(request: Any) -> Any:
    meta = getattr(request, "META", None)
    return meta if isinstance(meta, dict) else None


def _request_arg(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return args[0] if args else kwargs.get("request")


def _get_response(wrapped: Any, instance: Any, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> Any:
    # request.META is the WSGI environ: the WSGI integration's request scope serves as it is.
    meta = _meta(_request_arg(args, kwargs))
    if meta is None:
        return wrapped(*args, **kwargs)
    token = enter_request(meta, with_remote_user=False)
    try:
        return wrapped(*args, **kwargs)
    finally:
        exit_request(meta, token)


async def _get_response_async(wrapped: Any, instance: Any, args: tuple[Any, ...],
                              kwargs: dict[str, Any]) -> Any:
    meta = _meta(_request_arg(args, kwargs))
    if meta is None:
        return await wrapped(*args, **kwargs)
    token = enter_request(meta, with_remote_user=False)
    try:
        return await wrapped(*args, **kwargs)
    finally:
        exit_request(meta, token)


def _late(request: Any, view_kwargs: Any, loaded_user: Any = _UNLOADED) -> None:
    with guard("Django late sources"):
        runtime = _runtime.current()
        if runtime.on and needs_late(runtime.settings):
            identity = resolve_late(DjangoView(request, view_kwargs, loaded_user),
                                    runtime.settings)
            if identity is not None:
                apply(identity)


def process_view(request: Any, view_func: Any, view_args: Any, view_kwargs: Any) -> None:
    """Resolve ``user`` and ``path`` sources after every other middleware's process_view."""
    _late(request, view_kwargs)


def _user_in_thread(request: Any) -> Any:
    """``request.user``, loaded (its lazy object evaluated) off the event loop."""
    user = getattr(request, "user", None)
    if user is not None:
        getattr(user, "is_authenticated", None)  # runs the session and user queries here
    return user


async def _load_user(request: Any) -> Any:
    """The request's user, loaded without a synchronous query in the event loop."""
    auser = getattr(request, "auser", None)
    if callable(auser):  # Django >= 5 with AuthenticationMiddleware
        return await auser()
    from asgiref.sync import sync_to_async

    return await sync_to_async(_user_in_thread)(request)


async def process_view_async(request: Any, view_func: Any, view_args: Any,
                             view_kwargs: Any) -> None:
    """The async handler's twin of :func:`process_view`: the user is loaded first (in the
    event loop ``request.user`` raises ``SynchronousOnlyOperation``)."""
    loaded: Any = _UNLOADED
    with guard("Django user (async)"):
        runtime = _runtime.current()
        if runtime.on and source_plan(runtime.settings).user:
            loaded = None  # if loading fails: no user, and path sources still resolve
            loaded = await _load_user(request)
    _late(request, view_kwargs, loaded)


def _load_middleware(wrapped: Any, instance: Any, args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> Any:
    result = wrapped(*args, **kwargs)
    with guard("Django middleware set-up"):
        is_async = bool(kwargs.get("is_async", args[0] if args else False))
        hooks = getattr(instance, "_view_middleware", None)
        if isinstance(hooks, list):
            hooks.append(process_view_async if is_async else process_view)
    return result


def patch(module: ModuleType) -> None:
    """Patch ``BaseHandler`` (idempotent)."""
    handler = module.BaseHandler
    _patching.wrap(handler, "get_response", _get_response)
    _patching.wrap(handler, "get_response_async", _get_response_async)
    _patching.wrap(handler, "load_middleware", _load_middleware)
