"""``ProdlensInstrumentor``: zero-code set-up under ``opentelemetry-instrument``.

Registered as the ``prodlens`` entry point of ``opentelemetry_instrumentor``, so this is all a
service needs (with ``opentelemetry-distro`` and an exporter installed)::

    export OTEL_SERVICE_NAME=shop
    export OTEL_TRACES_EXPORTER=otlp
    export PRODLENS_CUSTOMER_FROM=jwt:sub,header:x-customer-id
    export PRODLENS_COHORT_PLAN_FROM=jwt:plan
    opentelemetry-instrument python app.py

``_instrument`` reads the ``PRODLENS_*`` settings, attaches the prodlens span processor to the
tracer provider (``tracer_provider=`` or the global SDK provider) and patches every supported
framework through wrapt post-import hooks, whether it is imported before or after prodlens.
It never raises. As OpenTelemetry's SDK treats its own variables, every invalid value is logged
(each once, naming the variable, the value and what is accepted) and that setting keeps its
default while the rest of prodlens stays active; unknown ``PRODLENS_*`` variables are logged
with the closest valid name. ``_uninstrument`` removes every patch and makes the processor inert
(the SDK cannot detach a processor). Disable it with
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=prodlens``, or one integration with, e.g.,
``PRODLENS_DISABLED_INTEGRATIONS=celery,openfeature``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Collection, Mapping
from types import ModuleType
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.sdk.trace import TracerProvider

from prodlens import _configure, _runtime
from prodlens._safety import guard, internal_error, log_once, logger
from prodlens.config import INTEGRATION_NAMES, read_environment
from prodlens.integrations import _patching

__all__ = ["INTEGRATIONS", "ProdlensInstrumentor"]

#: Every integration module, in patching order. Each exposes ``TARGET`` and ``patch(module)``,
#: or ``PATCHES``, a sequence of (target module, patch function). Missing modules are skipped.
INTEGRATIONS: Final = tuple(f"prodlens.integrations.{name}" for name in INTEGRATION_NAMES)

Patch = Callable[[ModuleType], None]


def _targets(module: ModuleType) -> list[tuple[str, Patch]]:
    patches = getattr(module, "PATCHES", None)
    if patches is not None:
        return [(str(target), hook) for target, hook in patches]
    target, hook = getattr(module, "TARGET", None), getattr(module, "patch", None)
    if isinstance(target, str) and callable(hook):
        return [(target, hook)]
    return []


def _register(name: str) -> None:
    """Register the post-import patches of integration module ``name``; a missing or broken
    integration is skipped (logged) and never stops the others."""
    try:
        module = importlib.import_module(name)
    except ImportError as error:
        logger.debug("prodlens: integration %s is not available (%s)", name, error)
        return
    except Exception as error:
        internal_error(f"loading {name}", error)
        return
    for target, hook in _targets(module):
        with guard(f"registering {name}"):
            _patching.on_import(target, hook)


def _attach_later(wrapped: Any, instance: Any, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> Any:
    """After the app sets the global provider itself, attach prodlens to it."""
    result = wrapped(*args, **kwargs)
    with guard("attaching to the tracer provider"):
        provider = args[0] if args else kwargs.get("tracer_provider")
        runtime = _runtime.current()
        if runtime.on and isinstance(provider, TracerProvider):
            _configure.attach(provider, runtime.settings)
    return result


class ProdlensInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Tags every span with the customer and cohorts, from configuration alone.

    ``instrument()`` accepts ``tracer_provider=`` (default: the global SDK provider) and
    ``environ=`` (read settings from this mapping instead of ``os.environ``; without it, settings
    an application already gave ``prodlens.configure()`` are kept).

    Example::

        from opentelemetry.sdk.trace import TracerProvider
        from prodlens.instrumentor import ProdlensInstrumentor

        provider = TracerProvider()
        ProdlensInstrumentor().instrument(tracer_provider=provider)
        ...
        ProdlensInstrumentor().uninstrument()
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        # No ``instruments`` extra: each integration checks its framework's presence itself.
        return []

    def _instrument(self, **kwargs: Any) -> None:
        with guard("ProdlensInstrumentor.instrument"):  # the other instrumentors still load
            self._install(kwargs.get("tracer_provider"), kwargs.get("environ"))

    def _install(self, provider: object, environ: Mapping[str, str] | None) -> None:
        runtime = _runtime.current()
        if environ is not None or not runtime.configured:
            settings, problems = read_environment(environ)
            for problem in problems:
                log_once(f"config:{problem.variable}", logging.WARNING,
                         "prodlens: %s%s", problem,
                         "" if problem.unknown else "; the default is used")
            if any(p.variable.startswith("PRODLENS_PSEUDONYM") for p in problems):
                log_once("config:off", logging.ERROR,
                         "prodlens: pseudonymisation is configured but cannot be done; prodlens "
                         "is not active and the application runs untagged.")
            _runtime.install(settings)
        _runtime.set_active(True)
        settings = _runtime.current().settings
        if not settings.enabled:
            logger.debug("prodlens: PRODLENS_ENABLED=false; nothing is patched")
            return
        if provider is None:
            provider = trace.get_tracer_provider()
            if not isinstance(provider, TracerProvider):
                # No SDK yet (no configurator ran): attach when the app sets one.
                _patching.on_import("opentelemetry.trace", self._hook_set_provider)
        _configure.attach(provider, settings)
        for name in INTEGRATION_NAMES:
            if name in settings.disabled_integrations:
                logger.debug("prodlens: integration %s disabled by "
                             "PRODLENS_DISABLED_INTEGRATIONS", name)
                continue
            _register(f"prodlens.integrations.{name}")

    @staticmethod
    def _hook_set_provider(module: ModuleType) -> None:
        _patching.wrap(module, "set_tracer_provider", _attach_later)

    def _uninstrument(self, **kwargs: Any) -> None:
        with guard("ProdlensInstrumentor.uninstrument"):
            _patching.unpatch_all()
            _runtime.set_active(False)
