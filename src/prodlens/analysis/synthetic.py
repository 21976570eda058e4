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

__all__ = ["REGIONS", "MeshTraces", "SyntheticTraces", "generate", "generate_mesh"]

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
    def __init__(self, directory: Path, service: str, version: str, region: str, host: str,
                 extra: dict[str, str] | None = None) -> None:
        resource = Resource.create({
            "service.name": service,
            "service.version": version,
            "cloud.region": region,
            "host.name": host,
            "deployment.environment.name": "production",
            **(extra or {}),
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


# -- a five-service mesh: what real traces look like --------------------------------------------

CANARY_VERSION: Final = "1.5.0"
SECOND_INCIDENT: Final = {"prodlens.cohort.region": "ap-south", "prodlens.cohort.plan": "free"}


@dataclass(frozen=True, slots=True)
class MeshTraces:
    """What :func:`generate_mesh` wrote, for checking the analysis against ground truth.

    Attributes:
        paths: The OTLP/JSON files written (one per host).
        traces: Request traces generated.
        spans: Spans written.
        failed_traces: Requests the customer saw fail (the frontend answered 5xx).
        requests: Customer -> requests (traces) made.
        failures: Customer -> requests that failed, for customers with at least one.
        accounts: Customer -> their ``prodlens.cohort.account`` (an id-like cohort).
        handled: Requests with an error that was handled below the entry (a 404 from
            inventory, a retried database deadlock): the customer saw a success.
    """

    paths: tuple[Path, ...]
    traces: int
    spans: int
    failed_traces: int
    requests: dict[str, int]
    failures: dict[str, int]
    accounts: dict[str, str]
    handled: int


class _Mesh:
    """The hosts of the mesh, each its own resource, provider and file."""

    def __init__(self, root: Path, payments_hosts: int) -> None:
        def host(service: str, version: str, region: str, name: str) -> _Instance:
            # k8s.deployment.name names the same units as service.name: an alias
            return _Instance(root, service, version, region, name,
                             {"k8s.deployment.name": service})

        self.frontend = {r: host("frontend", "3.1.0", r, f"frontend-{r}") for r in REGIONS}
        self.orders = {r: [host("orders", "2.0.0", r, f"orders-{r}-{n}") for n in (1, 2)]
                       for r in REGIONS}
        # the canary is one host per region running 1.5.0
        self.payments = {
            r: [host("payments", "1.4.0", r, f"payments-{r}-{n}")
                for n in range(1, payments_hosts)]
            + [host("payments", CANARY_VERSION, r, f"payments-{r}-canary")]
            for r in REGIONS
        }
        self.inventory = {r: host("inventory", "0.7.2", r, f"inventory-{r}") for r in REGIONS}
        self.search = {r: host("search", "5.0.1", r, f"search-{r}") for r in REGIONS}

    def instances(self) -> list[_Instance]:
        out = [*self.frontend.values(), *self.inventory.values(), *self.search.values()]
        for group in (*self.orders.values(), *self.payments.values()):
            out.extend(group)
        return out


def generate_mesh(
    directory: str | os.PathLike[str],
    *,
    traces: int = 4000,
    seed: int = 0,
    canary: bool = True,
    canary_rate: float = 0.25,
    second_incident: bool = False,
    second_rate: float = 0.30,
    base_rate: float = 0.004,
    not_found_rate: float = 0.15,
    deadlock_rate: float = 0.05,
    customers: int = 400,
    accounts: int = 120,
    payments_hosts: int = 4,
    start_ns: int = 1_790_000_000_000_000_000,
    spacing_ns: int = 20 * _MS,
) -> MeshTraces:
    """Write ``traces`` requests through five services, as real traces look, and the truth.

    ``frontend`` serves ``POST /api/checkout`` (→ ``orders`` ``POST /orders`` → ``payments``
    ``POST /charge``), ``GET /api/cart`` (→ ``orders`` ``GET /cart`` → ``inventory``
    ``GET /items/{id}``) and ``GET /api/search`` (→ ``search`` ``GET /search``). Every hop is a
    client span and a server span with a remote parent in another process (file); each host
    has its own resource (``host.name``, ``service.version``, ``cloud.region``,
    ``k8s.deployment.name``). Id-like attributes: ``url.path``, ``client.address``,
    ``prodlens.cohort.account`` (``accounts`` values).

    What fails:

    * ``canary``: the payments canary (``service.version=1.5.0``, one host of
      ``payments_hosts`` per region) fails ``canary_rate`` of
      its charges. The error propagates: payments answers 500, orders 502, frontend 502, each
      root span ERROR; so one failed request is three failed units, every one of them
      ``http.request.method=POST`` on ``/api/checkout``'s path.
    * ``second_incident``: search fails ``second_rate`` of requests of customers in
      ``prodlens.cohort.region=ap-south`` on ``prodlens.cohort.plan=free`` (two failed units).
    * every request fails at ``base_rate`` in its last service.
    * handled errors the customer never sees: inventory answers 404 on ``not_found_rate`` of
      cart requests (the orders client span is ERROR, as the HTTP conventions say; orders
      answers 200), and orders' first database insert hits a deadlock on ``deadlock_rate`` of
      checkouts (the database span is ERROR, the retry succeeds).

    Args:
        directory: Where the per-host ``.jsonl`` files go.
        traces: Number of requests.
        seed: Seed of the private random generator.
        canary: Plant the payments canary failure.
        canary_rate: Its failure probability.
        second_incident: Plant the search failure for free ap-south customers.
        second_rate: Its failure probability.
        base_rate: Failure probability of every other request.
        not_found_rate: Share of cart requests whose item lookup answers 404 (handled).
        deadlock_rate: Share of checkouts whose first database insert fails (retried).
        customers: Distinct customers (``enduser.id``).
        accounts: Distinct ``prodlens.cohort.account`` values (past 50: id-like).
        payments_hosts: Payments hosts per region, the canary included.
        start_ns: Start time of the first request (Unix nanoseconds).
        spacing_ns: Time between requests.
    """
    rng = random.Random(seed)
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    mesh = _Mesh(root, payments_hosts)
    people = [
        (f"cust-{n:05d}", rng.choice(PLANS), rng.choice(REGIONS),
         f"acct-{rng.randrange(accounts):04d}")
        for n in range(customers)
    ]
    requests: dict[str, int] = {}
    failures: dict[str, int] = {}
    spans = failed_traces = handled = 0
    for index in range(traces):
        customer, plan, home, account = rng.choice(people)
        identity = {"enduser.id": customer, "prodlens.cohort.plan": plan,
                    "prodlens.cohort.region": home, "prodlens.cohort.account": account}
        requests[customer] = requests.get(customer, 0) + 1
        t0 = start_ns + index * spacing_ns + rng.randrange(spacing_ns)
        call = _Call(rng, t0, identity)
        draw = rng.random()
        if draw < 0.35:
            payments = rng.choice(mesh.payments[home])
            rate = canary_rate if canary and payments.version == CANARY_VERSION else base_rate
            failed, was_handled = call.checkout(mesh.frontend[home], rng.choice(mesh.orders[home]),
                                                payments, rng.random() < rate,
                                                rng.random() < deadlock_rate)
        elif draw < 0.70:
            failed, was_handled = call.cart(mesh.frontend[home], rng.choice(mesh.orders[home]),
                                            mesh.inventory[home], rng.random() < base_rate,
                                            rng.random() < not_found_rate)
        else:
            hit = second_incident and all(identity[k] == v for k, v in SECOND_INCIDENT.items())
            failed = rng.random() < (second_rate if hit else base_rate)
            was_handled = call.search(mesh.frontend[home], mesh.search[home], failed)
        spans += call.spans
        handled += was_handled
        if failed:
            failed_traces += 1
            failures[customer] = failures.get(customer, 0) + 1
    for instance in mesh.instances():
        instance.provider.shutdown()
    return MeshTraces(tuple(sorted(root.glob("*.jsonl"))), traces, spans, failed_traces,
                      requests, failures, {p[0]: p[3] for p in people}, handled)


class _Call:
    """One request's spans, hop by hop; ``spans`` counts what was written."""

    def __init__(self, rng: random.Random, t0: int, identity: dict[str, str]) -> None:
        self.rng = rng
        self.t = t0
        self.identity = identity
        self.spans = 0

    def _tick(self) -> int:
        self.t += _MS
        return self.t

    def _server(self, instance: _Instance, method: str, route: str, path: str,
                parent: trace.Span | None, **extra: str) -> trace.Span:
        self.spans += 1
        return instance.tracer.start_span(
            f"{method} {route}", context=_remote(parent) if parent is not None else None,
            kind=SpanKind.SERVER, start_time=self._tick(),
            attributes={"http.request.method": method, "http.route": route, "url.path": path,
                        "client.address": f"10.{self.rng.randrange(256)}.{self.rng.randrange(256)}"
                                          f".{self.rng.randrange(256)}",
                        **extra, **self.identity},
        )

    def _client(self, instance: _Instance, parent: trace.Span, method: str, address: str
                ) -> trace.Span:
        self.spans += 1
        return instance.tracer.start_span(
            method, context=trace.set_span_in_context(parent), kind=SpanKind.CLIENT,
            start_time=self._tick(),
            attributes={"http.request.method": method, "server.address": address},
        )

    def _db(self, instance: _Instance, parent: trace.Span, statement: str, error: bool) -> None:
        self.spans += 1
        db = instance.tracer.start_span(
            statement, context=trace.set_span_in_context(parent), kind=SpanKind.CLIENT,
            start_time=self._tick(),
            attributes={"db.system.name": "postgresql",
                        "db.operation.name": statement.split()[0]},
        )
        if error:
            db.record_exception(RuntimeError("deadlock detected"), timestamp=self._tick())
            db.set_status(Status(StatusCode.ERROR, "deadlock detected"))
            db.set_attribute("error.type", "40P01")
        db.end(end_time=self._tick())

    def _end(self, span: trace.Span, code: int, client: bool = False) -> None:
        span.set_attribute("http.response.status_code", code)
        # HTTP conventions: a server span is ERROR on 5xx; a client span on 4xx and 5xx
        if code >= 500 or (client and code >= 400):
            span.set_status(Status(StatusCode.ERROR))
            span.set_attribute("error.type", str(code))
        span.end(end_time=self._tick())

    def checkout(self, frontend: _Instance, orders: _Instance, payments: _Instance,
                 fails: bool, deadlock: bool) -> tuple[bool, bool]:
        order_id = self.rng.randrange(1_000_000)
        server = self._server(frontend, "POST", "/api/checkout", "/api/checkout", None)
        to_orders = self._client(frontend, server, "POST", "orders.internal")
        order = self._server(orders, "POST", "/orders", f"/orders/{order_id}", to_orders)
        if deadlock:
            self._db(orders, order, "INSERT orders", True)
        self._db(orders, order, "INSERT orders", False)
        to_payments = self._client(orders, order, "POST", "payments.internal")
        charge = self._server(payments, "POST", "/charge", f"/charge/{order_id}", to_payments)
        self._db(payments, charge, "UPDATE balances", False)
        self._end(charge, 500 if fails else 200)
        self._end(to_payments, 500 if fails else 200, client=True)
        self._end(order, 502 if fails else 201)
        self._end(to_orders, 502 if fails else 201, client=True)
        self._end(server, 502 if fails else 201)
        return fails, deadlock and not fails

    def cart(self, frontend: _Instance, orders: _Instance, inventory: _Instance, fails: bool,
             not_found: bool) -> tuple[bool, bool]:
        item = self.rng.randrange(100_000)
        server = self._server(frontend, "GET", "/api/cart", "/api/cart", None)
        to_orders = self._client(frontend, server, "GET", "orders.internal")
        cart = self._server(orders, "GET", "/cart", "/cart", to_orders)
        lookup = self._client(orders, cart, "GET", "inventory.internal")
        items = self._server(inventory, "GET", "/items/{id}", f"/items/{item}", lookup)
        code = 500 if fails else 404 if not_found else 200
        self._end(items, code)
        self._end(lookup, code, client=True)  # a 404 marks the client span ERROR: orders handles it
        self._end(cart, 502 if fails else 200)
        self._end(to_orders, 502 if fails else 200, client=True)
        self._end(server, 502 if fails else 200)
        return fails, not_found and not fails

    def search(self, frontend: _Instance, search: _Instance, fails: bool) -> bool:
        server = self._server(frontend, "GET", "/api/search", "/api/search", None)
        to_search = self._client(frontend, server, "GET", "search.internal")
        found = self._server(search, "GET", "/search", "/search", to_search)
        self._end(found, 500 if fails else 200)
        self._end(to_search, 502 if fails else 200, client=True)
        self._end(server, 502 if fails else 200)
        return False
