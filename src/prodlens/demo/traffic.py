"""The demo's traffic: a few hundred customers shopping concurrently, and what they saw.

Customers have a plan, a region, an app version and a feature-flag variant (the new checkout),
sent as request headers the way a mobile app or an API gateway would. Each session browses
products, fills a cart, looks at it and usually checks out. Everything random comes from one
``random.Random(seed)``, so the same seed plans the same traffic; the global ``random`` module
(which the OpenTelemetry SDK draws ids from) is never touched.

The driver records every response, so it knows the ground truth the analysis must find: which
customers saw a failure (HTTP 5xx, or no answer at all).

Example::

    import random
    from prodlens.demo.traffic import make_customers, plan_sessions, run_traffic

    rng = random.Random(7)
    sessions = plan_sessions(rng, make_customers(rng, 300), requests=3000)
    result = run_traffic("127.0.0.1", 8000, sessions, clients=8)
    print(result.sent, result.failed, len(result.failed_customers))
"""

from __future__ import annotations

import http.client
import json
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TextIO

__all__ = [
    "COHORT_HEADERS",
    "CUSTOMER_HEADER",
    "PLANTED",
    "TIMEOUT_CARD",
    "Customer",
    "Progress",
    "Request",
    "TrafficResult",
    "make_customers",
    "plan_sessions",
    "run_traffic",
]

CUSTOMER_HEADER: Final = "x-customer-id"
#: Cohort name (``prodlens.cohort.<name>``) → the request header that carries it.
COHORT_HEADERS: Final[Mapping[str, str]] = {
    "plan": "x-plan",
    "region": "x-region",
    "app_version": "x-app-version",
    "new_checkout": "x-flag-new-checkout",
}
#: The cohorts whose carts and checkouts the shop's bug breaks (see ``prodlens.demo.shop``).
PLANTED: Final[Mapping[str, str]] = {"new_checkout": "on", "region": "eu-west"}

_PLANS: Final = (("free", 0.6), ("pro", 0.3), ("enterprise", 0.1))
#: Sessions per customer relative to a free one: paying customers shop more.
_ACTIVITY: Final = {"free": 1.0, "pro": 2.0, "enterprise": 4.0}
_REGIONS: Final = (("us-east", 0.35), ("eu-west", 0.25), ("us-west", 0.2), ("ap-south", 0.2))
_APP_VERSIONS: Final = (("2.3.0", 0.2), ("2.4.0", 0.45), ("2.4.1", 0.35))
_NEW_CHECKOUT_SHARE: Final = 0.3
_PRODUCT_IDS: Final = (1, 2, 3, 4, 5, 6)
#: The payment sandbox's card that times out (``prodlens.demo.shop.TIMEOUT_CARD``).
TIMEOUT_CARD: Final = "tok_gateway_timeout"
_TIMEOUT_CARD_SHARE: Final = 0.02
_REQUEST_TIMEOUT: Final = 10.0


@dataclass(frozen=True, slots=True)
class Customer:
    """One customer and the cohorts their requests carry."""

    id: str
    cohorts: Mapping[str, str]

    def headers(self) -> dict[str, str]:
        """The identity headers of this customer's requests."""
        headers = {CUSTOMER_HEADER: self.id}
        headers.update({COHORT_HEADERS[name]: value for name, value in self.cohorts.items()})
        return headers

    @property
    def planted(self) -> bool:
        """Whether the shop's planted bug hits this customer's carts and checkouts."""
        return all(self.cohorts.get(name) == value for name, value in PLANTED.items())


@dataclass(frozen=True, slots=True)
class Request:
    """One planned request."""

    customer: Customer
    method: str
    path: str
    body: bytes | None = None


