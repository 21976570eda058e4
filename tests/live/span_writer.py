"""A real writer for the live tests: the OpenTelemetry SDK and the ``prodlens_file`` exporter
append spans to a directory, with span times chosen by the test (faster than real time).

Traffic: customers with a plan and a region; each request is a SERVER root span (``http.route``,
``enduser.id``, cohorts) with one database child span. A failure is an ERROR on both.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind
from opentelemetry.trace.status import Status, StatusCode

from prodlens.exporter import OTLPJsonFileSpanExporter

PLANS = ("free", "pro", "enterprise")
REGIONS = ("eu-west", "us-east", "ap-south")
ROUTES = ("/api/cart", "/api/checkout", "/api/search", "/api/profile")
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z

#: (customer, plan, region, route) -> failure probability
FailureRule = Callable[[str, str, str, str], float]


@dataclass
class Failure:
    at: float
    customer: str
    plan: str
    region: str
    route: str


@dataclass
class SpanWriter:
    directory: Path
    seed: int
    customers: int = 400
    base_rate: float = 0.005
    max_bytes: int = 0
    failures: list[Failure] = field(default_factory=list)
    requests: int = 0
    #: Requests on this route take 30 ms at the root; all others 10 ms.
    slow_route: str | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.population = [
            (f"cust-{number:04d}", self.rng.choice(PLANS), self.rng.choice(REGIONS))
            for number in range(self.customers)
        ]
        self.directory.mkdir(parents=True, exist_ok=True)
        self.exporter = OTLPJsonFileSpanExporter(str(self.directory / "spans.jsonl"),
                                                 max_bytes=self.max_bytes, backups=3)
        self.provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
        self.processor = BatchSpanProcessor(self.exporter, max_queue_size=100_000,
                                            max_export_batch_size=512, schedule_delay_millis=60_000)
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("tests.live")

    def write(self, start: float, stop: float, rps: float,
              rule: FailureRule | None = None) -> None:
        """Requests from ``start`` to ``stop`` (seconds after T0) at ``rps``, flushed each second."""
        second = start
        while second < stop:
            for _ in range(int(rps)):
                self._request(T0 + second + self.rng.random(), rule)
            self.processor.force_flush()
            second += 1

    def _request(self, at: float, rule: FailureRule | None) -> None:
        customer, plan, region = self.rng.choice(self.population)
        route = self.rng.choice(ROUTES)
        rate = rule(customer, plan, region, route) if rule is not None else self.base_rate
        failed = self.rng.random() < rate
        start = int(at * 1e9)
        root = self.tracer.start_span(
            f"GET {route}", kind=SpanKind.SERVER, start_time=start,
            attributes={"http.route": route, "enduser.id": customer,
                        "prodlens.cohort.plan": plan, "prodlens.cohort.region": region,
                        "http.response.status_code": 500 if failed else 200})
        with trace.use_span(root, end_on_exit=False):
            child = self.tracer.start_span("SELECT orders", kind=SpanKind.CLIENT,
                                           start_time=start + 1_000_000)
            if failed:
                child.set_status(Status(StatusCode.ERROR, "db timeout"))
            child.end(end_time=start + 5_000_000)
        if failed:
            root.set_status(Status(StatusCode.ERROR))
            self.failures.append(Failure(at, customer, plan, region, route))
        root.end(end_time=start + (30_000_000 if route == self.slow_route else 10_000_000))
        self.requests += 1

    def close(self) -> None:
        self.provider.shutdown()


def planted(plan: str, region: str, rate: float, base: float = 0.005) -> FailureRule:
    """``plan`` ∧ ``region`` fails at ``rate``; everything else at ``base``."""
    def rule(customer: str, p: str, r: str, route: str) -> float:
        return rate if (p == plan and r == region) else base
    return rule
