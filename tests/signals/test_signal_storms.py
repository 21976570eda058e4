"""Refresh storms: repeat counts on spans and in metrics, bounded memory."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from typing import Any

import flask
import pytest
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import prodlens
from prodlens.instrumentor import ProdlensInstrumentor
from prodlens.signals.metrics import CohortMetricsProcessor
from prodlens.signals.storms import RepeatTracker, StormSpanProcessor

REPEATS = "prodlens.requests.repeated"


class FakeClock:
    def __init__(self) -> None:
        self.now = 600.0

    def __call__(self) -> float:
        return self.now


def test_tracker_counts_within_the_window() -> None:
    clock = FakeClock()
    tracker = RepeatTracker(60, 100, clock=clock)
    assert [tracker.hit("acme", "/cart") for _ in range(4)] == [1, 2, 3, 4]
    assert tracker.hit("acme", "/pay") == 1
    assert tracker.hit("globex", "/cart") == 1
    clock.now += 30  # half a window later: the earlier bucket counts for what remains of it
    assert tracker.hit("acme", "/cart") == 5
    clock.now += 60  # the next bucket: the previous one weighted by its remaining share
    assert tracker.hit("acme", "/cart") == 1 + int(5 * 0.5)
    clock.now += 200  # long quiet: starts again
    assert tracker.hit("acme", "/cart") == 1


def test_tracker_slides_smoothly_across_buckets() -> None:
    clock = FakeClock()
    tracker = RepeatTracker(10, 100, clock=clock)
    counts = []
    for _ in range(400):  # one request per second for 400 s: ~10 in any 10 s window
        counts.append(tracker.hit("acme", "/"))
        clock.now += 1
    assert all(9 <= c <= 11 for c in counts[20:])


def test_tracker_forgets_least_recently_seen_pairs() -> None:
    tracker = RepeatTracker(60, 32, clock=FakeClock())
    tracker.hit("keep", "/")
    for i in range(100):
        tracker.hit(f"c{i}", "/")
        tracker.hit("keep", "/")  # recently seen: survives eviction
        assert len(tracker) <= 32
    assert tracker.hit("keep", "/") == 102


def test_memory_stays_under_the_cap_with_a_million_customers() -> None:
    cap = 10_000
    tracker = RepeatTracker(60, cap, clock=FakeClock())
    for i in range(800_000):
        tracker.hit(f"customer-{i}", "/cart")
        if i % 100_000 == 0:
            assert len(tracker) <= cap
    # The last 200,000 distinct customers under tracemalloc: no growth past the cap's worth.
    tracemalloc.start()
    try:
        for i in range(800_000, 1_000_000):
            tracker.hit(f"customer-{i}", "/cart")
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(tracker) <= cap
    assert peak < cap * 300  # ~100-200 bytes per remembered pair, nothing per customer seen


@pytest.fixture
def flask_app() -> Iterator[Any]:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    ProdlensInstrumentor().instrument(tracer_provider=provider, environ={
        "PRODLENS_METRICS": "false",
        "PRODLENS_CUSTOMER_FROM": "header:x-customer-id",
        "PRODLENS_COHORT_PLAN_FROM": "header:x-plan",
    })
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    clock = FakeClock()
    provider.add_span_processor(CohortMetricsProcessor(
        meter_provider=meter_provider, repeat_tracker=RepeatTracker(60, 1000, clock=clock)))
    app = flask.Flask("storm")
    app.add_url_rule("/dashboard/<board>", "dashboard", lambda board: "ok")
    FlaskInstrumentor().instrument_app(app, tracer_provider=provider)
    try:
        yield app.test_client(), exporter, reader, clock
    finally:
        FlaskInstrumentor().uninstrument_app(app)
        ProdlensInstrumentor().uninstrument()
        provider.shutdown()
        meter_provider.shutdown()


def repeats_by_plan(reader: InMemoryMetricReader) -> dict[str, int]:
    out: dict[str, int] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == REPEATS:
                    for point in metric.data.data_points:
                        plan = str(point.attributes["prodlens.cohort.plan"])
                        out[plan] = out.get(plan, 0) + point.value
    return out


def test_a_refresh_storm_is_visible_on_spans_and_in_metrics(flask_app: Any) -> None:
    client, exporter, reader, clock = flask_app
    # Free-plan users hammer refresh on one board; pro users load it once each.
    for round_ in range(10):
        for user in range(5):
            client.get("/dashboard/7", headers={"x-customer-id": f"free-{user}", "x-plan": "free"})
            clock.now += 0.5
        if round_ == 0:
            for user in range(5):
                client.get("/dashboard/7", headers={"x-customer-id": f"pro-{user}", "x-plan": "pro"})
    server = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert len(server) == 55
    counts = {}
    for span in server:
        counts.setdefault(span.attributes["enduser.id"], []).append(
            span.attributes["prodlens.repeat_count"])
    assert counts["free-0"] == list(range(1, 11))
    assert counts["pro-0"] == [1]
    assert dict(server[0].attributes) == {
        **dict(server[0].attributes),
        "enduser.id": "free-0", "prodlens.cohort.plan": "free", "http.route": "/dashboard/<board>",
        "prodlens.repeat_count": 1,
    }
    # Threshold 3: requests 3..10 of each free user count as repeats.
    assert repeats_by_plan(reader) == {"free": 5 * 8}


def make_manual(storm_only: bool = False) -> tuple[Any, Any, Any, FakeClock]:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    prodlens.configure(provider, environ={}, metrics=False)
    reader = InMemoryMetricReader()
    clock = FakeClock()
    tracker = RepeatTracker(60, 1000, clock=clock)
    if storm_only:
        provider.add_span_processor(StormSpanProcessor(tracker))
    else:
        provider.add_span_processor(CohortMetricsProcessor(
            meter_provider=MeterProvider(metric_readers=[reader]), repeat_tracker=tracker))
    return provider, exporter, reader, clock


def test_route_known_late_tags_at_the_first_child_span() -> None:
    # Like Django: http.route is set after routing, while the server span is open.
    provider, exporter, reader, _clock = make_manual()
    tracer = provider.get_tracer("t")
    for _ in range(4):
        with prodlens.tag("acme", plan="pro"):
            with tracer.start_as_current_span("GET", kind=SpanKind.SERVER) as root:
                root.set_attribute("http.route", "/orders/<id>")
                with tracer.start_as_current_span("SELECT"):
                    pass
    roots = [s for s in exporter.get_finished_spans() if s.parent is None]
    assert [s.attributes["prodlens.repeat_count"] for s in roots] == [1, 2, 3, 4]
    assert repeats_by_plan(reader) == {"pro": 2}


def test_identity_known_late_without_child_spans_counts_in_metrics_only() -> None:
    provider, exporter, reader, _clock = make_manual()
    tracer = provider.get_tracer("t")
    for _ in range(4):
        with prodlens.tag(), tracer.start_as_current_span(
                "GET /me", kind=SpanKind.SERVER, attributes={"http.route": "/me"}):
            prodlens.identify("acme", plan="pro")  # after authentication
    roots = exporter.get_finished_spans()
    assert all("prodlens.repeat_count" not in s.attributes for s in roots)
    assert all(s.attributes["enduser.id"] == "acme" for s in roots)
    assert repeats_by_plan(reader) == {"pro": 2}


def test_storm_processor_alone_tags_spans() -> None:
    provider, exporter, _reader, _clock = make_manual(storm_only=True)
    tracer = provider.get_tracer("t")
    for _ in range(3):
        with prodlens.tag("acme"):
            with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER,
                                              attributes={"http.route": "/x"}):
                pass
        with prodlens.tag("acme"):  # not a request: no count
            with tracer.start_as_current_span("job"):
                pass
    counts = [s.attributes.get("prodlens.repeat_count") for s in exporter.get_finished_spans()]
    assert counts == [1, None, 2, None, 3, None]


def test_storms_off_keeps_metrics_on() -> None:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    prodlens.configure(provider, environ={"PRODLENS_STORMS": "false"}, metrics=False)
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    provider.add_span_processor(CohortMetricsProcessor(meter_provider=meter_provider))
    tracer = provider.get_tracer("t")
    try:
        for _ in range(5):
            with prodlens.tag("acme", plan="pro"):
                with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER,
                                                  attributes={"http.route": "/x"}):
                    with tracer.start_as_current_span("child"):
                        pass
        with prodlens.tag(), tracer.start_as_current_span(
                "GET /me", kind=SpanKind.SERVER, attributes={"http.route": "/me"}):
            prodlens.identify("acme", plan="pro")  # late identity: would count at the end
        spans = exporter.get_finished_spans()
        assert len(spans) == 11
        assert all("prodlens.repeat_count" not in s.attributes for s in spans)
        data = reader.get_metrics_data()
        assert data is not None
        totals = {m.name: sum(getattr(p, "value", getattr(p, "count", 0))
                              for p in m.data.data_points)
                  for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
        assert totals == {"prodlens.requests": 6, "prodlens.request.duration": 6}
    finally:
        provider.shutdown()
        meter_provider.shutdown()


def test_two_taggers_on_one_provider_count_each_request_once() -> None:
    provider, exporter, reader, _clock = make_manual()
    provider.add_span_processor(StormSpanProcessor(RepeatTracker(60, 1000, clock=FakeClock())))
    tracer = provider.get_tracer("t")
    for _ in range(4):
        with prodlens.tag("acme", plan="pro"):
            with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER,
                                              attributes={"http.route": "/x"}):
                pass
    counts = [s.attributes["prodlens.repeat_count"] for s in exporter.get_finished_spans()]
    assert counts == [1, 2, 3, 4]
    assert repeats_by_plan(reader) == {"pro": 2}


def test_tracker_memory_is_one_int_per_pair() -> None:
    tracker = RepeatTracker(60, 100, clock=FakeClock())
    for i in range(1000):
        tracker.hit(f"customer-{i}", "/cart")
    assert len(tracker) <= 100
    assert tracker.hit("customer-999", "/cart") == 2
