"""Ranking subgroups, shared by both engines: they count, this module decides.

1. Every candidate attribute with 1 to ``max_values`` distinct values, and each of its values,
   is a subgroup; so is *absence* (``key (absent)``: the units without the attribute) when only
   some units have it. One with at least ``min_units`` units and a non-empty rest is *tested*.
2. Each tested subgroup gets a one-sided Fisher exact p-value on its counts divided by its own
   design effect: its failed units per failed trace. One failed request fails a unit in every
   service on its path, so failures come in clusters (traces); an attribute present on every
   unit of the path (``http.request.method=POST``) has about as many failed units per failed
   trace as there are services, and its effective sample is that many times smaller, while the
   culprit's (``service.version=1.5.0`` of one service) is not. This is the first-order
   Rao-Scott correction, per subgroup. p-values are multiplied by the number of distinct
   subgroups tested (Bonferroni).
3. Subgroups with exactly the same units (``service.name=payments`` and ``host.name=pay-1`` when
   that host is all of payments) are *aliases*: one test, one finding, listing every
   description. Equal counts flag candidates; the count of both together confirms.
4. Pairs are formed from distinct single subgroups that fail more than the rest, strongest
   first, until ``top_pairs * (top_pairs - 1) / 2`` testable pairs are tested; a pair with
   the units of one of its parts (a canary host and its version) or none is no test and
   takes no slot, so one incident's many descriptions leave room for the next incident's. A pair is
   reported only as an *interaction*: when, beyond its own test, a one-sided Fisher test
   within each part (the pair against the part's other units) shows that it fails more often
   than that part, Bonferroni-adjusted over the pairs tested.
5. A finding needs ``min_failures`` failures, a rate above the rest's and an adjusted p-value at
   or below ``alpha``. Findings are listed by adjusted p-value (its logarithm, so values below
   float range still order), then by higher rate, then by label: one ordering, nothing moved.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Final, Protocol

from prodlens.analysis._model import (
    ABSENT,
    AffectedCustomer,
    Finding,
    InputSummary,
    Report,
    SliceOptions,
    is_candidate_key,
)
from prodlens.analysis._stats import bonferroni, design_effect_log_p
from prodlens.analysis._table import Counts

Item = tuple[str, str]
#: Single subgroups considered for pairs at most, and equal-count pairs checked for aliases.
_PAIR_POOL: Final = 64
_ALIAS_CHECKS: Final = 2_000
#: Names an alias is shown by first, when it has as few values as the others.
_PREFERRED: Final = ("service.name", "service.version", "deployment.environment.name",
                     "cloud.region", "http.route", "span.name")
#: Pairs counted per query while the budget lasts.
_PAIR_BATCH: Final = 64


class Aggregates(Protocol):
    """What an engine answers; implemented in-process and as ClickHouse SQL."""

    pseudonymised: bool

    def totals(self) -> tuple[int, int, int]:
        """(units, failed units, distinct traces among the failed units)."""

    def key_cardinality(self) -> dict[str, int]:
        """Distinct values per candidate attribute."""

    def singles(self, keys: Iterable[str]) -> dict[Item, Counts]:
        """Counts per value of the given attributes."""

    def subgroups(self, subgroups: Sequence[tuple[Item, ...]]) -> list[Counts]:
        """Counts (with customers) per subgroup; a value :data:`ABSENT` means "without"."""

    def affected(self) -> list[AffectedCustomer]:
        """Customers with failures."""


class _Tested:
    """A tested subgroup: its counts, its own design effect and its log p-value."""

    __slots__ = ("aliases", "design_effect", "failures", "items", "log_p", "traces", "units")

    def __init__(self, items: tuple[Item, ...], counts: Counts, total: int,
                 total_failures: int) -> None:
        self.items = items
        self.units = counts.units
        self.failures = counts.failures
        self.traces = counts.traces
        self.design_effect = (max(1.0, counts.failures / counts.traces)
                              if counts.traces else 1.0)
        self.log_p = design_effect_log_p(self.failures, self.units, total_failures, total,
                                         self.design_effect)
        self.aliases: list[tuple[Item, ...]] = []

    def rate(self) -> float:
        return self.failures / self.units if self.units else 0.0

    def rest_rate(self, total: int, total_failures: int) -> float:
        rest = total - self.units
        return (total_failures - self.failures) / rest if rest else 0.0

    def label(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.items)


def _merge_aliases(rising: list[_Tested], aggregates: Aggregates,
                   cardinality: dict[str, int]) -> list[_Tested]:
    """One :class:`_Tested` per distinct unit set, the others listed as its aliases.

    The description kept first is the most general: a present value over absence, then the
    attribute with fewer values (``service.version`` over ``host.name``), then the
    conventional names of :data:`_PREFERRED` in their order, then by name.
    """
    by_counts: dict[tuple[int, int, int], list[_Tested]] = {}
    for tested in rising:
        by_counts.setdefault((tested.units, tested.failures, tested.traces), []).append(tested)
    checks: list[tuple[_Tested, _Tested]] = []
    for group in by_counts.values():
        for index, first in enumerate(group):
            for second in group[index + 1:]:
                checks.append((first, second))
    if not checks or len(checks) > _ALIAS_CHECKS:
        return rising
    both = aggregates.subgroups([(a.items[0], b.items[0]) for a, b in checks])
    parent: dict[int, _Tested] = {}

    def find(tested: _Tested) -> _Tested:
        while id(tested) in parent:
            tested = parent[id(tested)]
        return tested

    for (first, second), counts in zip(checks, both, strict=True):
        if counts.units == first.units == second.units:
            a, b = find(first), find(second)
            if a is not b:
                parent[id(b)] = a

    def preference(tested: _Tested) -> tuple[bool, int, int, tuple[Item, ...]]:
        key, value = tested.items[0]
        rank = _PREFERRED.index(key) if key in _PREFERRED else len(_PREFERRED)
        return value == ABSENT, cardinality.get(key, 0), rank, tested.items

    classes: dict[int, list[_Tested]] = {}
    for tested in rising:
        classes.setdefault(id(find(tested)), []).append(tested)
    merged = []
    for members in classes.values():
        members.sort(key=preference)
        head = members[0]
        head.aliases = [member.items for member in members[1:]]
        merged.append(head)
    return merged


def _pair_candidates(distinct: list[_Tested]) -> Iterator[tuple[Item, Item]]:
    """Pairs of distinct singles of different attributes, those among the strongest first."""
    pool = distinct[:_PAIR_POOL]
    for j in range(1, len(pool)):
        for i in range(j):
            a, b = pool[i].items[0], pool[j].items[0]
            if a[0] != b[0]:
                yield (a, b) if a < b else (b, a)


def _interaction_log_p(pair: _Tested, parts: Sequence[_Tested]) -> float:
    """log p that the pair fails more often than each part's other units: the larger of the
    one-sided Fisher tests within each part (pair vs. part), with the pair's design effect."""
    worst = -math.inf
    for part in parts:
        if pair.units >= part.units:
            return 0.0  # the pair is the part: it says nothing more
        worst = max(worst, design_effect_log_p(pair.failures, pair.units, part.failures,
                                               part.units, pair.design_effect))
    return worst


