"""Grouping spans into units for ``--failure any-span``: a unit fails when any span of its group
(its ``(trace, service)``, or its trace for ``--unit trace``) is ERROR.

Under the default rule a unit's outcome is its own root span's, so no grouping is needed; this
module is only for the older rule, which has to wait until a group is complete.

Memory stays bounded: a group is closed when it leaves a window of ``limit`` open groups (oldest
first) or at the end of input. One service's spans of one trace are exported together by its
process (the SDK exports children before the root ends), so the window only needs to span a
few seconds of traffic, not the whole input.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

UnitT = TypeVar("UnitT")


class Group(Generic[UnitT]):
    """The spans of one group seen so far.

    Attributes:
        failed: A span of the group is ERROR.
        filtered: A root of the group was left out by ``--where``/``--since``/``--until``:
            its ERROR spans are not reported as lacking a root.
        units: The group's units (its local roots that passed the filters).
    """

    __slots__ = ("failed", "filtered", "units")

    def __init__(self, failed: bool) -> None:
        self.failed = failed
        self.filtered = False
        self.units: list[UnitT] = []


class OpenGroups(Generic[UnitT]):
    """Open groups in arrival order; each closes into ``close(unit, failed)`` per unit."""

    __slots__ = ("_close", "_groups", "_limit", "orphans")

    def __init__(self, limit: int, close: Callable[[UnitT, bool], None]) -> None:
        self._groups: dict[Hashable, Group[UnitT]] = {}
        self._limit = limit
        self._close = close
        #: Groups that held ERROR spans but no root (and no filtered-out root): not counted.
        self.orphans = 0

    def get(self, key: Hashable, error: bool) -> Group[UnitT]:
        """The open group of ``key`` (opened if new), marked failed when ``error``."""
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = Group(error)
        elif error:
            group.failed = True
        return group

    def trim(self) -> None:
        """Close the oldest half of the groups once there are more than the window holds."""
        groups = self._groups
        if len(groups) <= self._limit:
            return
        for key in list(itertools.islice(groups, len(groups) // 2)):
            self._finish(groups.pop(key))

    def finish(self) -> None:
        """Close every open group (call at the end of input)."""
        groups, self._groups = self._groups, {}
        for group in groups.values():
            self._finish(group)

    def _finish(self, group: Group[UnitT]) -> None:
        if not group.units:
            if group.failed and not group.filtered:
                self.orphans += 1
            return
        close = self._close
        for unit in group.units:
            close(unit, group.failed)
