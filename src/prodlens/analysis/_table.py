"""The embedded engine's table: units counted by their signature, and the questions it answers.

A unit's *signature* is the sorted tuple of its candidate ``(attribute, value)`` items, each
item interned once as a small int; units with equal signatures share one row. Attributes with
more than ``max_values`` distinct values (ids in disguise) are projected out of the signatures,
which merges rows: the engine drops them as soon as it knows (``_drop``), and the table drops
any when it outgrows its budget (``_shrink``). Each projection starts a new *epoch*, so a
signature made earlier is known to need projecting.

Per-value statistics are computed from the table at the end, not kept per unit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from prodlens.analysis._model import SliceOptions

Item = tuple[str, str]
#: A unit's candidate items as sorted item ids (see ``SignatureTable._items``).
Signature = tuple[int, ...]
#: Projections remembered per epoch at most (the table's budget is of the same order).
_PROJECTION_CACHE = 1 << 17


class SignatureTable:
    """Rows of ``[units, failures, customers among failed units, a unit of it has closed]``."""

    __slots__ = ("_budget", "_dropped_keys", "_epoch", "_failed_traces", "_index", "_item_keys",
                 "_items", "_projections", "_rows", "_table", "failures", "options", "units")

    def __init__(self, options: SliceOptions, budget: int) -> None:
        self.options = options
        self.units = 0
        self.failures = 0
        self._failed_traces: set[int] = set()
        # item id -> (attribute, value) and -> attribute; signatures are sorted item ids
        self._items: list[Item] = []
        self._item_keys: list[str] = []
        self._table: dict[Signature, list[Any]] = {}
        self._rows = 0  # rows a unit has closed into: what the budget counts (see _open_row)
        self._budget = budget
        self._dropped_keys: set[str] = set()
        # signature -> its projection without the dropped keys, for this epoch (see _project)
        self._projections: dict[Signature, Signature] = {}
        self._epoch = 0
        self._index: dict[int, list[list[Any]]] | None = None

    def _intern(self, key: str, values: dict[str, int], text: str) -> int:
        """A new item: ``text`` as a value of ``key``, entered in that key's ``values``."""
        item = values[text] = len(self._items)
        self._items.append((key, text))
        self._item_keys.append(key)
        return item

    def _open_row(self, signature: Signature) -> tuple[Signature, list[Any]]:
        """A unit closes into a row no unit has closed into yet: the row now counts.

        Rows are made when a unit is counted, so a unit's count lands in its row while still
        in the CPU cache; but the table's budget, and what ``_shrink`` sees, count only the
        rows that one of their units has closed into, as when units were counted at close.
        """
        if self._rows >= self._budget:
            self._shrink()
            signature = self._project(signature)
        row = self._table[signature]
        if not row[3]:
            row[3] = True
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
        """Project id-like attributes out of the table when it outgrows its budget."""
        too_many = {key for key, count in self.key_cardinality().items()
                    if count > self.options.max_values}
        if not too_many:
            self._budget *= 2
            return
        self._drop(too_many)

    def _drop(self, too_many: set[str]) -> None:
        """Project id-like attributes out of the table and of every unit still to come."""
        self._dropped_keys |= too_many
        self._projections = {}
        self._epoch += 1
        table: dict[Signature, list[Any]] = {}
        for signature, row in self._table.items():
            projected = self._project(signature)
            merged = table.get(projected)
            if merged is None:
                table[projected] = row
                continue
            merged[0] += row[0]
            merged[1] += row[1]
            if row[2]:
                merged[2] = (merged[2] or set()) | row[2]
            merged[3] = merged[3] or row[3]
        self._table = table
        self._rows = sum(1 for row in table.values() if row[3])

    # -- questions: per-value statistics, computed once over the aggregated table ------------

    def totals(self) -> tuple[int, int, int]:
        """(units, failed units, distinct traces among failed units)."""
        return self.units, self.failures, len(self._failed_traces)

    def key_cardinality(self) -> dict[str, int]:
        """Distinct values per candidate attribute (dropped id-like ones count as huge)."""
        present: set[int] = set()
        for signature, row in self._table.items():
            if row[3]:
                present.update(signature)
        counts: dict[str, int] = {}
        keys = self._item_keys
        for item in present:
            key = keys[item]
            counts[key] = counts.get(key, 0) + 1
        for key in self._dropped_keys:
            counts[key] = max(counts.get(key, 0), self.options.max_values + 1)
        return counts

    def singles(self, keys: Iterable[str]) -> dict[Item, tuple[int, int]]:
        """(units, failures) for every value of the given attributes."""
        wanted = set(keys)
        units = [0] * len(self._items)
        failures = [0] * len(self._items)
        for signature, row in self._table.items():
            count, failed = row[0], row[1]
            for item in signature:
                units[item] += count
                failures[item] += failed
        return {
            self._items[item]: (units[item], failures[item])
            for item, key in enumerate(self._item_keys)
            if units[item] and key in wanted
        }

    def subgroups(self, subgroups: Sequence[tuple[Item, ...]]) -> list[tuple[int, int, int]]:
        """(units, failures, customers among failures) for each subgroup (AND of its items)."""
        index = self._index
        if index is None:
            index = self._index = {}
            for signature, row in self._table.items():
                for item_id in signature:
                    index.setdefault(item_id, []).append(row)
        ids = {item: number for number, item in enumerate(self._items)}
        out: list[tuple[int, int, int]] = []
        for items in subgroups:
            rows = index.get(ids.get(items[0], -1), [])
            for item in items[1:]:
                other = {id(row) for row in index.get(ids.get(item, -1), [])}
                rows = [row for row in rows if id(row) in other]
            customers: set[str] = set()
            for row in rows:
                if row[2]:
                    customers |= row[2]
            out.append((sum(row[0] for row in rows), sum(row[1] for row in rows), len(customers)))
        return out
