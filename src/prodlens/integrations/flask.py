"""Flask: every request gets a prodlens scope, with no code change.

``ProdlensInstrumentor`` patches ``flask.Flask.__call__`` (outside the Flask OpenTelemetry
instrumentation, which opens the server span in a ``before_request`` hook), so early sources
(header, cookie, query, jwt, baggage) are resolved before the server span starts, and, while
``user`` or ``path`` sources are configured, ``Flask.dispatch_request``, where routing and
``before_request`` hooks have run: there
``path:PARAM`` (``request.view_args``) and ``user`` / ``user:ATTR`` (Flask-Login's
``current_user`` when installed, default ``get_id()``; else the server's ``REMOTE_USER``) are
resolved and tag the open server span. Spans that ended before the view (e.g. queries in
``before_request`` hooks) carry only the early identity. Environment variables::

    export OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=   # keep the flask instrumentation on
    export PRODLENS_CUSTOMER_FROM=user,jwt:sub
    export PRODLENS_COHORT_TENANT_FROM=path:tenant
    opentelemetry-instrument flask run
"""

from __future__ import annotations

import functools
import sys
from types import ModuleType
from typing import Any, Final

from prodlens import _runtime
from prodlens._safety import guard
from prodlens._scope import apply
from prodlens.integrations import _patching
from prodlens.integrations._plan import late_sources_configured, source_plan
from prodlens.integrations._sources import resolve_late
from prodlens.integrations.wsgi import EnvironView, enter_request, exit_request

__all__ = ["TARGET", "FlaskView", "patch"]

TARGET: Final = "flask"


class FlaskView(EnvironView):
    """A request view over the current Flask request (after routing)."""

    __slots__ = ("view_args",)

    def __init__(self, environ: Any, view_args: Any) -> None:
        super().__init__(environ)
        self.view_args = view_args

    def path_param(self, name: str) -> object | None:
        args = self.view_args
        return args.get(name) if isinstance(args, dict) else None

    def user(self, attr: str) -> object | None:
        flask_login = sys.modules.get("flask_login")
        if flask_login is None:
            return super().user(attr)
        import flask

        if getattr(flask.current_app, "login_manager", None) is None:
            return super().user(attr)
        user = flask_login.current_user
        if not getattr(user, "is_authenticated", False):
            return None
        value: object = user.get_id() if not attr else getattr(user, attr, None)
        return value


def _call(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    environ = args[0] if args else kwargs.get("environ")
    if not isinstance(environ, dict):
        return wrapped(*args, **kwargs)
    token = enter_request(environ, with_remote_user=False)
    try:
        return wrapped(*args, **kwargs)
    finally:
        exit_request(environ, token)


def _flask_call(original: Any) -> Any:
    """A plain ``__call__(self, environ, start_response)`` doing what :func:`_call` does
    around ``original`` (see :func:`_patching.replace`); None for an unexpected original."""
    if not _patching.has_parameters(original, ("self", "environ", "start_response")):
        return None

    @functools.wraps(original)
    def __call__(self: Any, environ: Any, start_response: Any) -> Any:
        if environ.__class__ is not dict and not isinstance(environ, dict):
            return original(self, environ, start_response)
        token = enter_request(environ, with_remote_user=False)
        try:
            return original(self, environ, start_response)
        finally:
            exit_request(environ, token)

    return __call__


def _dispatch(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    with guard("Flask late sources"):
        runtime = _runtime.current()
        # Without user/path sources there is nothing to do here: one identity check.
        if runtime.on and source_plan(runtime.settings).late:
            import flask

            request = flask.request
            identity = resolve_late(FlaskView(request.environ, request.view_args),
                                    runtime.settings)
            if identity is not None:
                apply(identity)
    return wrapped(*args, **kwargs)


def patch(module: ModuleType) -> None:
    """Patch ``flask.Flask`` (idempotent)."""
    # The class defined in flask.app: the Flask instrumentation's instrument() replaces the name
    # ``flask.Flask`` by a subclass, which inherits the patched methods.
    import flask.app

    flask_class = flask.app.Flask
    _patching.replace(flask_class, "__call__", _flask_call, _call)
    # Only while user/path sources are configured: otherwise a request pays for no wrapper.
    _patching.wrap_while(flask_class, "dispatch_request", _dispatch, late_sources_configured)
