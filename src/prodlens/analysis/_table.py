"""The embedded engine's table: units counted by their signature, and the questions it answers.

A unit's *signature* is the sorted tuple of its candidate ``(attribute, value)`` items, each
item interned once as a small int; units with equal signatures share one :class:`Row`.
Attributes with more than ``max_values`` distinct values (ids in disguise) are projected out of
the signatures, which merges rows: the engine drops them as soon as it knows (``_drop``), and
the table drops any when it outgrows its budget (``_shrink``). Each projection starts a new
*epoch*, so a signature made earlier is known to need projecting.

Time stays linear in the input: a rebuild (``_drop``) costs the table's size, and after each
one the budget is at least twice the rows left, so the rows added before the next rebuild pay
for it. ``rebuilds`` and ``rebuilt_rows`` count that work (the tests assert on them).

Per-value statistics are computed from the table at the end, not kept per unit.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from prodlens.analysis._model import ABSENT, SliceOptions

Item = tuple[str, str]
#: A unit's candidate items as sorted item ids (see ``SignatureTable._items``).
Signature = tuple[int, ...]
#: Projections remembered per epoch at most (the table's budget is of the same order).
_PROJECTION_CACHE = 1 << 17


class Row:
    """The units sharing one signature.

    Attributes:
        units: Units counted in the row.
        failures: Failed units.
        customers: Distinct customers among the failed units (``None`` until one).
        traces: Distinct traces among the failed units, as hashes of their ids (``None``
            until one); a subgroup's failed units per failed trace is its own design effect.
        closed: A unit of the row has closed: the row counts towards the table's budget.
    """

    __slots__ = ("closed", "customers", "failures", "traces", "units")

    def __init__(self) -> None:
        self.units = 0
        self.failures = 0
        self.customers: set[str] | None = None
        self.traces: set[int] | None = None
        self.closed = False

    def merge(self, other: Row) -> None:
        """Add ``other``'s counts (two signatures became one)."""
        self.units += other.units
        self.failures += other.failures
        if other.customers:
            self.customers = (self.customers or set()) | other.customers
        if other.traces:
            self.traces = (self.traces or set()) | other.traces
        self.closed = self.closed or other.closed


class Counts(NamedTuple):
    """What the report needs of a subgroup."""

    units: int
    failures: int
    #: distinct traces among the failed units
    traces: int
    #: distinct customers among the failed units (0 where not asked for)
    customers: int = 0


