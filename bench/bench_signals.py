"""Per-request overhead of prodlens signals (cohort metrics + storm tracking) on top of tagging.

The harness of ``bench_integrations.py``: one process, the Flask app called directly as a WSGI
application (no sockets, no test client: framework and instrumentation work only), a trivial
view, the Flask OTel instrumentation with an explicit provider and a ``SimpleSpanProcessor`` to
a no-op exporter.
Every contender serves the same request (customer and 4 cohorts in headers):

* ``tagging``: ``ProdlensInstrumentor`` tagging only (``PRODLENS_METRICS=false``);
* ``signals``: + ``CohortMetricsProcessor`` (RED metrics by cohort and refresh-storm tracking)
  recording into an SDK ``MeterProvider`` with an ``InMemoryMetricReader``;
* ``signals+sampler``: + ``ProdlensSampler`` (ratio 1.0, one watched customer) instead of the
  SDK's default sampler;
* ``no-duration``: ``signals`` without the duration histogram
  (``CohortMetricsProcessor(duration=False)``: exact counters and storms only), to show what the
  SDK's synchronous histogram costs on its own;
* ``sdk-histogram``: tagging + the floor of any duration histogram by these 8 attributes: one
  SDK ``Histogram.record`` per request with a prebuilt attribute dict, nothing else;
* ``sdk-histogram-bare``: tagging + the floor of any SDK duration histogram at all: one
  ``Histogram.record`` per request with no attributes (a single series).

With ``--otel-metrics`` a global SDK ``MeterProvider`` is installed first, as in any service that
exports OpenTelemetry metrics: the Flask instrumentation then records its own HTTP metrics in
every contender (the baseline a metrics-exporting service really has). Without it, the global
meter provider is the no-op one and only prodlens records metrics (the worst case for the ratio).

prodlens records the request durations into the SDK histogram when the meter provider collects
(off the request path, see docs/signals/metrics.md): so that their cost is counted, every
contender's timed round ends with a collection by its metric reader (one per round of
``--requests`` requests: more often than a 60 s export interval would, so pessimistic).

Interleaved rounds (drift hits every contender alike), process CPU time per round; reported:
median of per-round means, and the median over rounds of each contender's ratio to ``tagging``
in the same round. Before timing, each contender's server span and metrics are checked. Run::

    /work/venv/bin/python bench/bench_signals.py                       # ~1 min
    /work/venv/bin/python bench/bench_signals.py --rounds 60 --requests 200
    /work/venv/bin/python bench/bench_signals.py --rounds 60 --requests 200 --otel-metrics
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import flask
from bench_integrations import (  # the same harness (this directory is on sys.path)
    Keep,
    add_otel_metrics_option,
    apply_otel_metrics_option,
    wsgi_runner,
)
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import prodlens
from prodlens.instrumentor import ProdlensInstrumentor
from prodlens.signals.metrics import CohortMetricsProcessor
from prodlens.signals.sampling import ProdlensSampler

CONTENDERS = ("tagging", "signals", "signals+sampler", "no-duration", "sdk-histogram",
              "sdk-histogram-bare")
#: The attribute set prodlens's metrics give this request (for the ``sdk-histogram`` floor).
POINT = {"prodlens.cohort.plan": "pro", "prodlens.cohort.region": "eu-west",
         "prodlens.cohort.tier": "gold", "prodlens.cohort.version": "2.3",
         "http.route": "/hello", "error": "false", "http.status_class": "2xx",
         "service.name": "unknown_service"}
HEADERS = {"x-customer-id": "acme", "x-plan": "pro", "x-region": "eu-west", "x-version": "2.3",
           "x-tier": "gold"}
ENV = {
    "PRODLENS_METRICS": "false",
    "PRODLENS_CUSTOMER_FROM": "header:x-customer-id",
    **{f"PRODLENS_COHORT_{n.upper()}_FROM": f"header:x-{n}" for n in ("plan", "region",
                                                                        "version", "tier")},
}


class HistogramFloor(SpanProcessor):
    """The floor of any per-request duration histogram by ``point``: one SDK
    ``Histogram.record`` per server span, with a prebuilt attribute dict (or none), nothing
    else."""

    def __init__(self, meter_provider: MeterProvider,
                 point: dict[str, str] | None = POINT) -> None:
        self._histogram = meter_provider.get_meter("floor").create_histogram("floor", unit="s")
        self._point = point

    def on_end(self, span: ReadableSpan) -> None:
        if span.parent is None and span.end_time is not None and span.start_time is not None:
            self._histogram.record((span.end_time - span.start_time) / 1e9, self._point)


@dataclass
class Setup:
    run: Callable[[int], None]
    exporter: Keep
    reader: InMemoryMetricReader | None
    teardown: Callable[[], None]

    def collect(self) -> None:
        """What a periodic metric reader does: collect (prodlens flushes its durations)."""
        if self.reader is not None:
            self.reader.get_metrics_data()


def setup(contender: str) -> Setup:
    sampler = ProdlensSampler(ratio=1.0, always="customer:globex") \
        if contender == "signals+sampler" else None
    provider = TracerProvider(sampler=sampler) if sampler is not None else TracerProvider()
    exporter = Keep()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # Settings are process-wide and identical for every contender; each provider gets the
    # tagging processor (the instrumentor patched Flask once, in main()).
    prodlens.configure(provider, environ=ENV)
    reader: InMemoryMetricReader | None = None
    meter_provider: MeterProvider | None = None
    if contender.startswith("sdk-histogram"):
        reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[reader])
        provider.add_span_processor(HistogramFloor(
            meter_provider, None if contender == "sdk-histogram-bare" else POINT))
    elif contender != "tagging":
        reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[reader])
        provider.add_span_processor(CohortMetricsProcessor(
            meter_provider=meter_provider, duration=contender != "no-duration"))
    app = flask.Flask(f"bench-{contender}")
    app.add_url_rule("/hello", "hello", lambda: "ok")
    FlaskInstrumentor().instrument_app(app, tracer_provider=provider)
    run = wsgi_runner(app, HEADERS)

    def teardown() -> None:
        FlaskInstrumentor().uninstrument_app(app)
        provider.shutdown()
        if meter_provider is not None:
            meter_provider.shutdown()

    return Setup(run, exporter, reader, teardown)


def check(contender: str, made: Setup) -> str | None:
    made.run(5)
    span = made.exporter.last
    if span is None:
        return "no span exported"
    attrs = dict(span.attributes or {})
    want = {"enduser.id": "acme", "prodlens.cohort.plan": "pro", "prodlens.cohort.tier": "gold"}
    if any(attrs.get(k) != v for k, v in want.items()):
        return f"server span not tagged: {attrs}"
    if contender.startswith("sdk-histogram"):
        return None
    if contender != "tagging":
        if attrs.get("prodlens.repeat_count") is None:
            return "no prodlens.repeat_count on the server span"
        assert made.reader is not None
        data = made.reader.get_metrics_data()
        names = {m.name for rm in (data.resource_metrics if data else [])
                 for sm in rm.scope_metrics for m in sm.metrics}
        if "prodlens.requests" not in names:
            return "no prodlens.requests metric"
    elif "prodlens.repeat_count" in attrs:
        return "tagging-only contender has signals"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--requests", type=int, default=500)
    add_otel_metrics_option(parser)
    args = parser.parse_args(argv)
    baseline = apply_otel_metrics_option(args)
    ProdlensInstrumentor().instrument(environ=ENV)
    setups = {c: setup(c) for c in CONTENDERS}
    problems = {c: check(c, s) for c, s in setups.items()}
    for contender, problem in problems.items():
        if problem:
            print(f"!! {contender}: {problem}", file=sys.stderr)
    for made in setups.values():
        made.run(300)  # warm-up
    samples: dict[str, list[float]] = {c: [] for c in CONTENDERS}
    gc.collect()
    for round_ in range(args.rounds):
        order = CONTENDERS if round_ % 2 == 0 else tuple(reversed(CONTENDERS))
        for contender in order:
            made = setups[contender]
            gc.disable()
            start = time.process_time()
            made.run(args.requests)
            made.collect()
            elapsed = time.process_time() - start
            gc.enable()
            samples[contender].append(elapsed / args.requests * 1e6)
    print(f"python {sys.version.split()[0]}, Flask called as a WSGI app, {baseline}, {args.rounds} "
          f"interleaved rounds x {args.requests} requests, process CPU time, median of per-round "
          "means")
    print(f"  {'contender':<18} {'us/request':>11} {'vs tagging':>11} {'added':>8} "
          f"{'IQR of ratio':>15}")
    for contender in CONTENDERS:
        ratios = sorted(c / t for c, t in zip(samples[contender], samples["tagging"],
                                              strict=True))
        ratio = statistics.median(ratios)
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        print(f"  {contender:<18} {statistics.median(samples[contender]):>11.1f} "
              f"{ratio:>10.3f}x {(ratio - 1) * 100:>+7.1f}% {q1:>7.3f}-{q3:.3f}")
    for made in setups.values():
        made.teardown()
    ProdlensInstrumentor().uninstrument()
    return 1 if any(problems.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
