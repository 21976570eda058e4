"""``prodlens.configure()``: settings from the environment, overridden by typed arguments, and
prodlens's span processors attached once per SDK tracer provider.

:func:`attach` builds every processor explicitly: the tagging processor, then (while
``PRODLENS_METRICS`` is on) the cohort-metrics processor, imported only then, so that importing
``prodlens`` never loads ``prodlens.signals``.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Mapping, Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from prodlens import _runtime
from prodlens._safety import log_once
from prodlens.config import Settings, load_settings
from prodlens.processor import ProdlensSpanProcessor

__all__ = ["attach", "configure"]

_configured: weakref.WeakSet[TracerProvider] = weakref.WeakSet()
_lock = threading.Lock()


NO_SDK_MESSAGE = (
    "prodlens: the global tracer provider is OpenTelemetry's no-op proxy, so no span will be "
    "tagged. Run under `opentelemetry-instrument` with opentelemetry-distro and an exporter "
    "installed (pip install opentelemetry-distro opentelemetry-exporter-otlp), or create an SDK "
    "TracerProvider and pass it: prodlens.configure(provider)."
)


def attach(provider: object, settings: Settings) -> bool:
    """Attach prodlens's processors to ``provider`` once; False (warned once) if it is no SDK
    provider."""
    if not isinstance(provider, TracerProvider):
        log_once("no-sdk-provider", logging.WARNING, NO_SDK_MESSAGE)
        return False
    with _lock:
        if provider in _configured:
            return True
        for processor in _processors(settings):
            provider.add_span_processor(processor)
        _configured.add(provider)
    _runtime.note_attached()
    return True


def _processors(settings: Settings) -> list[SpanProcessor]:
    """The processors a provider gets under ``settings``, in order."""
    processors: list[SpanProcessor] = [ProdlensSpanProcessor()]
    if settings.metrics:
        # Imported only when wanted: the signals code (and its metrics SDK imports) stays out
        # of applications that turn metrics off, and out of ``import prodlens``.
        from prodlens.signals.metrics import CohortMetricsProcessor

        processors.append(CohortMetricsProcessor(duration=settings.metrics_duration))
    return processors


def configure(
    tracer_provider: TracerProvider | None = None,
    *,
    enabled: bool | None = None,
    customer_attribute: str | None = None,
    cohort_prefix: str | None = None,
    pseudonymize: bool | None = None,
    pseudonym_key: str | None = None,
    max_cohort_values: int | None = None,
    max_value_length: int | None = None,
    max_cohorts: int | None = None,
    max_open_spans: int | None = None,
    customer_from: str | None = None,
    cohort_sources: Mapping[str, str] | None = None,
    propagate_to: Sequence[str] | None = None,
    celery_propagate: bool | None = None,
    disabled_integrations: Sequence[str] | None = None,
    direct_stamp: bool | None = None,
    metrics: bool | None = None,
    metrics_duration: bool | None = None,
    metrics_customers: Sequence[str] | None = None,
    metrics_top_customers: int | None = None,
    metrics_max_series: int | None = None,
    sample_always: Sequence[str] | None = None,
    sample_ratio: float | None = None,
    sample_always_per_second: float | None = None,
    storms: bool | None = None,
    storm_window_seconds: float | None = None,
    storm_max_keys: int | None = None,
    storm_threshold: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Configure prodlens and attach its span processor to a tracer provider.

    Settings come from ``PRODLENS_*`` environment variables (see docs/configuration.md);
    keyword arguments override them. Settings are process-wide (the last call wins); the
    processor is attached once per provider, so calling again for the same provider adds
    nothing and calling it for another provider configures that one too.

    Args:
        tracer_provider: an SDK ``TracerProvider``; default: the global one. If that is still
            OpenTelemetry's no-op proxy, one warning says so and nothing is tagged.
        environ: read variables from this mapping instead of ``os.environ`` (tests).
        **others: one per ``PRODLENS_*`` setting, named as in the settings table.

    Returns:
        The effective settings.

    Raises:
        ConfigError: a value is malformed; the message names the variable, the bad value and
            what is accepted.

    Example::

        >>> from opentelemetry.sdk.trace import TracerProvider
        >>> import prodlens
        >>> settings = prodlens.configure(TracerProvider(), max_cohort_values=50)
        >>> settings.max_cohort_values
        50
    """
    overrides: dict[str, object] = {
        "enabled": enabled,
        "customer_attribute": customer_attribute,
        "cohort_prefix": cohort_prefix,
        "pseudonymize": pseudonymize,
        "pseudonym_key": pseudonym_key,
        "max_cohort_values": max_cohort_values,
        "max_value_length": max_value_length,
        "max_cohorts": max_cohorts,
        "max_open_spans": max_open_spans,
        "customer_from": customer_from,
        "cohort_sources": cohort_sources,
        "propagate_to": propagate_to,
        "celery_propagate": celery_propagate,
        "disabled_integrations": disabled_integrations,
        "direct_stamp": direct_stamp,
        "metrics": metrics,
        "metrics_duration": metrics_duration,
        "metrics_customers": metrics_customers,
        "metrics_top_customers": metrics_top_customers,
        "metrics_max_series": metrics_max_series,
        "sample_always": sample_always,
        "sample_ratio": sample_ratio,
        "sample_always_per_second": sample_always_per_second,
        "storms": storms,
        "storm_window_seconds": storm_window_seconds,
        "storm_max_keys": storm_max_keys,
        "storm_threshold": storm_threshold,
    }
    settings = load_settings(environ, overrides)
    _runtime.install(settings)
    _runtime.set_active(True)
    provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    attach(provider, settings)
    return settings
