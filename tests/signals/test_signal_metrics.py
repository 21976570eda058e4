"""RED metrics by cohort: exact counts whatever the sampling, bounded series, exact attributes."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry import context, trace
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

import prodlens
from prodlens.signals._topk import TopCustomers
from prodlens.signals.metrics import DURATION_BUCKETS
from prodlens.signals.sampling import ProdlensSampler

REQUESTS = "prodlens.requests"
DURATION = "prodlens.request.duration"


def serve(s: Any, customer: str | None, route: str = "/cart", *, status: int = 200,
          children: int = 1, kind: SpanKind = SpanKind.SERVER, parent: Any = None,
          **cohorts: str) -> None:
    """One request: a server root span (with the route at start, like Flask) and children."""
    with prodlens.tag(customer, **cohorts):
        with s.tracer.start_as_current_span(
            f"GET {route}", kind=kind, context=parent,
            attributes={"http.route": route, "http.response.status_code": status},
        ) as span:
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            for _ in range(children):
                with s.tracer.start_as_current_span("db"):
                    pass


def test_exact_attributes_of_a_point(signals: Any) -> None:
    s = signals()
    serve(s, "acme", plan="pro", region="eu")
    serve(s, "acme", "/pay", status=503, plan="pro", region="eu")
    assert s.points(REQUESTS) == {
        frozenset({"prodlens.cohort.plan": "pro", "prodlens.cohort.region": "eu",
                   "http.route": "/cart", "error": "false", "http.status_class": "2xx",
                   "service.name": "shop"}.items()): 1,
        frozenset({"prodlens.cohort.plan": "pro", "prodlens.cohort.region": "eu",
                   "http.route": "/pay", "error": "true", "http.status_class": "5xx",
                   "service.name": "shop"}.items()): 1,
    }


def test_histogram_is_in_seconds_with_semconv_buckets(signals: Any) -> None:
    s = signals()
    for _ in range(3):
        serve(s, "acme", plan="pro")
    (point,) = s.points(DURATION).values()
    assert point.count == 3
    assert tuple(point.explicit_bounds) == DURATION_BUCKETS
    assert 0 < point.sum < 1.0  # seconds, not milliseconds


@pytest.mark.parametrize("ratio", [0.01, 0.0])
def test_every_request_counts_whatever_the_sampling(signals: Any, ratio: float) -> None:
    s = signals(ProdlensSampler(ratio=ratio, record_unsampled_roots=True))
    made: dict[tuple[str, str], int] = {}
    for i in range(3000):
        plan = ("free", "pro", "enterprise")[i % 3]
        status = 500 if i % 7 == 0 else 200
        serve(s, f"customer-{i % 50}", status=status, children=2, plan=plan)
        key = (plan, "true" if status == 500 else "false")
        made[key] = made.get(key, 0) + 1
    counted = {
        (dict(k)["prodlens.cohort.plan"], dict(k)["error"]): v
        for k, v in s.points(REQUESTS).items()
    }
    assert counted == made
    assert sum(p.count for p in s.points(DURATION).values()) == 3000
    # Unsampled roots were recorded, not exported; their children were dropped entirely.
    spans = s.spans()
    roots = [x for x in spans if x.parent is None]
    assert all(x.context.trace_flags.sampled for x in spans)
    assert len(spans) == 3 * len(roots)  # whole traces only
    assert len(roots) <= (0 if ratio == 0 else 3000 * ratio * 2 + 10)


def test_unsampled_roots_are_not_exported_by_the_batch_processor(signals: Any) -> None:
    s = signals(ProdlensSampler(ratio=0.0, record_unsampled_roots=True))
    batch_exporter = InMemorySpanExporter()
    s.provider.add_span_processor(BatchSpanProcessor(batch_exporter))
    for i in range(20):
        serve(s, f"c{i}", plan="pro")
    s.provider.force_flush()
    assert batch_exporter.get_finished_spans() == ()
    assert s.spans() == []
    assert s.total(REQUESTS) == 20


def test_only_request_roots_count(signals: Any) -> None:
    s = signals()
    remote = trace.set_span_in_context(NonRecordingSpan(SpanContext(
        0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))))
    serve(s, "acme", plan="pro", parent=remote)  # remote parent: a local root
    serve(s, "acme", plan="pro", kind=SpanKind.CONSUMER)
    serve(s, "acme", plan="pro", kind=SpanKind.CLIENT)  # a client root is not a request
    with s.tracer.start_as_current_span("outer"):  # an internal root, not a request
        serve(s, "acme", plan="pro")  # local parent: not a root
    assert s.total(REQUESTS) == 2


def test_no_customer_id_by_default(signals: Any) -> None:
    s = signals()
    for i in range(20):
        serve(s, f"customer-{i}", plan="pro")
    for key in s.points(REQUESTS):
        assert "customer" not in dict(key)
        assert not any(str(v).startswith("customer-") for _, v in key)


def test_listed_customers_get_their_own_series(signals: Any) -> None:
    s = signals(metrics_customers=["acme", "globex"])
    for customer in ("acme", "acme", "globex", "initech", "umbrella"):
        serve(s, customer, plan="pro")
    assert s.by(REQUESTS, "customer") == {"acme": 2, "globex": 1, "__other__": 2}


def test_listed_customers_are_pseudonyms_when_pseudonymised(signals: Any) -> None:
    key = "0123456789abcdef0123"
    s = signals(metrics_customers=["acme"], pseudonymize=True, pseudonym_key=key)
    serve(s, "acme", plan="pro")
    serve(s, "globex", plan="pro")
    assert s.by(REQUESTS, "customer") == {prodlens.pseudonym("acme", key): 1, "__other__": 1}


def test_top_customers_by_volume() -> None:
    top = TopCustomers(2)
    labels = [top.label(c) for c in ["big"] * 3000 + ["mid"] * 2000]
    labels += [top.label(f"tail-{i}") for i in range(5000)]
    labels += [top.label(c) for c in ("big", "mid", "tail-1")]
    assert labels[-3:] == ["big", "mid", "__other__"]


def test_cardinality_stays_within_budget_under_10000_customers(
        signals: Any, caplog: pytest.LogCaptureFixture) -> None:
    budget = 50
    s = signals(metrics_top_customers=20, metrics_max_series=budget, max_cohort_values=1000)
    with caplog.at_level(logging.WARNING, logger="prodlens"):
        for i in range(10000):
            serve(s, f"customer-{i}", f"/r{i % 5}", children=0, plan=f"plan-{i % 37}")
    points = s.points(REQUESTS)
    assert len(points) <= budget + 2
    assert s.processor.series_count() == budget
    assert sum(points.values()) == 10000  # overflowed points still count
    overflow = sum(v for k, v in points.items() if ("otel.metric.overflow", True) in k)
    assert overflow > 0
    assert len(s.points(DURATION)) <= budget + 2
    messages = [r.getMessage() for r in caplog.records if "METRICS_MAX_SERIES" in r.getMessage()]
    assert len(messages) == 1


def test_disabled_prodlens_records_nothing(signals: Any) -> None:
    s = signals(enabled=False)
    serve(s, "acme", plan="pro")
    assert s.points(REQUESTS) == {}


def test_counts_are_exact_under_threads(signals: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    s = signals(ProdlensSampler(ratio=0.1, record_unsampled_roots=True))

    def worker(n: int) -> None:
        for i in range(300):
            serve(s, f"t{n}-{i % 7}", status=500 if i % 5 == 0 else 200, children=1,
                  plan=("free", "pro")[n % 2])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))
    assert s.by(REQUESTS, "prodlens.cohort.plan") == {"free": 1200, "pro": 1200}
    assert s.total(REQUESTS, {"error": "true"}) == 8 * 60
    assert sum(p.count for p in s.points(DURATION).values()) == 2400


def test_shape_cache_is_bounded_and_counts_stay_exact(
        signals: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from prodlens.signals import _layouts

    monkeypatch.setattr(_layouts, "MAX_SHAPES", 16)
    s = signals(metrics_max_series=30, max_cohort_values=1000)
    made: dict[tuple[str, str], int] = {}
    for i in range(600):
        plan = f"plan-{(i * 7) % 50}"  # 50 plans: shapes past the cache, series past the budget
        status = (200, 404, 503)[i % 3]
        serve(s, "acme", children=0, status=status, plan=plan)
        made[plan, f"{status // 100}xx"] = made.get((plan, f"{status // 100}xx"), 0) + 1
        assert s.processor.cache_sizes()[1] <= 16
    points = s.points(REQUESTS)
    assert sum(points.values()) == 600
    assert sum(p.count for p in s.points(DURATION).values()) == 600
    assert s.processor.series_count() == 30
    admitted = {(dict(k)["prodlens.cohort.plan"], dict(k)["http.status_class"]): v
                for k, v in points.items() if ("otel.metric.overflow", True) not in k}
    assert len(admitted) == 30
    assert all(made[key] == value for key, value in admitted.items())  # exact, cache or not


def test_cached_shapes_count_exactly_and_reset_with_the_settings(signals: Any) -> None:
    s = signals()
    for _ in range(50):
        serve(s, "acme", plan="pro", region="eu")
        serve(s, "globex", "/pay", status=503, region="eu", plan="pro")  # other order, same set
    layouts, shapes = s.processor.cache_sizes()
    assert layouts <= 2 and shapes == 2
    prodlens.configure(s.provider, environ={}, metrics=False, metrics_customers=["acme"])
    for _ in range(10):
        serve(s, "acme", plan="pro", region="eu")
    base = {"prodlens.cohort.plan": "pro", "prodlens.cohort.region": "eu",
            "service.name": "shop"}
    assert s.points(REQUESTS) == {
        frozenset({**base, "http.route": "/cart", "error": "false",
                   "http.status_class": "2xx"}.items()): 50,
        frozenset({**base, "http.route": "/pay", "error": "true",
                   "http.status_class": "5xx"}.items()): 50,
        frozenset({**base, "http.route": "/cart", "error": "false", "http.status_class": "2xx",
                   "customer": "acme"}.items()): 10,
    }


def test_without_the_duration_histogram_counters_stay_exact(signals: Any) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from prodlens.signals.metrics import CohortMetricsProcessor

    s = signals()
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    s.teardowns.append(meter_provider.shutdown)
    s.provider.add_span_processor(CohortMetricsProcessor(meter_provider=meter_provider,
                                                         storms=False, duration=False))
    for i in range(30):
        serve(s, f"c{i % 3}", status=500 if i % 3 == 0 else 200, plan="pro")
    data = reader.get_metrics_data()
    assert data is not None
    totals = {m.name: sum(p.value for p in m.data.data_points)
              for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert totals == {REQUESTS: 30}
    assert s.total(REQUESTS) == 30 and s.total(REQUESTS, {"error": "true"}) == 10


def test_durations_carry_no_exemplars(signals: Any) -> None:
    s = signals()
    remote = trace.set_span_in_context(NonRecordingSpan(SpanContext(
        0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))))
    token = context.attach(remote)  # a sampled trace is current when the root ends
    try:
        serve(s, "acme", plan="pro", parent=remote)
    finally:
        context.detach(token)
    (point,) = s.points(DURATION).values()
    assert point.count == 1
    assert list(point.exemplars) == []


def test_durations_wait_for_collection_in_bounded_memory(
        signals: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from prodlens.signals import metrics

    monkeypatch.setattr(metrics, "MAX_PENDING_DURATIONS", 8)
    s = signals()
    for i in range(20):
        serve(s, f"c{i}", plan="pro")
    assert s.processor.flush_durations() == 8  # the other 12 were recorded at once
    assert s.processor.flush_durations() == 0
    for _ in range(5):
        serve(s, "acme", plan="pro")
    (point,) = s.points(DURATION).values()  # the collection flushes the waiting 5
    assert point.count == 25
    assert s.processor.flush_durations() == 0
    serve(s, "acme", plan="pro")
    s.provider.force_flush()
    assert s.processor.flush_durations() == 0
