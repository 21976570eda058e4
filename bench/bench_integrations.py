"""Per-request overhead of prodlens on top of a framework's own OpenTelemetry instrumentation.

One process, in-process clients (no sockets: we measure framework + instrumentation work, not
the network), a trivial view. Every contender's app is built once; prodlens is instrumented just
before each of its blocks and uninstrumented after (its patches are class-wide), and short blocks
of requests run in interleaved rounds (order rotated each round) so drift on a shared machine
hits every contender alike. Reported per contender: the median of per-block means, the median
over rounds of its ratio to the OTel-only block of the same round (with the IQR of that ratio),
and the ratio of 10th percentiles of block means, which resists CPU contention from other
processes (contention only ever adds time). Contenders per framework:

Every contender serves the same request (5 identity headers and a 5-entry ``baggage``):

* ``otel``: the framework's OTel instrumentation alone;
* ``prodlens``: + ``ProdlensInstrumentor`` reading the customer and 4 cohorts from headers;
* ``prodlens-baggage``: + prodlens reading the same 5 values from inbound ``baggage``;
* ``baggage-processor``: + contrib's ``BaggageSpanProcessor`` copying the same 5 baggage entries;
* ``set-attributes``: + a processor that only calls ``span.set_attributes`` with the same 5
  attributes, prebuilt, on every span: the floor of writing them through the public API, with no
  request parsing at all.

Every contender must put the same 5 attributes on the server span (checked before timing).
Frameworks: Flask (``app.test_client()``-style WSGI call) and FastAPI (a direct ASGI call in
one event loop); a framework whose prodlens integration is missing is reported as such.

By default the global meter provider is OpenTelemetry's no-op one, so the frameworks'
instrumentations record no HTTP metrics: traces only, the smallest baseline and the worst case
for the ratio. With ``--otel-metrics`` a global SDK ``MeterProvider`` is installed first, as
``opentelemetry-instrument`` does by default (``OTEL_METRICS_EXPORTER=otlp``): every contender
then also records the instrumentation's own HTTP server metrics. Run::

    /work/venv/bin/python bench/bench_integrations.py                  # ~1 min
    /work/venv/bin/python bench/bench_integrations.py --rounds 120 --requests 200
    /work/venv/bin/python bench/bench_integrations.py --rounds 120 --requests 200 --otel-metrics
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from prodlens.instrumentor import ProdlensInstrumentor

CONTENDERS = ("otel", "prodlens", "prodlens-baggage", "baggage-processor", "set-attributes")
#: What every contender puts on each span, prebuilt (the ``set-attributes`` floor).
STAMP = {"enduser.id": "acme", "prodlens.cohort.plan": "pro",
         "prodlens.cohort.region": "eu-west", "prodlens.cohort.version": "2.3",
         "prodlens.cohort.tier": "gold"}
VALUES = {"customer": "acme", "plan": "pro", "region": "eu-west", "version": "2.3",
          "tier": "gold"}
HEADERS = {"x-customer-id": "acme", "x-plan": "pro", "x-region": "eu-west", "x-version": "2.3",
           "x-tier": "gold"}
PRODLENS_BAGGAGE = ("prodlens.customer=acme,prodlens.cohort.plan=pro,"
                    "prodlens.cohort.region=eu-west,prodlens.cohort.version=2.3,"
                    "prodlens.cohort.tier=gold")
HEADER_ENV = {
    "PRODLENS_METRICS": "false",
    "PRODLENS_CUSTOMER_FROM": "header:x-customer-id",
    **{f"PRODLENS_COHORT_{n.upper()}_FROM": f"header:x-{n}" for n in VALUES if n != "customer"},
}
BAGGAGE_ENV = {"PRODLENS_METRICS": "false", "PRODLENS_CUSTOMER_FROM": "baggage"}


class SetAttributes(SpanProcessor):
    """The public-API floor: one ``set_attributes`` of the prebuilt 5 attributes per span."""

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        span.set_attributes(STAMP)


class Keep(SpanExporter):
    """Keeps only the last span (for the attribute check); discards the rest cheaply."""

    def __init__(self) -> None:
        self.last: ReadableSpan | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.last = spans[-1]
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


@dataclass
class Setup:
    request: Callable[[int], None]  # run n requests
    teardown: Callable[[], None]
    exporter: Keep
    #: Turn this contender's prodlens on / off around each of its blocks (no-ops without it).
    enable: Callable[[], None]
    disable: Callable[[], None]


def provider_for(contender: str) -> tuple[TracerProvider, Keep]:
    provider = TracerProvider()
    exporter = Keep()
    if contender == "set-attributes":
        provider.add_span_processor(SetAttributes())
    if contender == "baggage-processor":
        from opentelemetry.processor.baggage import ALLOW_ALL_BAGGAGE_KEYS, BaggageSpanProcessor

        provider.add_span_processor(BaggageSpanProcessor(ALLOW_ALL_BAGGAGE_KEYS))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def request_headers(contender: str) -> dict[str, str]:
    # The same request for every contender (5 headers and a 5-entry baggage), so the only
    # difference is the instrumentation; each contender reads the 5 values its own way.
    return {**HEADERS, "baggage": PRODLENS_BAGGAGE}


def prodlens_switch(contender: str, provider: TracerProvider) -> tuple[Callable[[], None],
                                                                        Callable[[], None]]:
    """(enable, disable) of prodlens for one contender; its patches are class-wide, so only
    one contender's prodlens may be on at a time."""
    if contender.startswith("prodlens"):
        env = HEADER_ENV if contender == "prodlens" else BAGGAGE_ENV

        def enable() -> None:
            ProdlensInstrumentor().instrument(tracer_provider=provider, environ=env)

        def disable() -> None:
            ProdlensInstrumentor().uninstrument()

        return enable, disable
    return (lambda: None), (lambda: None)