@dataclass(slots=True)
class TrafficResult:
    """What the customers saw.

    Attributes:
        sent: Requests sent (answered or not).
        statuses: Responses by HTTP status; 0 counts requests that got no answer.
        customers: Every customer that made a request.
        failed_customers: Customer → failed requests (HTTP 5xx or no answer).
        planted_customers: Customers in the subgroup the shop's bug hits (:data:`PLANTED`).
        seconds: Wall time of the traffic.
    """

    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    customers: set[str] = field(default_factory=set)
    failed_customers: Counter[str] = field(default_factory=Counter)
    planted_customers: set[str] = field(default_factory=set)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        """Requests that failed (HTTP 5xx or no answer)."""
        return sum(count for status, count in self.statuses.items() if _failed(status))

    @property
    def unanswered(self) -> int:
        """Requests that got no HTTP response."""
        return self.statuses.get(0, 0)

    def ground_truth(self) -> dict[str, object]:
        """A JSON-ready summary: what the analysis should find."""
        return {
            "requests": self.sent,
            "failed_requests": self.failed,
            "statuses": {str(status): count for status, count in sorted(self.statuses.items())},
            "customers": len(self.customers),
            "planted": {f"prodlens.cohort.{name}": value for name, value in PLANTED.items()},
            "failed_customers": dict(sorted(self.failed_customers.items())),
            "failed_customers_in_planted_subgroup": sorted(
                set(self.failed_customers) & self.planted_customers),
        }

    def write_ground_truth(self, path: Path) -> None:
        """Write :meth:`ground_truth` as JSON."""
        path.write_text(json.dumps(self.ground_truth(), indent=2) + "\n", encoding="utf-8")


def _failed(status: int) -> bool:
    return status == 0 or status >= 500


def _pick(rng: random.Random, weighted: Sequence[tuple[str, float]]) -> str:
    values = [value for value, _ in weighted]
    return rng.choices(values, [weight for _, weight in weighted])[0]


def make_customers(rng: random.Random, count: int) -> list[Customer]:
    """``count`` customers with plans, regions, app versions and flag variants drawn by ``rng``."""
    customers = []
    for number in range(1, count + 1):
        cohorts = {
            "plan": _pick(rng, _PLANS),
            "region": _pick(rng, _REGIONS),
            "app_version": _pick(rng, _APP_VERSIONS),
            "new_checkout": "on" if rng.random() < _NEW_CHECKOUT_SHARE else "off",
        }
        customers.append(Customer(f"cus_{number:04d}", cohorts))
    return customers


def _session(rng: random.Random, customer: Customer, timeout_share: float) -> list[Request]:
    """Browse, fill the cart, look at it, usually check out."""
    requests = [Request(customer, "GET", "/api/products")]
    for _ in range(rng.randint(0, 2)):
        requests.append(Request(customer, "GET", f"/api/products/{rng.choice(_PRODUCT_IDS)}"))
    for _ in range(rng.randint(1, 2)):
        body = {"product": rng.choice(_PRODUCT_IDS), "quantity": rng.randint(1, 3)}
        requests.append(Request(customer, "POST", "/api/cart/items", json.dumps(body).encode()))
    if rng.random() < 0.7:
        requests.append(Request(customer, "GET", "/api/cart"))
    if rng.random() < 0.6:
        card = TIMEOUT_CARD if rng.random() < timeout_share else "tok_visa"
        requests.append(Request(customer, "POST", "/api/checkout",
                                json.dumps({"card": card}).encode()))
    return requests


def plan_sessions(rng: random.Random, customers: Sequence[Customer], requests: int, *,
                  timeout_share: float = _TIMEOUT_CARD_SHARE) -> list[list[Request]]:
    """Shopping sessions totalling exactly ``requests`` requests (the last one is cut short);
    ``timeout_share`` of checkouts use the card the payment gateway times out on."""
    weights = [_ACTIVITY[customer.cohorts["plan"]] for customer in customers]
    sessions: list[list[Request]] = []
    planned = 0
    while planned < requests:
        customer = rng.choices(customers, weights)[0]
        session = _session(rng, customer, timeout_share)[: requests - planned]
        sessions.append(session)
        planned += len(session)
    return sessions


def _can_encode(text: str, stream: TextIO) -> bool:
    try:
        text.encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


