"""Starlette and FastAPI: every request gets a prodlens scope, with no code change.

``ProdlensInstrumentor`` patches:

- ``Starlette.__call__`` and ``FastAPI.__call__``: the scope opens *outside* the middleware
  stack, so outside OpenTelemetry's ``OpenTelemetryMiddleware`` that the FastAPI
  instrumentation puts around it (and outside FastAPI's own telemetry): early sources (header,
  cookie, query, jwt, baggage) are resolved before the server span starts, and it is stamped.
- ``Route.handle`` / ``WebSocketRoute.handle`` (and FastAPI's ``APIRoute.handle``), which run
  once the request is routed and every middleware ran: ``path:PARAM`` (``path_params``) and
  ``user`` / ``user:ATTR`` (``request.user`` set by Starlette's ``AuthenticationMiddleware``,
  when ``is_authenticated``; a bare ``user`` reads ``user.identity``, else ``display_name``)
  are resolved there and tag the open server span and every later span of the request.

Spans that end before routing (a middleware's own queries, the ``http receive`` span of a
request body read by a middleware) carry only the early identity. Authentication done inside
the endpoint (FastAPI ``Depends``) is invisible to the ``user`` source: call
``prodlens.identify(user.id)`` there. Environment variables::

    export PRODLENS_CUSTOMER_FROM=user,jwt:sub
    export PRODLENS_COHORT_PLAN_FROM=header:x-plan
    export PRODLENS_COHORT_TENANT_FROM=path:tenant
    opentelemetry-instrument uvicorn app:app
"""

from __future__ import annotations

import sys
from collections.abc import MutableMapping
from types import ModuleType
from typing import Any, Final

from prodlens import _runtime
from prodlens._safety import guard
from prodlens.integrations import _patching
from prodlens.integrations._plan import late_sources_configured, source_plan
from prodlens.integrations.asgi import apply_late, asgi_call, wrap_app_call

__all__ = ["PATCHES", "TARGET", "patch", "patch_fastapi"]

TARGET: Final = "starlette"


def _handle(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Route.handle(scope, receive, send): the request is routed, middleware has run."""
    late = False
    with guard("Starlette late sources"):
        runtime = _runtime.current()
        # Without user/path sources there is nothing to do here: one identity check.
        late = runtime.on and source_plan(runtime.settings).late
    if late:
        scope = args[0] if args else kwargs.get("scope")
        if scope.__class__ is dict or isinstance(scope, MutableMapping):
            apply_late(scope)  # never raises
    return wrapped(*args, **kwargs)


def _wrap_call(owner: Any) -> None:
    """Patch ``owner.__call__`` only where ``owner`` itself defines it (not inherited)."""
    if owner is not None and "__call__" in vars(owner):
        _patching.replace(owner, "__call__", asgi_call, wrap_app_call)


def _wrap_handle(owner: Any) -> None:
    """Wrap ``owner.handle`` (where defined) while user/path sources are configured: otherwise
    a request pays for no wrapper."""
    if owner is not None and "handle" in vars(owner):
        _patching.wrap_while(owner, "handle", _handle, late_sources_configured)


def patch(module: ModuleType) -> None:
    """Patch Starlette (idempotent); FastAPI too if it is already imported."""
    import starlette.applications
    import starlette.routing

    _wrap_call(starlette.applications.Starlette)
    _wrap_handle(starlette.routing.Route)
    _wrap_handle(starlette.routing.WebSocketRoute)
    fastapi = sys.modules.get("fastapi")
    # Only a fully imported FastAPI: this hook may run while ``import fastapi`` is importing
    # Starlette; the ``fastapi`` hook below patches it once its import completes.
    if fastapi is not None and hasattr(fastapi, "FastAPI") and hasattr(fastapi, "APIRouter"):
        patch_fastapi(fastapi)


def patch_fastapi(module: ModuleType) -> None:
    """Patch FastAPI's own ``__call__`` (its native telemetry opens a span there, before
    Starlette's) and ``APIRoute.handle`` (included routers bypass ``Route.handle``)."""
    import fastapi.applications
    import fastapi.routing

    _wrap_call(fastapi.applications.FastAPI)
    _wrap_handle(fastapi.routing.APIRoute)
    _wrap_handle(getattr(fastapi.routing, "APIWebSocketRoute", None))


#: (module whose import triggers patching, patch function), for ``ProdlensInstrumentor``.
PATCHES: Final = ((TARGET, patch), ("fastapi", patch_fastapi))