# --------------------------------------------------------------------------- Flask


def wsgi_runner(app: Callable[..., Any], headers: dict[str, str]) -> Callable[[int], None]:
    """``run(n)``: n ``GET /hello`` requests with ``headers``, calling ``app`` as a WSGI
    application (no server, no test client) and consuming each response. Shared with
    bench_signals.py, so both measure the same harness."""
    import io

    environ_base: dict[str, Any] = {
        "REQUEST_METHOD": "GET", "PATH_INFO": "/hello", "SERVER_NAME": "bench",
        "SERVER_PORT": "80", "wsgi.url_scheme": "http", "SERVER_PROTOCOL": "HTTP/1.1",
        "QUERY_STRING": "", "wsgi.input": None, "wsgi.errors": sys.stderr,
        "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False,
        "REMOTE_ADDR": "127.0.0.1"}
    for key, value in headers.items():
        environ_base["HTTP_" + key.upper().replace("-", "_")] = value

    def start_response(status: str, headers: list[Any], exc_info: Any = None) -> None:
        return None

    def run(n: int) -> None:
        for _ in range(n):
            environ = dict(environ_base)
            environ["wsgi.input"] = io.BytesIO(b"")
            body = app(environ, start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()

    return run


def flask_setup(contender: str) -> Setup:
    import flask
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    provider, exporter = provider_for(contender)
    enable, disable = prodlens_switch(contender, provider)
    app = flask.Flask("bench")
    app.add_url_rule("/hello", "hello", lambda: "ok")
    FlaskInstrumentor().instrument_app(app, tracer_provider=provider)
    run = wsgi_runner(app, request_headers(contender))

    def teardown() -> None:
        FlaskInstrumentor().uninstrument_app(app)
        provider.shutdown()

    return Setup(run, teardown, exporter, enable, disable)


# --------------------------------------------------------------------------- FastAPI


def fastapi_available() -> str | None:
    import importlib.util

    if importlib.util.find_spec("prodlens.integrations.asgi") is None and \
            importlib.util.find_spec("prodlens.integrations.starlette") is None:
        return "prodlens ASGI/Starlette integration not present yet"
    return None


def fastapi_setup(contender: str) -> Setup:
    import fastapi
    from fastapi.responses import PlainTextResponse
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    provider, exporter = provider_for(contender)
    enable, disable = prodlens_switch(contender, provider)
    app = fastapi.FastAPI()

    @app.get("/hello")
    async def hello() -> PlainTextResponse:
        return PlainTextResponse("ok")

    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    headers = [(k.encode(), v.encode()) for k, v in request_headers(contender).items()]
    scope_base = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                  "method": "GET", "scheme": "http", "path": "/hello", "raw_path": b"/hello",
                  "query_string": b"", "root_path": "", "headers": headers,
                  "client": ("127.0.0.1", 1234), "server": ("bench", 80)}
    loop = asyncio.new_event_loop()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    async def many(n: int) -> None:
        for _ in range(n):
            await app(dict(scope_base), receive, send)

    def run(n: int) -> None:
        loop.run_until_complete(many(n))

    def teardown() -> None:
        FastAPIInstrumentor.uninstrument_app(app)
        provider.shutdown()
        loop.close()

    return Setup(run, teardown, exporter, enable, disable)


