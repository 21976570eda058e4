"""Shared fixtures: a real SDK tracer provider with an in-memory exporter, configured by prodlens.

Settings are process-wide in prodlens, so every test that tags spans configures them afresh
(hermetic: an explicit, empty environment unless the test passes one).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

import prodlens

# Hypothesis profiles: the default run keeps hypothesis's modest example count (100); the fuzz
# targets (tests/fuzz) run for long with
# ``pytest tests/fuzz --hypothesis-profile=long --timeout=0`` (~20 minutes on 2 CPUs).
hypothesis_settings.register_profile(
    "long", max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: prodlens's own pytest fixture (``prodlens_traced``), as users enable it (docs/testing.md).
pytest_plugins = ["prodlens.testing"]


@dataclass
class Traced:
    provider: TracerProvider
    exporter: InMemorySpanExporter
    tracer: Tracer

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def by_name(self) -> dict[str, dict[str, object]]:
        return {s.name: dict(s.attributes or {}) for s in self.spans()}


def make_traced(**settings: object) -> Traced:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    prodlens.configure(provider, environ={}, metrics=False, **settings)  # type: ignore[arg-type]
    return Traced(provider, exporter, provider.get_tracer("tests"))


@pytest.fixture(autouse=True)
def _fresh_identity_context() -> Iterator[None]:
    """Each test starts with no identity, whatever an earlier test did outside any scope, and
    with prodlens's log-once memory empty, so a test expecting a warning sees it in any order."""
    from prodlens._safety import reset_log_once
    from prodlens._scope import SCOPE

    reset_log_once()
    token = SCOPE.set(None)
    yield
    SCOPE.reset(token)


@pytest.fixture
def traced() -> Iterator[Traced]:
    result = make_traced()
    yield result
    result.provider.shutdown()


@pytest.fixture
def traced_with() -> Iterator[object]:
    """A factory: ``traced_with(max_cohort_values=2)`` configures prodlens with those settings."""
    made: list[Traced] = []

    def factory(**settings: object) -> Traced:
        result = make_traced(**settings)
        made.append(result)
        return result

    yield factory
    for result in made:
        result.provider.shutdown()