class SignatureTable:
    """Rows of units by signature, with a budget that keeps the table (and time) bounded."""

    __slots__ = ("_budget", "_dropped_keys", "_epoch", "_failed_traces", "_index", "_item_keys",
                 "_items", "_projections", "_rows", "_table", "failures", "options",
                 "rebuilds", "rebuilt_rows", "units")

    def __init__(self, options: SliceOptions, budget: int) -> None:
        self.options = options
        self.units = 0
        self.failures = 0
        #: Table rebuilds (projections of id-like attributes) and rows they went through.
        self.rebuilds = 0
        self.rebuilt_rows = 0
        self._failed_traces: set[int] = set()
        # item id -> (attribute, value) and -> attribute; signatures are sorted item ids
        self._items: list[Item] = []
        self._item_keys: list[str] = []
        self._table: dict[Signature, Row] = {}
        self._rows = 0  # rows a unit has closed into: what the budget counts (see _open_row)
        self._budget = budget
        self._dropped_keys: set[str] = set()
        # signature -> its projection without the dropped keys, for this epoch (see _project)
        self._projections: dict[Signature, Signature] = {}
        self._epoch = 0
        self._index: dict[int, list[Row]] | None = None

    def _intern(self, key: str, values: dict[str, int], text: str) -> int:
        """A new item: ``text`` as a value of ``key``, entered in that key's ``values``."""
        item = values[text] = len(self._items)
        self._items.append((key, text))
        self._item_keys.append(key)
        return item

    def _open_row(self, signature: Signature) -> tuple[Signature, Row]:
        """A unit closes into a row no unit has closed into yet: the row now counts.

        Rows are made when a unit is counted, so a unit's count lands in its row while still
        in the CPU cache; but the table's budget, and what ``_shrink`` sees, count only the
        rows that one of their units has closed into, as when units were counted at close.
        """
        if self._rows >= self._budget:
            self._shrink()
            signature = self._project(signature)
        row = self._table[signature]
        if not row.closed:
            row.closed = True
            self._rows += 1
        return signature, row

    def _project(self, signature: Signature) -> Signature:
        """``signature`` without the dropped keys' items. Remembered until the next drop: the
        units counted before a drop each project their signature when they close, and most
        share a few signatures (which _drop has projected already)."""
        projected = self._projections.get(signature)
        if projected is None:
            keys = self._item_keys
            dropped = self._dropped_keys
            projected = tuple(item for item in signature if keys[item] not in dropped)
            if len(self._projections) >= _PROJECTION_CACHE:
                self._projections.clear()
            self._projections[signature] = projected
        return projected

    def _shrink(self) -> None:
        """The table reached its budget: project out the attributes that turned out id-like.

        Only attributes not dropped yet count: dropping one again would rebuild the table to
        the same size, and it would be full again at the very next row. When the table stays
        over half full the budget doubles, so the next rebuild waits for as many new rows as
        this one went through.
        """
        self.rebuilt_rows += len(self._table)  # the scan of key_cardinality
        too_many = {key for key, count in self._present_cardinality().items()
                    if count > self.options.max_values}
        if too_many:
            self._drop(too_many)
        if self._rows * 2 >= self._budget:
            self._budget *= 2

    def _drop(self, too_many: set[str]) -> None:
        """Project id-like attributes out of the table and of every unit still to come."""
        self._dropped_keys |= too_many
        self._projections = {}
        self._epoch += 1
        self.rebuilds += 1
        self.rebuilt_rows += len(self._table)
        table: dict[Signature, Row] = {}
        for signature, row in self._table.items():
            projected = self._project(signature)
            merged = table.get(projected)
            if merged is None:
                table[projected] = row
            else:
                merged.merge(row)
        self._table = table
        self._rows = sum(1 for row in table.values() if row.closed)

    # -- questions: per-value statistics, computed once over the aggregated table ------------

    def totals(self) -> tuple[int, int, int]:
        """(units, failed units, distinct traces among failed units)."""
        return self.units, self.failures, len(self._failed_traces)

    @property
    def dropped_keys(self) -> frozenset[str]:
        """Attributes left out of the table as id-like (too many values)."""
        return frozenset(self._dropped_keys)

    def rows(self) -> Iterator[tuple[tuple[Item, ...], Row]]:
        """Every row with its signature as sorted ``(attribute, value)`` items.

        For consumers that keep the table's contents as plain values (``prodlens watch``'s
        time buckets); the row objects are the table's own, so read them, don't change them.
        """
        items = self._items
        for signature, row in self._table.items():
            yield tuple(sorted(items[item] for item in signature)), row

    def _present_cardinality(self) -> dict[str, int]:
        """Distinct values per attribute still in the table (closed rows only)."""
        present: set[int] = set()
        for signature, row in self._table.items():
            if row.closed:
                present.update(signature)
        counts: dict[str, int] = {}
        keys = self._item_keys
        for item in present:
            key = keys[item]
            counts[key] = counts.get(key, 0) + 1
        return counts

    def key_cardinality(self) -> dict[str, int]:
        """Distinct values per candidate attribute (dropped id-like ones count as huge)."""
        counts = self._present_cardinality()
        for key in self._dropped_keys:
            counts[key] = max(counts.get(key, 0), self.options.max_values + 1)
        return counts

    def singles(self, keys: Iterable[str]) -> dict[Item, Counts]:
        """Counts for every value of the given attributes."""
        wanted = set(keys)
        size = len(self._items)
        units = [0] * size
        failures = [0] * size
        traces: dict[int, set[int]] = {}
        for signature, row in self._table.items():
            count, failed = row.units, row.failures
            for item in signature:
                units[item] += count
                failures[item] += failed
            if row.traces:
                for item in signature:
                    found = traces.get(item)
                    if found is None:
                        traces[item] = set(row.traces)
                    else:
                        found |= row.traces
        return {
            self._items[item]: Counts(units[item], failures[item], len(traces.get(item, ())))
            for item, key in enumerate(self._item_keys)
            if units[item] and key in wanted
        }

    def subgroups(self, subgroups: Sequence[tuple[Item, ...]]) -> list[Counts]:
        """Counts for each subgroup: the AND of its items, an item valued :data:`ABSENT`
        meaning units without that attribute."""
        index = self._index
        if index is None:
            index = self._index = {}
            for signature, row in self._table.items():
                for item_id in signature:
                    index.setdefault(item_id, []).append(row)
        ids = {item: number for number, item in enumerate(self._items)}
        with_key: dict[str, set[int]] = {}

        def rows_with(key: str) -> set[int]:
            found = with_key.get(key)
            if found is None:
                found = with_key[key] = {
                    id(row) for item_id, rows in index.items()
                    if self._item_keys[item_id] == key for row in rows
                }
            return found

        out: list[Counts] = []
        for items in subgroups:
            present = [item for item in items if item[1] != ABSENT]
            absent = [item[0] for item in items if item[1] == ABSENT]
            rows = (index.get(ids.get(present[0], -1), []) if present
                    else list(self._table.values()))
            for item in present[1:]:
                other = {id(row) for row in index.get(ids.get(item, -1), [])}
                rows = [row for row in rows if id(row) in other]
            for key in absent:
                having = rows_with(key)
                rows = [row for row in rows if id(row) not in having]
            customers: set[str] = set()
            failed_traces: set[int] = set()
            for row in rows:
                if row.customers:
                    customers |= row.customers
                if row.traces:
                    failed_traces |= row.traces
            out.append(Counts(sum(row.units for row in rows), sum(row.failures for row in rows),
                              len(failed_traces), len(customers)))
        return out