# --------------------------------------------------------------------------- harness


def add_otel_metrics_option(parser: argparse.ArgumentParser) -> None:
    """``--otel-metrics``, shared with bench_signals.py."""
    parser.add_argument("--otel-metrics", action="store_true",
                        help="install a global SDK MeterProvider first (the framework's own "
                             "HTTP metrics on, as under opentelemetry-instrument's defaults)")


def apply_otel_metrics_option(args: argparse.Namespace) -> str:
    """Install the global SDK ``MeterProvider`` if ``--otel-metrics`` asks for it; the
    baseline's name, for the report."""
    if not args.otel_metrics:
        return "no global MeterProvider"
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    return "global SDK MeterProvider"

FRAMEWORKS: dict[str, tuple[Callable[[str], Setup], Callable[[], str | None]]] = {
    "flask": (flask_setup, lambda: None),
    "fastapi": (fastapi_setup, fastapi_available),
}


def server_tags(setup: Setup) -> dict[str, Any]:
    setup.enable()
    try:
        setup.request(1)
    finally:
        setup.disable()
    span = setup.exporter.last
    assert span is not None
    return {k: v for k, v in (span.attributes or {}).items()
            if k == "enduser.id" or k.startswith("prodlens.")}


def check(contender: str, setup: Setup) -> str | None:
    """None if the contender puts 5 identity attributes on the server span; else why not."""
    tags = server_tags(setup)
    expected = 0 if contender == "otel" else 5
    if len(tags) != expected:
        return f"server span carries {len(tags)} identity attributes, expected {expected}: {tags}"
    return None


def bench(setups: dict[str, Setup], rounds: int, requests: int) -> dict[str, list[float]]:
    """Microseconds per request per contender, one sample per round."""
    samples: dict[str, list[float]] = {c: [] for c in CONTENDERS}
    for round_no in range(rounds):
        shift = round_no % len(CONTENDERS)
        order = CONTENDERS[shift:] + CONTENDERS[:shift]
        if round_no // len(CONTENDERS) % 2:
            order = tuple(reversed(order))
        for contender in order:
            setup = setups[contender]
            setup.enable()
            try:
                setup.request(max(10, requests // 10))  # warm-up (caches, branch predictors)
                gc.collect()
                gc.disable()
                # CPU time of this process: other processes on a shared machine skew wall time.
                start = time.process_time()
                setup.request(requests)
                elapsed = time.process_time() - start
                gc.enable()
            finally:
                setup.disable()
            samples[contender].append(elapsed / requests * 1e6)
    return samples


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--frameworks", default="flask,fastapi")
    add_otel_metrics_option(parser)
    args = parser.parse_args(argv)
    baseline = apply_otel_metrics_option(args)
    print(f"python {sys.version.split()[0]}, {baseline}, {args.rounds} interleaved rounds x "
          f"{args.requests} requests, process CPU time")
    for framework in args.frameworks.split(","):
        factory, missing_check = FRAMEWORKS[framework]
        missing = missing_check()
        if missing:
            print(f"\n{framework}: skipped ({missing})")
            continue
        setups = {c: factory(c) for c in CONTENDERS}
        try:
            problems = {c: check(c, setups[c]) for c in CONTENDERS}
            samples = bench(setups, args.rounds, args.requests)
        finally:
            for setup in setups.values():
                setup.teardown()
        print(f"\n{framework}: per request, on top of the framework's OTel instrumentation "
              "(paired: median over rounds of contender / otel in the same round; "
              "p10: ratio of 10th percentiles)")
        print(f"  {'contender':<20} {'us/request':>11} {'paired':>9} {'added':>8} "
              f"{'IQR of paired':>15} {'p10':>8} {'added':>8}")
        p10_otel = statistics.quantiles(samples["otel"], n=10)[0]
        for contender in CONTENDERS:
            ratios = sorted(c / o for c, o in zip(samples[contender], samples["otel"], strict=True))
            ratio = statistics.median(ratios)
            q1, _, q3 = statistics.quantiles(ratios, n=4)
            p10 = statistics.quantiles(samples[contender], n=10)[0] / p10_otel
            note = f"  !! {problems[contender]}" if problems[contender] else ""
            print(f"  {contender:<20} {statistics.median(samples[contender]):>11.1f} "
                  f"{ratio:>8.3f}x {(ratio - 1) * 100:>+7.1f}% {q1:>7.3f}-{q3:.3f} "
                  f"{p10:>7.3f}x {(p10 - 1) * 100:>+7.1f}%{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
