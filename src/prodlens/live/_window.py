"""A sliding window over the analysis engine: per-bucket aggregates, merged for each evaluation.

``watch`` does not have a second engine. Spans are turned into units by the analysis engine's
own streaming aggregates (:class:`prodlens.analysis._embedded.EmbeddedAggregates`, one per time
bucket of ``--every`` seconds of span time), and each evaluation ranks subgroups with the
engine's own :func:`prodlens.analysis._slicing.build_report`, over :class:`WindowAggregates`: the
``Aggregates`` protocol implemented on the sum of the buckets in the window. Adding a bucket and
dropping the oldest is a few dictionary updates, so an evaluation costs the size of the merged
table (distinct unit signatures), not the number of spans in the window.

Each closed bucket keeps its table's rows: a signature (the unit's candidate attribute values),
its units, its failures and the customers among its failed units. The customers are what lets
an incident name everyone who failed inside its subgroup since it started, and they are only
the failed units' customers, so memory follows the failures in the window, not the traffic.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from prodlens.analysis import Report, SliceOptions
from prodlens.analysis._embedded import EmbeddedAggregates
from prodlens.analysis._model import ABSENT, AffectedCustomer, InputSummary
from prodlens.analysis._reader import ReadProgress
from prodlens.analysis._slicing import build_report
from prodlens.analysis._table import Counts

Item = tuple[str, str]
Signature = tuple[Item, ...]
#: A signature's units, failures, customers and trace hashes among its failed units.
BucketRow = tuple[int, int, frozenset[str], frozenset[int]]


@dataclass(slots=True)
class Bucket:
    """The closed aggregates of ``[start, start + every)`` seconds of span time.

    Attributes:
        start: Bucket start (Unix seconds of span time).
        units: Units counted.
        failures: Failed units.
        failed_traces: Distinct traces among the failed units.
        rows: Signature -> ``(units, failures, customers among the failed units, hashes of
            the traces among the failed units)``.
        dropped: Attributes the engine projected out as id-like in this bucket.
        pseudonymised: Customers were pseudonyms.
    """

    start: float
    units: int = 0
    failures: int = 0
    failed_traces: int = 0
    rows: dict[Signature, BucketRow] = field(default_factory=dict)
    dropped: frozenset[str] = frozenset()
    pseudonymised: bool = False


_NO_CUSTOMERS: frozenset[str] = frozenset()
_NO_TRACES: frozenset[int] = frozenset()


def close_bucket(start: float, aggregates: EmbeddedAggregates) -> Bucket:
    """Finish the engine's aggregates of one bucket and keep its rows as plain values."""
    aggregates.finish()
    units, failures, failed_traces = aggregates.totals()
    rows: dict[Signature, BucketRow] = {}
    for key, row in aggregates.rows():
        if not row.units:
            continue
        count, failed, customers, traces = rows.get(key, (0, 0, _NO_CUSTOMERS, _NO_TRACES))
        rows[key] = (count + row.units, failed + row.failures,
                     customers | frozenset(row.customers) if row.customers else customers,
                     traces | frozenset(row.traces) if row.traces else traces)
    return Bucket(start, units, failures, failed_traces, rows, aggregates.dropped_keys,
                  aggregates.pseudonymised)


def _matches(signature: Signature, items: Sequence[Item]) -> bool:
    """Whether a signature is in the subgroup (a value ``ABSENT``: the key is not there)."""
    keys = {key for key, _ in signature}
    return all((key not in keys) if value == ABSENT else (key, value) in signature
               for key, value in items)


