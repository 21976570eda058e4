"""From window reports to incidents: the rules against false alarms, and which finding wins.

Evaluating every 10 s is testing again and again: a rule that is right 99% of the time per
evaluation raises a false incident every few minutes. A subgroup opens an incident only when,
on ``confirm`` consecutive evaluations (default 3), it is

* **significant**: the engine's one-sided Fisher test, Bonferroni-adjusted over every subgroup
  tested in that evaluation, at ``alpha`` (default 1e-5, not ``slice``'s 0.01: about 2,000
  non-overlapping 5-minute windows a week, so the expected false incidents a week stay below
  2,000 x 1e-5 = 0.02 even before the other two rules);
* **large**: its failure rate at least ``min_lift`` (2x) the rest's and ``min_delta`` (1
  percentage point) above it, with at least the engine's ``min_failures`` failures.

One incident per failure, not per finding: the halves of an interaction (a failing pair) are
not incidents of their own, and findings that share most of their failures (``http.route=/x``
and ``span.name=GET /x``, or a subgroup nested in another) are one explanation: the one with the
most failures, then the smallest, wins. A finding that overlaps a firing incident keeps that
incident alive instead of opening another.

An onset shows in the last minute (``recent``) well before it outweighs minutes of healthy traffic
in the whole window, so each evaluation also ranks that recent window; a finding of either
counts, and each of the two reports is tested at half of ``alpha``.

An incident resolves once the subgroup has not met the rules for ``resolve_after`` seconds of
span time (so between ``resolve_after`` and ``window + resolve_after`` after the fix).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from prodlens.analysis import Finding, Report
from prodlens.analysis._table import Counts
from prodlens.incidents import Incident, IncidentManager, SubgroupStats, subgroup_key

Item = tuple[str, str]


class WindowView(Protocol):
    """What the detector asks of a window: the embedded one, or ClickHouse's."""

    def report(self) -> Report:
        """The engine's report over the window."""

    def totals(self) -> tuple[int, int, int]:
        """(units, failed units, distinct failed traces) in the window."""

    def subgroups(self, subgroups: Sequence[tuple[Item, ...]]) -> list[Counts]:
        """Counts per subgroup."""

    def customers(self, items: Sequence[Item], *, since: float = ...) -> set[str]:
        """Customers with a failed unit in the subgroup, at ``since`` or later."""

    def bucket_counts(self, items: Sequence[Item]) -> Iterable[tuple[float, int, int]]:
        """(bucket start, units, failures) of the subgroup per bucket, oldest first."""

#: Share of the smaller finding's failures that must fall in both for two findings to be one.
_SAME_FAILURES = 0.8


@dataclass(frozen=True, slots=True)
class DetectOptions:
    """The rules that turn findings into incidents (see the module docstring)."""

    confirm: int = 3
    min_lift: float = 2.0
    min_delta: float = 0.01
    resolve_after: float = 300.0


@dataclass
class Evaluation:
    """What one evaluation did (for the console and the tests)."""

    at: float
    units: int
    failures: int
    qualified: list[Finding] = field(default_factory=list)
    opened: list[Incident] = field(default_factory=list)
    updated: list[Incident] = field(default_factory=list)
    resolved: list[Incident] = field(default_factory=list)


def _items(subgroup: Mapping[str, str]) -> tuple[Item, ...]:
    return tuple(sorted(subgroup.items()))


