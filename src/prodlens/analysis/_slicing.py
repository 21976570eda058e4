"""Ranking subgroups, shared by both engines: they count, this module decides.

1. Every candidate attribute with 2 to ``max_values`` distinct values, and each of its values,
   is a subgroup; one with at least ``min_units`` units (and a non-empty rest) is *tested*.
2. Pairs are formed from the ``top_pairs`` strongest single subgroups whose failure rate is
   above the rest's (different attributes only) and tested too.
3. Each tested subgroup gets a one-sided Fisher exact p-value; p-values are multiplied by the
   number of subgroups tested (Bonferroni). A finding needs ``min_failures`` failures, a rate
   above the rest's, and an adjusted p-value at or below ``alpha``. A pair is reported only as an
   interaction: when it fails at least 1.5 times as often as each of its parts alone.
4. Findings are ranked by p-value, except that an interaction is listed just before the first
   of its parts, as the more specific explanation of their failures.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Protocol

from prodlens.analysis._model import (
    AffectedCustomer,
    Finding,
    InputSummary,
    Report,
    SliceOptions,
    is_candidate_key,
)
from prodlens.analysis._stats import bonferroni, design_effect_log_p

Item = tuple[str, str]


class Aggregates(Protocol):
    """What an engine answers; implemented in-process and as ClickHouse SQL."""

    pseudonymised: bool

    def totals(self) -> tuple[int, int, int]:
        """(units, failed units, distinct traces among the failed units)."""

    def key_cardinality(self) -> dict[str, int]:
        """Distinct values per candidate attribute."""

    def singles(self, keys: Iterable[str]) -> dict[Item, tuple[int, int]]:
        """(units, failures) per value of the given attributes."""

    def subgroups(self, subgroups: Sequence[tuple[Item, ...]]) -> list[tuple[int, int, int]]:
        """(units, failures, customers among failures) per subgroup."""

    def affected(self) -> list[AffectedCustomer]:
        """Customers with failures."""


_INTERACTION_FACTOR = 1.5


class _Tested:
    __slots__ = ("failures", "items", "log_p", "units")

    def __init__(self, items: tuple[Item, ...], units: int, failures: int, total: int,
                 total_failures: int, design_effect: float) -> None:
        self.items = items
        self.units = units
        self.failures = failures
        self.log_p = design_effect_log_p(failures, units, total_failures, total, design_effect)

    def rate(self) -> float:
        return self.failures / self.units if self.units else 0.0

    def rest_rate(self, total: int, total_failures: int) -> float:
        rest = total - self.units
        return (total_failures - self.failures) / rest if rest else 0.0


def _rank(kept: list[tuple[_Tested, float, bool]]) -> list[tuple[_Tested, float, bool]]:
    """Strongest (smallest p) first; an interaction goes just before the first of its parts.

    An interaction is the more specific explanation of its parts' failures (they concentrate
    mostly where both hold), so it is listed before them even when a part, being larger, has
    the smaller p-value.
    """
    ordered = sorted(kept, key=lambda entry: (entry[0].log_p, -entry[0].rate(), entry[0].items))
    singles = [entry for entry in ordered if len(entry[0].items) == 1]
    pairs = [entry for entry in ordered if len(entry[0].items) == 2]
    position = {entry[0].items[0]: index for index, entry in enumerate(singles)}
    placed: dict[int, list[tuple[_Tested, float, bool]]] = {}
    tail: list[tuple[_Tested, float, bool]] = []
    for pair in pairs:
        slots = [position[item] for item in pair[0].items if item in position]
        if slots:
            placed.setdefault(min(slots), []).append(pair)
        else:
            tail.append(pair)
    result: list[tuple[_Tested, float, bool]] = []
    for index, single in enumerate(singles):
        result.extend(placed.get(index, []))
        result.append(single)
    return result + tail


def build_report(aggregates: Aggregates, options: SliceOptions, summary: InputSummary) -> Report:
    """Test every subgroup the aggregates know of and return the report."""
    total, total_failures, failed_traces = aggregates.totals()
    # One failure shows up in every service on its path: failed units come in clusters (a
    # trace), not independently. Counts are divided by the mean cluster size before the test
    # (a Rao-Scott-style design-effect correction), or the test would be anti-conservative.
    design_effect = max(1.0, total_failures / failed_traces) if failed_traces else 1.0
    cardinality = aggregates.key_cardinality()
    keys = sorted(
        key for key, count in cardinality.items()
        if 2 <= count <= options.max_values
        and is_candidate_key(key, options.exclude, options.customer_attributes)
    )
    skipped = tuple(sorted(key for key, count in cardinality.items()
                           if count > options.max_values))
    if not total or not total_failures:
        return Report(total, total_failures, (), 0, skipped, options.unit, summary,
                      aggregates.pseudonymised)

    def testable(units: int) -> bool:
        return options.min_units <= units < total

    singles = [
        _Tested((item,), units, failures, total, total_failures, design_effect)
        for item, (units, failures) in sorted(aggregates.singles(keys).items())
        if testable(units)
    ]
    rising = sorted(
        (t for t in singles
         if t.failures >= options.min_failures
         and t.rate() > t.rest_rate(total, total_failures)),
        key=lambda t: (t.log_p, t.items),
    )[: options.top_pairs]
    pair_items = [
        (a.items[0], b.items[0]) if a.items[0] < b.items[0] else (b.items[0], a.items[0])
        for a, b in itertools.combinations(rising, 2) if a.items[0][0] != b.items[0][0]
    ]
    pair_counts = aggregates.subgroups(pair_items) if pair_items else []
    pairs = [
        _Tested(items, units, failures, total, total_failures, design_effect)
        for items, (units, failures, _) in zip(pair_items, pair_counts, strict=False)
        if testable(units)
    ]
    tested = len(singles) + len(pairs)
    rates = {t.items[0]: t.rate() for t in singles}

    kept: list[tuple[_Tested, float, bool]] = []
    for candidate in [*singles, *pairs]:
        rest_rate = candidate.rest_rate(total, total_failures)
        if candidate.failures < options.min_failures or candidate.rate() <= rest_rate:
            continue
        p_value = bonferroni(candidate.log_p, tested)
        if p_value > options.alpha:
            continue
        interaction = len(candidate.items) == 2
        if interaction:
            parents = max(rates.get(item, 0.0) for item in candidate.items)
            if candidate.rate() < _INTERACTION_FACTOR * parents:
                continue  # the pair says nothing its parts do not
        kept.append((candidate, p_value, interaction))
    kept = _rank(kept)
    customers = aggregates.subgroups([entry[0].items for entry in kept]) if kept else []

    findings = []
    for (candidate, p_value, interaction), (_, _, affected) in zip(kept, customers, strict=False):
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
            customers=affected,
            interaction=interaction,
        ))
    return Report(total, total_failures, tuple(findings), tested, skipped, options.unit,
                  summary, aggregates.pseudonymised, design_effect)