def build_report(aggregates: Aggregates, options: SliceOptions, summary: InputSummary) -> Report:
    """Test every subgroup the aggregates know of and return the report."""
    total, total_failures, failed_traces = aggregates.totals()
    design_effect = max(1.0, total_failures / failed_traces) if failed_traces else 1.0
    cardinality = aggregates.key_cardinality()
    keys = sorted(
        key for key, count in cardinality.items()
        if 1 <= count <= options.max_values
        and is_candidate_key(key, options.exclude, options.customer_attributes)
    )
    skipped = tuple(sorted(key for key, count in cardinality.items()
                           if count > options.max_values))
    if not total or not total_failures:
        return Report(total, total_failures, (), 0, skipped, options.unit, summary,
                      aggregates.pseudonymised, failure=options.failure)

    def testable(units: int) -> bool:
        return options.min_units <= units < total

    counts = aggregates.singles(keys)
    coverage: dict[str, int] = {}
    for (key, _), found in counts.items():
        coverage[key] = coverage.get(key, 0) + found.units
    absent = [((key, ABSENT),) for key in keys
              if testable(total - coverage.get(key, 0)) and coverage.get(key, 0)]
    if absent:
        counts.update((items[0], found) for items, found
                      in zip(absent, aggregates.subgroups(absent), strict=True))
    singles = [_Tested((item,), found, total, total_failures)
               for item, found in sorted(counts.items()) if testable(found.units)]

    def rising(tested: _Tested) -> bool:
        return (tested.failures >= options.min_failures
                and tested.rate() > tested.rest_rate(total, total_failures))

    up = [tested for tested in singles if rising(tested)]
    distinct = sorted(_merge_aliases(up, aggregates, cardinality),
                      key=lambda t: (t.log_p, t.items))
    merged_away = len(up) - len(distinct)
    by_item = {tested.items[0]: tested for tested in distinct}

    budget = options.top_pairs * (options.top_pairs - 1) // 2
    pairs: list[_Tested] = []
    candidates = _pair_candidates(distinct)
    while len(pairs) < budget:
        batch = list(itertools.islice(candidates, max(budget - len(pairs), _PAIR_BATCH)))
        if not batch:
            break
        for items, found in zip(batch, aggregates.subgroups(batch), strict=True):
            # A pair that is one of its parts (a host of the canary version, with that
            # version) or empty says nothing new: it costs no test and no slot of the budget.
            nested = any(found.units == by_item[item].units for item in items)
            if testable(found.units) and not nested and len(pairs) < budget:
                pairs.append(_Tested(items, found, total, total_failures))

    tested_count = len(singles) - merged_away + len(pairs)
    kept: list[tuple[_Tested, float, bool]] = []
    for candidate in [*distinct, *pairs]:
        if not rising(candidate):
            continue
        p_value = bonferroni(candidate.log_p, tested_count)
        if p_value > options.alpha:
            continue
        interaction = len(candidate.items) == 2
        if interaction:
            parts = [by_item[item] for item in candidate.items]
            if bonferroni(_interaction_log_p(candidate, parts), len(pairs)) > options.alpha:
                continue  # the pair says nothing its parts do not
        kept.append((candidate, p_value, interaction))
    kept.sort(key=lambda entry: (entry[0].log_p, -entry[0].rate(), entry[0].label()))
    customers = aggregates.subgroups([entry[0].items for entry in kept]) if kept else []

    findings = []
    for (candidate, p_value, interaction), found in zip(kept, customers, strict=True):
        rest_rate = candidate.rest_rate(total, total_failures)
        rate = candidate.rate()
        findings.append(Finding(
            subgroup=dict(candidate.items),
            units=candidate.units,
            failures=candidate.failures,
            rate=rate,
            rest_rate=rest_rate,
            lift=rate / rest_rate if rest_rate else math.inf,
            p_value=p_value,
            customers=found.customers,
            interaction=interaction,
            aliases=tuple(dict(alias) for alias in candidate.aliases),
            design_effect=candidate.design_effect,
        ))
    return Report(total, total_failures, tuple(findings), tested_count, skipped, options.unit,
                  summary, aggregates.pseudonymised, design_effect, options.failure)
