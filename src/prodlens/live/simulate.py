"""Fast simulation of ``watch`` over long stretches of span time, for false-alarm rates.

A simulated week at 100 requests per second is 60 million requests: too many to write as spans
and parse in a test or a benchmark. This module makes the *buckets* those requests would have
closed into (the same :class:`~prodlens.live._window.Bucket` values the engine's aggregates
yield) straight from the traffic model, then runs the real window, the engine's report, the
detector and an incident manager over them, evaluation by evaluation. Everything past span
decoding is the code ``watch`` runs.

Traffic: customers in ``plans`` x ``regions`` cells, requests spread evenly over cells and
``routes`` (each unit carries ``http.route`` and its alias ``span.name``); every unit fails with
``base_rate``, and units of the ``planted`` cell from ``onset`` on fail with ``planted_rate``.

Example::

    result = simulate(hours=1, rps=100, seed=1)
    print(result.false_incidents, result.evaluations)
"""

from __future__ import annotations

import math
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prodlens.incidents import Incident, IncidentManager, Ledger, NotifyOptions
from prodlens.live._detect import Detector
from prodlens.live._watch import WatchOptions, tested_options
from prodlens.live._window import Bucket, WindowAggregates

PLAN = "prodlens.cohort.plan"
REGION = "prodlens.cohort.region"
PLANS = ("free", "pro", "enterprise")
REGIONS = ("eu-west", "us-east", "ap-south", "sa-east")
ROUTES = ("/api/cart", "/api/checkout", "/api/search", "/api/profile", "/api/orders/{id}")


def _binomial(rng: random.Random, n: int, p: float) -> int:
    """A Binomial(n, p) draw by geometric skips: cost proportional to the successes."""
    if p <= 0 or n <= 0:
        return 0
    if p >= 1:
        return n
    log_q = math.log1p(-p)
    count = 0
    position = 0
    while True:
        position += int(math.log(1.0 - rng.random()) / log_q) + 1
        if position > n:
            return count
        count += 1


@dataclass
class Traffic:
    """The traffic model (see the module docstring)."""

    rps: float = 100.0
    base_rate: float = 0.005
    planted: tuple[str, str] | None = None  # (plan, region)
    planted_rate: float = 0.2
    planted_share: float | None = None  # share of traffic in the planted cell (default: even)
    onset: float = math.inf
    fixed: float = math.inf
    customers_per_cell: int = 200

    def bucket(self, rng: random.Random, start: float, every: float) -> tuple[Bucket, set[str]]:
        """One bucket of traffic, and the customers of failed planted units in it."""
        cells = [(plan, region) for plan in PLANS for region in REGIONS]
        total = self.rps * every
        bucket = Bucket(start)
        planted_customers: set[str] = set()
        for plan, region in cells:
            share = 1.0 / len(cells)
            is_planted = (plan, region) == self.planted
            if self.planted is not None and self.planted_share is not None:
                share = (self.planted_share if is_planted
                         else (1.0 - self.planted_share) / (len(cells) - 1))
            failing = is_planted and self.onset <= start < self.fixed
            rate = self.planted_rate if failing else self.base_rate
            per_route = total * share / len(ROUTES)
            for route in ROUTES:
                units = int(per_route) + (1 if rng.random() < per_route % 1 else 0)
                if not units:
                    continue
                failures = _binomial(rng, units, rate)
                customers = frozenset(
                    f"{plan}-{region}-{rng.randrange(self.customers_per_cell)}"
                    for _ in range(failures))
                if failing:
                    planted_customers |= customers
                signature = tuple(sorted(((PLAN, plan), (REGION, region), ("http.route", route),
                                          ("span.name", f"GET {route}"))))
                traces = frozenset(rng.getrandbits(62) for _ in range(failures))
                bucket.rows[signature] = (units, failures, customers, traces)
                bucket.units += units
                bucket.failures += failures
                bucket.failed_traces += failures
        return bucket, planted_customers


@dataclass
class SimulationResult:
    """What a simulation saw.

    Attributes:
        evaluations: Evaluations made.
        incidents: Every incident opened.
        false_incidents: Incidents whose subgroup is not (part of) the planted cell.
        first_open: Span time of the first incident on the planted cell, if any.
        planted_customers: Customers of failed planted units (the ground truth).
        notified_customers: Customers the incident on the planted cell holds.
    """

    evaluations: int = 0
    incidents: list[Incident] = field(default_factory=list)
    false_incidents: int = 0
    first_open: float | None = None
    planted_customers: set[str] = field(default_factory=set)
    notified_customers: set[str] = field(default_factory=set)


def _is_planted(incident: Incident, planted: tuple[str, str] | None) -> bool:
    if planted is None:
        return False
    cell = {PLAN: planted[0], REGION: planted[1]}
    return all(cell.get(key) == value for key, value in incident.subgroup.items())


def simulate(*, hours: float, traffic: Traffic | None = None, seed: int = 0,
             options: WatchOptions | None = None,
             on_evaluation: Callable[[float], None] | None = None) -> SimulationResult:
    """Run the window, report, detector and incident manager over simulated buckets.

    Args:
        hours: Span time simulated.
        traffic: The traffic model (clean 100 rps by default).
        seed: Seed of a private ``random.Random``.
        options: Window, evaluation and incident rules (``watch``'s defaults).
        on_evaluation: Called with each evaluation's span time (progress).
    """
    traffic = traffic or Traffic()
    options = options or WatchOptions()
    rng = random.Random(seed)
    result = SimulationResult()
    with tempfile.TemporaryDirectory() as scratch:
        ledger = Ledger(Path(scratch) / "ledger.sqlite3")
        try:
            manager = IncidentManager(ledger, NotifyOptions())
            detector = Detector(manager, options.detect, every=options.every)
            window = WindowAggregates(tested_options(options))
            recent = (WindowAggregates(tested_options(options))
                      if 0 < options.recent < options.window else None)
            start = 0.0
            while start < hours * 3600:
                bucket, customers = traffic.bucket(rng, start, options.every)
                result.planted_customers |= customers
                start += options.every
                window.add(bucket)
                window.evict_before(start - options.window)
                if recent is not None:
                    recent.add(bucket)
                    recent.evict_before(start - options.recent)
                evaluation = detector.evaluate(window, start, recent=recent)
                result.evaluations += 1
                for incident in evaluation.opened:
                    result.incidents.append(incident)
                    if _is_planted(incident, traffic.planted):
                        if result.first_open is None:
                            result.first_open = start
                    else:
                        result.false_incidents += 1
                if on_evaluation is not None:
                    on_evaluation(start)
            for incident in result.incidents:
                if _is_planted(incident, traffic.planted):
                    result.notified_customers |= set(ledger.customers(incident.id))
        finally:
            ledger.close()
    return result
