"""Realistic synthetic traces, written through the real OpenTelemetry SDK into OTLP/JSON files.

Three services (``frontend`` → ``api`` → ``billing``) run in three regions, each instance with
its own resource (``service.name``, ``service.version``, ``cloud.region``, ``host.name``,
``deployment.environment.name``), its own ``TracerProvider`` and its own
:class:`~prodlens.exporter.OTLPJsonFileSpanExporter` file, as separate processes would. Customers
(``enduser.id``) carry cohorts (``prodlens.cohort.plan``, ``.region``, ``.new_checkout``).
Each ``api`` region runs three hosts on 2.2.0 and two canary hosts on 2.3.0.

With ``planted=True``, requests of customers in ``prodlens.cohort.region=eu-west`` served by
``api`` ``service.version=2.3.0`` fail at ``planted_rate`` (20%); every other request fails at
``base_rate`` (0.5%). A failure is an ERROR on the ``api`` database span, propagated as ERROR to
the ``api`` server span and to the ``frontend`` client and server spans, as a real outage would.

Randomness comes from a private ``random.Random(seed)``; the global ``random`` module (which the
SDK draws trace and span ids from) is never seeded.

Example::

    from prodlens.analysis.synthetic import generate

    truth = generate("spans/", traces=2000, seed=1)
    print(truth.spans, sorted(truth.failed_customers)[:3])
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from prodlens.exporter import OTLPJsonFileSpanExporter

__all__ = ["REGIONS", "SyntheticTraces", "generate"]

REGIONS: Final = ("eu-west", "us-east", "ap-south")
PLANS: Final = ("free", "pro", "enterprise")
ROUTES: Final = (
    ("GET", "/api/cart"), ("POST", "/api/checkout"), ("GET", "/api/search"),
    ("GET", "/api/orders/{id}"), ("GET", "/api/profile"),
)
PLANTED_REGION: Final = "eu-west"
PLANTED_VERSION: Final = "2.3.0"
_SCOPE: Final = "prodlens.synthetic"
_MS: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class SyntheticTraces:
    """What was generated, for checking the analysis against ground truth.

    Attributes:
        paths: The OTLP/JSON files written (one per service instance).
        traces: Request traces generated.
        spans: Spans written.
        failed_traces: Traces whose request failed.
        failed_customers: Customers (``enduser.id``) with at least one failed request.
        customers: Every customer that made a request.
    """

    paths: tuple[Path, ...]
    traces: int
    spans: int
    failed_traces: int
    failed_customers: frozenset[str]
    customers: frozenset[str]


class _Instance:
    def __init__(self, directory: Path, service: str, version: str, region: str, host: str
                 ) -> None:
        resource = Resource.create({
            "service.name": service,
            "service.version": version,
            "cloud.region": region,
            "host.name": host,
            "deployment.environment.name": "production",
        })
        self.version = version
        self.path = directory / f"{host}.jsonl"
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(BatchSpanProcessor(
            OTLPJsonFileSpanExporter(self.path, max_bytes=0, backups=0),
            max_queue_size=1_000_000, max_export_batch_size=512, schedule_delay_millis=2000,
        ))
        self.tracer = self.provider.get_tracer(_SCOPE, "1.0")


def _remote(span: trace.Span) -> Context:
    context = span.get_span_context()
    remote = SpanContext(context.trace_id, context.span_id, is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(remote))


def generate(
    directory: str | os.PathLike[str],
    *,
    traces: int = 2000,
    seed: int = 0,
    planted: bool = True,
    base_rate: float = 0.005,
    planted_rate: float = 0.20,
    customers: int = 500,
    start_ns: int = 1_790_000_000_000_000_000,
    spacing_ns: int = 50 * _MS,
) -> SyntheticTraces:
    """Write ``traces`` request traces into ``directory`` (created) and return the truth.

    Args:
        directory: Where the per-instance ``.jsonl`` files go.
        traces: Number of requests.
        seed: Seed of the private random generator (the same seed gives the same requests).
        planted: Plant the partial failure (eu-west customers on api 2.3.0).
        base_rate: Failure probability of every other request.
        planted_rate: Failure probability inside the planted subgroup.
        customers: Number of distinct customers.
        start_ns: Start time of the first request (Unix nanoseconds).
        spacing_ns: Time between requests.
    """
    rng = random.Random(seed)
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    frontends = {r: _Instance(root, "frontend", "1.4.0", r, f"frontend-{r}") for r in REGIONS}
    billing = {r: _Instance(root, "billing", "0.9.1", r, f"billing-{r}") for r in REGIONS}
    apis = {
        r: [_Instance(root, "api", "2.2.0" if n <= 3 else PLANTED_VERSION, r, f"api-{r}-{n}")
            for n in range(1, 6)]
        for r in REGIONS
    }
    people = [
        (f"cust-{n:05d}", rng.choice(PLANS), rng.choice(REGIONS), rng.choice(("on", "off")))
        for n in range(customers)
    ]
    spans = 0
    failed_traces = 0
    failed_customers: set[str] = set()
    seen: set[str] = set()
    for index in range(traces):
        customer, plan, home, flag = rng.choice(people)
        anonymous = rng.random() < 0.05
        region = home if rng.random() < 0.85 else rng.choice(REGIONS)
        api = rng.choice(apis[region])
        method, route = rng.choice(ROUTES)
        in_subgroup = home == PLANTED_REGION and api.version == PLANTED_VERSION
        fails = rng.random() < (planted_rate if planted and in_subgroup else base_rate)
        identity: dict[str, str] = {} if anonymous else {
            "enduser.id": customer,
            "prodlens.cohort.plan": plan,
            "prodlens.cohort.region": home,
            "prodlens.cohort.new_checkout": flag,
        }
        if not anonymous:
            seen.add(customer)
        if fails:
            failed_traces += 1
            if not anonymous:
                failed_customers.add(customer)
        path = route.replace("{id}", str(rng.randrange(100_000)))
        t0 = start_ns + index * spacing_ns + rng.randrange(spacing_ns)
        spans += _request(frontends[region], api, billing[region], rng, t0, method, route, path,
                          identity, fails)
    for instance in [*frontends.values(), *billing.values(),
                     *(i for group in apis.values() for i in group)]:
        instance.provider.shutdown()
    paths = tuple(sorted(p for p in root.glob("*.jsonl")))
    return SyntheticTraces(paths, traces, spans, failed_traces, frozenset(failed_customers),
                           frozenset(seen))


def _request(frontend: _Instance, api: _Instance, billing: _Instance, rng: random.Random,
             t0: int, method: str, route: str, path: str, identity: dict[str, str],
             fails: bool) -> int:
    """One request through the services; returns the number of spans."""
    total = (20 + rng.randrange(200)) * _MS
    status = 502 if fails else 200
    server = frontend.tracer.start_span(
        f"{method} {route}", kind=SpanKind.SERVER, start_time=t0,
        attributes={"http.request.method": method, "http.route": route, "url.path": path,
                    "user_agent.original": f"Mozilla/5.0 build/{rng.randrange(10_000)}",
                    **identity},
    )
    ctx = trace.set_span_in_context(server)
    client = frontend.tracer.start_span(
        method, context=ctx, kind=SpanKind.CLIENT, start_time=t0 + _MS,
        attributes={"http.request.method": method, "server.address": "api.internal"},
    )
    api_server = api.tracer.start_span(
        f"{method} {route}", context=_remote(client), kind=SpanKind.SERVER,
        start_time=t0 + 2 * _MS,
        attributes={"http.request.method": method, "http.route": route, **identity},
    )
    api_ctx = trace.set_span_in_context(api_server)
    spans = 3
    work = api.tracer.start_span("load " + route.split("/")[2], context=api_ctx,
                                 start_time=t0 + 3 * _MS)
    work.end(end_time=t0 + 5 * _MS)
    db = api.tracer.start_span(
        "SELECT orders", context=api_ctx, kind=SpanKind.CLIENT, start_time=t0 + 5 * _MS,
        attributes={"db.system.name": "postgresql", "db.operation.name": "SELECT"},
    )
    spans += 2
    if fails:
        db.record_exception(TimeoutError("canceling statement due to statement timeout"),
                            timestamp=t0 + total // 2)
        db.set_status(Status(StatusCode.ERROR, "statement timeout"))
    db.end(end_time=t0 + total // 2)
    if route == "/api/checkout" and not fails:
        call = api.tracer.start_span("POST", context=api_ctx, kind=SpanKind.CLIENT,
                                     start_time=t0 + total // 2,
                                     attributes={"server.address": "billing.internal"})
        charge = billing.tracer.start_span(
            "POST /charge", context=_remote(call), kind=SpanKind.SERVER,
            start_time=t0 + total // 2 + _MS,
            attributes={"http.request.method": "POST", "http.route": "/charge", **identity},
        )
        card = billing.tracer.start_span("charge card", context=trace.set_span_in_context(charge),
                                         start_time=t0 + total // 2 + 2 * _MS)
        card.end(end_time=t0 + total - 4 * _MS)
        charge.set_attribute("http.response.status_code", 200)
        charge.end(end_time=t0 + total - 3 * _MS)
        call.set_attribute("http.response.status_code", 200)
        call.end(end_time=t0 + total - 2 * _MS)
        spans += 3
    for span, code in ((api_server, 500 if fails else 200), (client, status), (server, status)):
        span.set_attribute("http.response.status_code", code)
        if fails:
            span.set_status(Status(StatusCode.ERROR))
            span.set_attribute("error.type", str(code))
    api_server.end(end_time=t0 + total - 2 * _MS)
    client.end(end_time=t0 + total - _MS)
    server.end(end_time=t0 + total)
    return spans
