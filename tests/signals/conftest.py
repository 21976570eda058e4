"""Fixtures for the signals tests: real trace and metrics SDKs, explicit providers.

``signals(...)`` builds a ``TracerProvider`` (with a ``ProdlensSampler`` if asked), an in-memory
span exporter, prodlens tagging configured hermetically, and a ``CohortMetricsProcessor``
recording into its own ``MeterProvider`` with an ``InMemoryMetricReader``.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.trace import Tracer

import prodlens
from prodlens.signals.metrics import CohortMetricsProcessor
from prodlens.signals.storms import RepeatTracker


class SeededIds(IdGenerator):
    """Deterministic trace and span ids from a private ``random.Random`` (never the global one)."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def generate_span_id(self) -> int:
        return self._rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._rng.getrandbits(128) or 1


@dataclass
class Signals:
    provider: TracerProvider
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    processor: CohortMetricsProcessor
    tracer: Tracer
    meter_provider: MeterProvider
    teardowns: list[Callable[[], Any]] = field(default_factory=list)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def points(self, name: str) -> dict[frozenset[tuple[str, Any]], Any]:
        """attribute set -> value (counters) or data point (histograms) for metric ``name``."""
        result: dict[frozenset[tuple[str, Any]], Any] = {}
        data = self.reader.get_metrics_data()
        if data is None:
            return result
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        key = frozenset((point.attributes or {}).items())
                        result[key] = getattr(point, "value", point)
        return result

    def total(self, name: str, where: dict[str, Any] | None = None) -> int:
        """Sum of a counter over the points whose attributes include ``where``."""
        return sum(
            value for key, value in self.points(name).items()
            if all(item in key for item in (where or {}).items())
        )

    def by(self, name: str, attribute: str) -> dict[Any, int]:
        out: dict[Any, int] = defaultdict(int)
        for key, value in self.points(name).items():
            out[dict(key).get(attribute)] += value
        return dict(out)


@pytest.fixture
def signals() -> Iterator[Callable[..., Signals]]:
    made: list[Signals] = []

    def factory(sampler: Sampler | None = None, *, seed: int = 7,
                tracker: RepeatTracker | None = None, service: str = "shop",
                **settings: Any) -> Signals:
        provider = TracerProvider(
            sampler=sampler, id_generator=SeededIds(seed),
            resource=Resource.create({"service.name": service}),
        ) if sampler is not None else TracerProvider(
            id_generator=SeededIds(seed), resource=Resource.create({"service.name": service}))
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        prodlens.configure(provider, environ={}, metrics=False, **settings)
        reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[reader])
        processor = CohortMetricsProcessor(meter_provider=meter_provider, repeat_tracker=tracker)
        provider.add_span_processor(processor)
        result = Signals(provider, exporter, reader, processor, provider.get_tracer("tests"),
                         meter_provider)
        made.append(result)
        return result

    yield factory
    for result in made:
        for teardown in reversed(result.teardowns):
            teardown()
        result.provider.shutdown()
        result.meter_provider.shutdown()
