"""Per-request overhead of prodlens on top of a framework's own OpenTelemetry instrumentation.

One process, in-process clients (no sockets: we measure framework + instrumentation work, not
the network), a trivial view, interleaved rounds so drift hits every contender alike; the median of per-round means,
and the median over rounds of each contender's ratio to the OTel-only baseline of the same round. Contenders per framework:

Every contender serves the same request (5 identity headers and a 5-entry ``baggage``):

* ``otel``: the framework's OTel instrumentation alone;
* ``prodlens``: + ``ProdlensInstrumentor`` reading the customer and 4 cohorts from headers;
* ``prodlens-baggage``: + prodlens reading the same 5 values from inbound ``baggage``;
* ``baggage-processor``: + contrib's ``BaggageSpanProcessor`` copying the same 5 baggage entries.

Every contender must put the same 5 attributes on the server span (checked before timing).
Frameworks: Flask (``app.test_client()``-style WSGI call) and FastAPI (a direct ASGI call in
one event loop); a framework whose prodlens integration is missing is reported as such. Run::

    /work/venv/bin/python bench/bench_integrations.py                  # ~1 min
    /work/venv/bin/python bench/bench_integrations.py --rounds 30 --requests 2000
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

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from prodlens.instrumentor import ProdlensInstrumentor

CONTENDERS = ("otel", "prodlens", "prodlens-baggage", "baggage-processor")
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


def provider_for(contender: str) -> tuple[TracerProvider, Keep]:
    provider = TracerProvider()
    exporter = Keep()
    if contender == "baggage-processor":
        from opentelemetry.processor.baggage import ALLOW_ALL_BAGGAGE_KEYS, BaggageSpanProcessor

        provider.add_span_processor(BaggageSpanProcessor(ALLOW_ALL_BAGGAGE_KEYS))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def request_headers(contender: str) -> dict[str, str]:
    # The same request for every contender (5 headers and a 5-entry baggage), so the only
    # difference is the instrumentation; each contender reads the 5 values its own way.
    return {**HEADERS, "baggage": PRODLENS_BAGGAGE}


def prodlens_on(contender: str, provider: TracerProvider) -> Callable[[], None]:
    if contender.startswith("prodlens"):
        env = HEADER_ENV if contender == "prodlens" else BAGGAGE_ENV
        ProdlensInstrumentor().instrument(tracer_provider=provider, environ=env)
        return lambda: ProdlensInstrumentor().uninstrument()
    return lambda: None


# --------------------------------------------------------------------------- Flask


def flask_setup(contender: str) -> Setup:
    import flask
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    provider, exporter = provider_for(contender)
    undo = prodlens_on(contender, provider)
    app = flask.Flask("bench")
    app.add_url_rule("/hello", "hello", lambda: "ok")
    FlaskInstrumentor().instrument_app(app, tracer_provider=provider)
    environ_base = {"REQUEST_METHOD": "GET", "PATH_INFO": "/hello", "SERVER_NAME": "bench",
                    "SERVER_PORT": "80", "wsgi.url_scheme": "http", "SERVER_PROTOCOL": "HTTP/1.1",
                    "QUERY_STRING": "", "wsgi.input": None, "wsgi.errors": sys.stderr,
                    "wsgi.multithread": False, "wsgi.multiprocess": False,
                    "wsgi.run_once": False, "REMOTE_ADDR": "127.0.0.1"}
    for key, value in request_headers(contender).items():
        environ_base["HTTP_" + key.upper().replace("-", "_")] = value

    import io

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

    def teardown() -> None:
        FlaskInstrumentor().uninstrument_app(app)
        undo()
        provider.shutdown()

    return Setup(run, teardown, exporter)


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
    undo = prodlens_on(contender, provider)
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
        undo()
        provider.shutdown()
        loop.close()

    return Setup(run, teardown, exporter)


# --------------------------------------------------------------------------- harness

FRAMEWORKS: dict[str, tuple[Callable[[str], Setup], Callable[[], str | None]]] = {
    "flask": (flask_setup, lambda: None),
    "fastapi": (fastapi_setup, fastapi_available),
}


def server_tags(setup: Setup) -> dict[str, Any]:
    setup.request(1)
    span = setup.exporter.last
    assert span is not None
    return {k: v for k, v in (span.attributes or {}).items()
            if k == "enduser.id" or k.startswith("prodlens.")}


def check(framework: str, contender: str) -> str | None:
    """None if the contender puts 5 identity attributes on the server span; else why not."""
    setup = FRAMEWORKS[framework][0](contender)
    try:
        tags = server_tags(setup)
    finally:
        setup.teardown()
    expected = 0 if contender == "otel" else 5
    if len(tags) != expected:
        return f"server span carries {len(tags)} identity attributes, expected {expected}: {tags}"
    return None


def bench(framework: str, rounds: int, requests: int) -> dict[str, list[float]]:
    """Microseconds per request per contender, one sample per round."""
    samples: dict[str, list[float]] = {c: [] for c in CONTENDERS}
    factory = FRAMEWORKS[framework][0]
    for round_no in range(rounds):
        order = CONTENDERS if round_no % 2 == 0 else tuple(reversed(CONTENDERS))
        for contender in order:
            setup = factory(contender)
            try:
                setup.request(min(200, requests))  # warm-up
                gc.collect()
                gc.disable()
                # CPU time of this process: other processes on a shared machine skew wall time.
                start = time.process_time()
                setup.request(requests)
                elapsed = time.process_time() - start
                gc.enable()
            finally:
                setup.teardown()
            samples[contender].append(elapsed / requests * 1e6)
    return samples


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--frameworks", default="flask,fastapi")
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]}, {args.rounds} interleaved rounds x "
          f"{args.requests} requests, process CPU time, median of per-round means")
    for framework in args.frameworks.split(","):
        missing = FRAMEWORKS[framework][1]()
        if missing:
            print(f"\n{framework}: skipped ({missing})")
            continue
        problems = {c: check(framework, c) for c in CONTENDERS}
        samples = bench(framework, args.rounds, args.requests)
        print(f"\n{framework}: per request, on top of the framework's OTel instrumentation "
              "(ratio: median over rounds of contender / otel in the same round)")
        print(f"  {'contender':<20} {'us/request':>11} {'vs otel':>9} {'added':>8} "
              f"{'IQR of ratio':>15}")
        for contender in CONTENDERS:
            ratios = sorted(c / o for c, o in zip(samples[contender], samples["otel"], strict=True))
            ratio = statistics.median(ratios)
            q1, _, q3 = statistics.quantiles(ratios, n=4)
            note = f"  !! {problems[contender]}" if problems[contender] else ""
            print(f"  {contender:<20} {statistics.median(samples[contender]):>11.1f} "
                  f"{ratio:>8.3f}x {(ratio - 1) * 100:>+7.1f}% {q1:>7.3f}-{q3:.3f}{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
