"""The K busiest customers, for ``PRODLENS_METRICS_TOP_CUSTOMERS`` (a bounded sketch)."""

from __future__ import annotations

import heapq
import threading

from prodlens import attributes

__all__ = ["TopCustomers"]


class TopCustomers:
    """The K busiest customers by request count (Space-Saving sketch; bounded, thread-safe).

    Counts are kept for at most ``8 * k`` customers (at least 64); when a new customer arrives
    and the table is full, it replaces the least-counted one and inherits its count (the
    Space-Saving algorithm, whose top entries are the true heavy hitters). The top-K set is
    recomputed after 1, 2, 4 … 1024 observations, then every 1024.

    Example::

        >>> top = TopCustomers(1)
        >>> [top.label(c) for c in ("acme", "acme", "globex")]
        ['acme', 'acme', '__other__']
    """

    def __init__(self, k: int) -> None:
        self._k = k
        self._capacity = max(8 * k, 64)
        self._counts: dict[str, int] = {}
        self._top: frozenset[str] = frozenset()
        self._seen = 0
        self._lock = threading.Lock()

    def label(self, customer: str) -> str:
        """Observe one request of ``customer``; its metric label (itself or ``__other__``)."""
        with self._lock:
            counts = self._counts
            if customer in counts:
                counts[customer] += 1
            elif len(counts) < self._capacity:
                counts[customer] = 1
            else:
                smallest = min(counts, key=counts.__getitem__)
                counts[customer] = counts.pop(smallest) + 1
            self._seen += 1
            seen = self._seen
            if seen & 1023 == 0 or (seen < 1024 and seen & (seen - 1) == 0):
                self._top = frozenset(heapq.nlargest(self._k, counts, key=counts.__getitem__))
        return customer if customer in self._top else attributes.OTHER_VALUE
