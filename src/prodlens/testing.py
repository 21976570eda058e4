"""Helpers for testing code that uses prodlens, in your own test suite.

prodlens keeps a little process-wide state (its settings, the cohort-cardinality limiter, which
warnings were already logged); :func:`reset` puts it back as a fresh process has it, so tests
pass in any order. :func:`traced` configures prodlens on a new SDK ``TracerProvider`` that
exports to memory, and the pytest fixture ``prodlens_traced`` does that around one test.

Example (a ``conftest.py``)::

    pytest_plugins = ["prodlens.testing"]   # makes the ``prodlens_traced`` fixture available

    def test_checkout_is_tagged(prodlens_traced):
        with prodlens.tag("acme", plan="pro"):
            checkout()
        assert prodlens_traced.attributes("checkout") == {
            "enduser.id": "acme", "prodlens.cohort.plan": "pro"}
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

from prodlens import _runtime
from prodlens._configure import configure
from prodlens._safety import reset_log_once
from prodlens._scope import SCOPE

__all__ = ["Traced", "prodlens_traced", "reset", "traced"]


def reset() -> None:
    """Put prodlens's process-wide state back as a fresh process has it.

    Settings return to their defaults (unconfigured), the cohort-cardinality limiter forgets
    every value, each warning is logged again the next time, and the current context holds no
    identity. Tracer providers already configured keep their processors (the SDK cannot remove
    them); configure a new provider per test, as :func:`traced` does.
    """
    _runtime.reset()
    reset_log_once()
    SCOPE.set(None)


@dataclass
class Traced:
    """A tracer provider configured by prodlens, exporting to memory."""

    provider: TracerProvider
    exporter: InMemorySpanExporter
    tracer: Tracer

    def spans(self) -> list[ReadableSpan]:
        """Every finished span, in the order they ended."""
        return list(self.exporter.get_finished_spans())

    def attributes(self, name: str) -> dict[str, Any]:
        """The attributes of the one finished span called ``name``."""
        (span,) = [span for span in self.spans() if span.name == name]
        return dict(span.attributes or {})


def traced(**settings: Any) -> Traced:
    """A new ``TracerProvider`` with an in-memory exporter, configured by prodlens.

    Settings come from the keyword arguments only (as for ``prodlens.configure``), never from
    the environment, and cohort metrics are off unless asked for.

    Example::

        >>> import prodlens
        >>> from prodlens.testing import traced
        >>> t = traced(max_cohort_values=10)
        >>> with prodlens.tag("acme"), t.tracer.start_as_current_span("work"):
        ...     pass
        >>> t.attributes("work")
        {'enduser.id': 'acme'}
    """
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings.setdefault("metrics", False)
    configure(provider, environ={}, **settings)
    return Traced(provider, exporter, provider.get_tracer("prodlens.testing"))


try:
    import pytest
except ImportError:  # pytest is not a dependency: the fixture exists only where it runs
    pass
else:

    @pytest.fixture
    def prodlens_traced() -> Iterator[Traced]:
        """A fresh prodlens state and a :class:`Traced` provider for one test."""
        reset()
        result = traced()
        yield result
        result.provider.shutdown()
        reset()
