"""The cohort metrics' attribute sets and their totals, bounded by the series budget."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Final

from opentelemetry.util.types import AttributeValue

from prodlens import attributes
from prodlens._safety import log_once

__all__ = ["Point", "PointKey", "Series", "SeriesTable"]

_TRUE: Final = "true"
_FALSE: Final = "false"

PointKey = tuple[tuple[str, AttributeValue], ...]
Point = Mapping[str, AttributeValue]


class Series:
    """One attribute set and its request and repeat totals (kept here, reported at collection)."""

    __slots__ = ("attributes", "repeats", "requests")

    def __init__(self, point: Point) -> None:
        self.attributes = point
        self.requests = 0
        self.repeats = 0


class SeriesTable:
    """Distinct metric attribute sets with their totals, bounded; thread-safe.

    Past ``limit`` sets, every new set is recorded under the overflow set
    ``{otel.metric.overflow: true, error: ...}`` (logged once, naming the setting).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._series: dict[PointKey, Series] = {}
        self.lock = threading.Lock()
        self._overflow: dict[str, Series] = {
            flag: Series({attributes.METRIC_OVERFLOW: True, attributes.METRIC_ERROR: flag})
            for flag in (_TRUE, _FALSE)
        }

    def __len__(self) -> int:
        return len(self._series)

    def get(self, key: PointKey, error: str) -> Series:
        """The series for ``key`` (an attribute-item tuple), or the overflow series."""
        found = self._series.get(key)
        if found is not None:
            return found
        with self.lock:
            found = self._series.get(key)
            if found is not None:
                return found
            if len(self._series) >= self.limit:
                log_once(
                    "limit:metrics_max_series", logging.WARNING,
                    "prodlens: the cohort metrics reached %d distinct attribute sets; further "
                    "new sets are recorded under %s=true. Raise PRODLENS_METRICS_MAX_SERIES to "
                    "allow more (each set is one time series per instrument in your backend).",
                    self.limit, attributes.METRIC_OVERFLOW,
                )
                return self._overflow[error]
            found = self._series[key] = Series(dict(key))
            return found

    def snapshot(self) -> list[tuple[Point, int, int]]:
        """(attributes, requests, repeats) of every series that recorded something."""
        with self.lock:
            every = [*self._series.values(), *self._overflow.values()]
            return [(x.attributes, x.requests, x.repeats) for x in every if x.requests]