class Detector:
    """Applies the rules at each evaluation and drives the :class:`IncidentManager`."""

    def __init__(self, manager: IncidentManager, options: DetectOptions, *, every: float) -> None:
        self.manager = manager
        self.options = options
        self.every = every
        self._streaks: dict[str, int] = {}
        # incident id -> the bucket start up to which its customers were handed over
        self._customers_since: dict[str, float] = {}

    def qualifies(self, finding: Finding) -> bool:
        """Whether a finding meets the effect-size rules (the engine checked significance)."""
        return (finding.rate >= self.options.min_lift * finding.rest_rate
                and finding.rate - finding.rest_rate >= self.options.min_delta)

    def _explanations(self, findings: Sequence[Finding],
                      window: WindowView) -> list[Finding]:
        """One finding per failure: interactions over their halves, then overlaps merged."""
        halves = {item for finding in findings if finding.interaction
                  for item in _items(finding.subgroup)}
        kept = [finding for finding in findings
                if finding.interaction or _items(finding.subgroup)[0] not in halves]
        # the most failures first, then the most specific (fewest units), then by name
        kept.sort(key=lambda f: (-f.failures, f.units, subgroup_key(f.subgroup)))
        chosen: list[Finding] = []
        for finding in kept:
            if not any(self.overlap(finding.subgroup, other.subgroup, window)
                       for other in chosen):
                chosen.append(finding)
        return chosen

    @staticmethod
    def overlap(first: Mapping[str, str], second: Mapping[str, str],
                window: WindowView) -> bool:
        """Whether two subgroups share most of their failures in the window."""
        a, b = _items(first), _items(second)
        if set(a) <= set(b) or set(b) <= set(a):
            return True
        keys_a = dict(a)
        if any(keys_a.get(key, value) != value for key, value in b):
            return False  # one attribute, two values: disjoint
        both = tuple(sorted(set(a) | set(b)))
        first_counts, second_counts, both_counts = window.subgroups([a, b, both])
        smaller = min(first_counts.failures, second_counts.failures)
        return smaller > 0 and both_counts.failures >= _SAME_FAILURES * smaller

    def _started(self, items: tuple[Item, ...], window: WindowView, rest_rate: float,
                 at: float) -> float:
        """When the subgroup started failing: the change point of its failure rate.

        For each bucket start ``s`` in the window, the log-likelihood ratio of "the subgroup
        fails at its own rate from ``s`` on" against "it fails at the rest's rate" (a CUSUM
        with the rate after ``s`` estimated); the ``s`` that maximises it is the onset. At low
        traffic a bucket may hold no failure by chance, which is why this looks at the whole
        suffix instead of stopping at the first quiet bucket.
        """
        counts = list(window.bucket_counts(items))
        units = failures = 0
        total, _, _ = window.totals()
        # a rest that never failed still has some rate: half a failure in its units
        base = max(rest_rate, 0.5 / max(1, total))
        best, started = 0.0, at
        for start, bucket_units, bucket_failures in reversed(counts):
            units += bucket_units
            failures += bucket_failures
            if not units or not failures:
                continue
            rate = failures / units
            if rate <= base:
                continue
            score = failures * math.log(rate / base)
            if rate < 1.0:
                score += (units - failures) * math.log((1.0 - rate) / (1.0 - base))
            if score > best:
                best, started = score, start
        return started

    def evaluate(self, window: WindowView, at: float, *, live: bool = True,
                 recent: WindowView | None = None) -> Evaluation:
        """Evaluate the window at span time ``at``.

        Args:
            window: The window, its newest bucket ending at ``at``.
            at: Span time of this evaluation (Unix seconds).
            live: False while a restarted ``watch`` replays spans it had already evaluated:
                firing incidents still get their customers (each once), but nothing opens or
                resolves a second time.
            recent: The last minute or so of the same window. An onset shows there well
                before it outweighs minutes of healthy traffic in the whole window; a finding
                of either counts (each report tested at half the significance level).
        """
        report = window.report()
        units, failures, _ = window.totals()
        result = Evaluation(at, units, failures)
        qualified = [finding for finding in report.findings if self.qualifies(finding)]
        if recent is not None:
            known = {subgroup_key(finding.subgroup) for finding in qualified}
            qualified += [finding for finding in recent.report().findings
                          if self.qualifies(finding)
                          and subgroup_key(finding.subgroup) not in known]
        result.qualified = qualified
        explanations = self._explanations(qualified, window)
        firing = {subgroup_key(incident.subgroup): incident
                  for incident in self.manager.firing()}
        failing_now: set[str] = set()
        fresh: list[Finding] = []
        for finding in explanations:
            matches = [key for key, incident in firing.items()
                       if self.overlap(finding.subgroup, incident.subgroup, window)]
            if matches:
                failing_now.update(matches)
            else:
                fresh.append(finding)
        # streaks: consecutive evaluations a not-yet-firing explanation held
        streaks: dict[str, int] = {}
        for finding in fresh:
            key = subgroup_key(finding.subgroup)
            streaks[key] = self._streaks.get(key, 0) + 1
        self._streaks = streaks
        for key, incident in firing.items():
            items = _items(incident.subgroup)
            stats = self._stats(items, window)
            since = self._customers_since.get(incident.id, incident.started_at)
            customers = window.customers(items, since=since)
            self._customers_since[incident.id] = at
            if key in failing_now:
                updated = self.manager.open_or_update(incident.subgroup, stats, customers, at=at)
                result.updated.append(updated)
                continue
            changed = self.manager.update(incident.subgroup, stats, customers, at=at)
            current = changed or incident
            if live and at - current.last_failing_at >= self.options.resolve_after:
                resolved = self.manager.resolve(incident.subgroup, at=at)
                if resolved is not None:
                    result.resolved.append(resolved)
                    self._customers_since.pop(incident.id, None)
        if not live:
            return result
        for finding in fresh:
            key = subgroup_key(finding.subgroup)
            if streaks[key] < self.options.confirm:
                continue
            items = _items(finding.subgroup)
            started = self._started(items, window, finding.rest_rate, at)
            customers = window.customers(items, since=started)
            incident = self.manager.open_or_update(
                finding.subgroup, self._stats(items, window), customers, at=at,
                started_at=started)
            self._customers_since[incident.id] = at
            self._streaks.pop(key, None)
            result.opened.append(incident)
        return result

    @staticmethod
    def _stats(items: tuple[Item, ...], window: WindowView) -> SubgroupStats:
        total, total_failures, _ = window.totals()
        [counts] = window.subgroups([items])
        units, failures = counts.units, counts.failures
        rest = total - units
        return SubgroupStats(
            rate=failures / units if units else 0.0,
            rest_rate=(total_failures - failures) / rest if rest > 0 else 0.0,
            units=units, failures=failures)
