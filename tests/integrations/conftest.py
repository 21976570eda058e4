"""Fixtures for integration tests: prodlens instrumented on an explicit SDK provider.

``prodlens_setup(env)`` installs ``ProdlensInstrumentor`` with settings read from ``env`` only
(hermetic), on a fresh ``TracerProvider`` with an in-memory exporter; teardown uninstruments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from prodlens.instrumentor import ProdlensInstrumentor


@dataclass
class Instrumented:
    provider: TracerProvider
    exporter: InMemorySpanExporter
    teardowns: list[Callable[[], Any]] = field(default_factory=list)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


@pytest.fixture
def prodlens_setup() -> Iterator[Callable[..., Instrumented]]:
    made: list[Instrumented] = []

    def factory(env: dict[str, str], *, sqlite: bool = False) -> Instrumented:
        provider = TracerProvider()
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        environ = {"PRODLENS_METRICS": "false", **env}
        ProdlensInstrumentor().instrument(tracer_provider=provider, environ=environ)
        result = Instrumented(provider, exporter)
        result.teardowns.append(ProdlensInstrumentor().uninstrument)
        if sqlite:
            SQLite3Instrumentor().instrument(tracer_provider=provider)
            result.teardowns.append(SQLite3Instrumentor().uninstrument)
        made.append(result)
        return result

    yield factory
    for result in made:
        for teardown in reversed(result.teardowns):
            teardown()
        result.provider.shutdown()