class WindowAggregates:
    """The engine's ``Aggregates`` protocol over the buckets of a sliding window.

    Counts are kept merged (added when a bucket enters, subtracted when it leaves); customer
    sets stay with their bucket, since a union cannot be subtracted.
    """

    def __init__(self, options: SliceOptions) -> None:
        self.options = options
        self.buckets: deque[Bucket] = deque()
        self.pseudonymised = False
        self._merged: dict[Signature, list[int]] = {}
        self._units = 0
        self._failures = 0
        self._failed_traces = 0
        self._index: dict[Item, list[Signature]] | None = None
        self._failed: dict[Signature, tuple[set[str], set[int]]] | None = None

    def add(self, bucket: Bucket) -> None:
        """A bucket enters the window (newest last)."""
        self.buckets.append(bucket)
        self._apply(bucket, 1)
        self.pseudonymised = self.pseudonymised or bucket.pseudonymised

    def evict_before(self, start: float) -> None:
        """Buckets that started before ``start`` leave the window."""
        while self.buckets and self.buckets[0].start < start:
            self._apply(self.buckets.popleft(), -1)
        self.pseudonymised = any(bucket.pseudonymised for bucket in self.buckets)

    def _apply(self, bucket: Bucket, sign: int) -> None:
        self._units += sign * bucket.units
        self._failures += sign * bucket.failures
        self._failed_traces += sign * bucket.failed_traces
        merged = self._merged
        for signature, (units, failures, _, _) in bucket.rows.items():
            row = merged.get(signature)
            if row is None:
                row = merged[signature] = [0, 0]
            row[0] += sign * units
            row[1] += sign * failures
            if row[0] <= 0:
                del merged[signature]
        self._index = None
        self._failed = None

    # -- the Aggregates protocol ------------------------------------------------------------

    def totals(self) -> tuple[int, int, int]:
        """(units, failed units, distinct traces among the failed units)."""
        return self._units, self._failures, self._failed_traces

    def key_cardinality(self) -> dict[str, int]:
        """Distinct values per attribute in the window; id-like ones count as too many."""
        values: dict[str, set[str]] = {}
        for signature in self._merged:
            for key, value in signature:
                values.setdefault(key, set()).add(value)
        counts = {key: len(found) for key, found in values.items()}
        for bucket in self.buckets:
            for key in bucket.dropped:
                counts[key] = max(counts.get(key, 0), self.options.max_values + 1)
        return counts

    def singles(self, keys: Iterable[str]) -> dict[Item, Counts]:
        """Counts for every value of the given attributes."""
        wanted = set(keys)
        out: dict[Item, list[int]] = {}
        for signature, (units, failures) in self._merged.items():
            for item in signature:
                if item[0] in wanted:
                    row = out.get(item)
                    if row is None:
                        row = out[item] = [0, 0]
                    row[0] += units
                    row[1] += failures
        traces: dict[Item, set[int]] = {}
        for signature, (_, failed_traces) in self._failed_sets().items():
            for item in signature:
                if item[0] in wanted:
                    traces.setdefault(item, set()).update(failed_traces)
        return {item: Counts(row[0], row[1], len(traces.get(item, ())))
                for item, row in out.items()}

    def _signatures(self, items: Sequence[Item]) -> list[Signature]:
        """The window's signatures in the subgroup (an ``ABSENT`` value: without the key)."""
        index = self._index
        if index is None:
            index = self._index = {}
            for signature in self._merged:
                for item in signature:
                    index.setdefault(item, []).append(signature)
        present = [item for item in items if item[1] != ABSENT]
        absent = {item[0] for item in items if item[1] == ABSENT}
        found = index.get(present[0], []) if present else list(self._merged)
        rest = present[1:]
        return [signature for signature in found
                if all(item in signature for item in rest)
                and not any(key in absent for key, _ in signature)]

    def _failed_sets(self) -> dict[Signature, tuple[set[str], set[int]]]:
        """Customers and traces among failed units per signature over the window (merged
        once per change of the window: sets cannot be subtracted when a bucket leaves)."""
        failed = self._failed
        if failed is None:
            failed = self._failed = {}
            for bucket in self.buckets:
                for signature, (_, failures, customers, traces) in bucket.rows.items():
                    if failures:
                        entry = failed.get(signature)
                        if entry is None:
                            entry = failed[signature] = (set(), set())
                        entry[0].update(customers)
                        entry[1].update(traces)
        return failed

    def subgroups(self, subgroups: Sequence[tuple[Item, ...]]) -> list[Counts]:
        """Counts per subgroup (the AND of its items), customers included."""
        failed = self._failed_sets()
        out = []
        for items in subgroups:
            units = failures = 0
            customers: set[str] = set()
            traces: set[int] = set()
            for signature in self._signatures(items):
                row = self._merged[signature]
                units += row[0]
                failures += row[1]
                entry = failed.get(signature)
                if entry is not None:
                    customers |= entry[0]
                    traces |= entry[1]
            out.append(Counts(units, failures, len(traces), len(customers)))
        return out

    def affected(self) -> list[AffectedCustomer]:
        """Not asked of a window (``watch`` reads customers per subgroup instead)."""
        return []

    # -- what watch asks beyond the protocol ------------------------------------------------

    def customers(self, items: Sequence[Item], *, since: float = -math.inf) -> set[str]:
        """Customers with a failed unit inside the subgroup, in buckets starting at ``since``
        or later."""
        found: set[str] = set()
        for bucket in self.buckets:
            if bucket.start < since:
                continue
            for signature, (_, failures, customers, _) in bucket.rows.items():
                if failures and customers and _matches(signature, items):
                    found |= customers
        return found

    def bucket_counts(self, items: Sequence[Item]) -> Iterator[tuple[float, int, int]]:
        """``(bucket start, units, failures)`` of the subgroup per bucket, oldest first."""
        for bucket in self.buckets:
            units = failures = 0
            for signature, (count, failed, _, _) in bucket.rows.items():
                if _matches(signature, items):
                    units += count
                    failures += failed
            yield bucket.start, units, failures

    def report(self, summary: InputSummary | None = None) -> Report:
        """The engine's report over the window."""
        return build_report(self, self.options, summary or InputSummary())


class BucketBuilder:
    """Routes decoded export requests into per-bucket engine aggregates, by span time."""

    def __init__(self, options: SliceOptions, every: float) -> None:
        self.options = options
        self.every = every
        self.open: dict[int, EmbeddedAggregates] = {}
        self.progress = ReadProgress()

    def index(self, seconds: float) -> int:
        """The bucket number of a time."""
        return math.floor(seconds / self.every)

    def aggregates(self, index: int) -> EmbeddedAggregates:
        """The open aggregates of bucket ``index`` (made on first use)."""
        found = self.open.get(index)
        if found is None:
            found = self.open[index] = EmbeddedAggregates(self.options)
        return found

    def close(self, index: int) -> Bucket:
        """Close bucket ``index`` (an empty one if nothing arrived for it)."""
        found = self.open.pop(index, None)
        start = index * self.every
        if found is None:
            return Bucket(start)
        return close_bucket(start, found)