class Progress:
    """A one-line progress bar on a terminal; silent when the stream is not one.

    Example::

        progress = Progress(3000, "traffic")
        progress.update(1500)
        progress.close()
    """

    def __init__(self, total: int, label: str, stream: TextIO | None = None,
                 width: int = 30) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.started = time.monotonic()
        try:
            self.enabled = self.stream.isatty()
        except (AttributeError, ValueError):
            self.enabled = False
        self.blocks = "█░" if _can_encode("█░", self.stream) else "#-"

    def update(self, done: int) -> None:
        """Redraw the bar for ``done`` of ``total``."""
        if not self.enabled:
            return
        filled = self.width * min(done, self.total) // self.total
        elapsed = max(time.monotonic() - self.started, 1e-6)
        bar = self.blocks[0] * filled + self.blocks[1] * (self.width - filled)
        self.stream.write(f"\r  {self.label:<8} {bar} {done:>6,}/{self.total:,} "
                          f"{done / elapsed:>5,.0f} req/s")
        self.stream.flush()

    def close(self) -> None:
        """Erase the bar."""
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()


class _Client:
    """One concurrent client: a keep-alive connection, reopened after any error."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.connection: http.client.HTTPConnection | None = None

    def send(self, request: Request) -> int:
        """Send one request; its HTTP status, or 0 when no answer came.

        Never retried: a retried request the shop had already served would be counted once
        here and twice in the spans.
        """
        headers = request.customer.headers()
        if request.body is not None:
            headers["content-type"] = "application/json"
        if self.connection is None:
            self.connection = http.client.HTTPConnection(self.host, self.port,
                                                         timeout=_REQUEST_TIMEOUT)
        try:
            self.connection.request(request.method, request.path, request.body, headers)
            response = self.connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            return 0
        if response.will_close:
            self.close()
        return response.status

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def run_traffic(host: str, port: int, sessions: Sequence[Sequence[Request]], *, clients: int = 8,
                progress: Callable[[int], None] | None = None,
                stop: threading.Event | None = None, deadline: float = 120.0,
                on_response: Callable[[Request, int, float], None] | None = None
                ) -> TrafficResult:
    """Play the sessions against ``host:port`` from ``clients`` threads, each session in order.

    Args:
        host: The shop's address (127.0.0.1).
        port: The shop's port.
        sessions: From :func:`plan_sessions`.
        clients: Concurrent clients (threads, each with one keep-alive connection).
        progress: Called from this thread with the number of requests answered so far.
        stop: Set it to stop early (the clients finish their current request).
        deadline: Seconds after which the traffic stops, whatever is left.
        on_response: Called from the client threads with each request, its status and the
            wall-clock time (Unix seconds) it was sent.

    Returns:
        What the customers saw.
    """
    stop = stop or threading.Event()
    result = TrafficResult()
    lock = threading.Lock()
    queue: Iterator[Sequence[Request]] = iter(sessions)

    def next_session() -> Sequence[Request] | None:
        with lock:
            return next(queue, None)

    def client_loop() -> None:
        client = _Client(host, port)
        try:
            while not stop.is_set():
                session = next_session()
                if session is None:
                    return
                for request in session:
                    if stop.is_set():
                        return
                    sent_at = time.time()
                    status = client.send(request)
                    customer = request.customer
                    with lock:
                        result.sent += 1
                        result.statuses[status] += 1
                        result.customers.add(customer.id)
                        if customer.planted:
                            result.planted_customers.add(customer.id)
                        if _failed(status):
                            result.failed_customers[customer.id] += 1
                    if on_response is not None:
                        on_response(request, status, sent_at)
        finally:
            client.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client_loop, name=f"demo-client-{n}", daemon=True)
               for n in range(max(1, clients))]
    try:
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            if time.monotonic() - started > deadline:
                stop.set()
            if progress is not None:
                progress(result.sent)
            time.sleep(0.1)
    finally:
        stop.set()  # on KeyboardInterrupt too: the clients stop after their current request
        for thread in threads:
            thread.join(_REQUEST_TIMEOUT + 1)
        result.seconds = time.monotonic() - started
    if progress is not None:
        progress(result.sent)
    return result
