"""From a subgroup alert to an incident and its customers, through :mod:`prodlens.incidents`.

The worker of ``prodlens notify`` calls :meth:`AlertResolver.handle` with each alert. A firing
alert reads the subgroup's units from the span store over the alert's window and opens or
updates the incident of the subgroup (started at the alert's ``startsAt``) with the customers
who had a failed unit in it; the :class:`~prodlens.incidents.IncidentManager` records them in
the ledger and enqueues each customer once. A resolved alert first adds the customers who
failed since the last update (so nobody who failed is left out of the resolve), then resolves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Final

from prodlens.alerting._payload import SubgroupAlert
from prodlens.analysis import (
    AffectedReport,
    Filters,
    QueryFunction,
    Report,
    SliceOptions,
    affected_clickhouse,
    affected_customers,
    slice_clickhouse,
    slice_failures,
)
from prodlens.incidents import IncidentManager, SubgroupStats, incident_id

__all__ = ["AlertResolver", "SpanStore"]

_LOG = logging.getLogger("prodlens.notify")
_NS: Final = 1_000_000_000
#: The totals pass tests no subgroup: it only counts the units that pass the filters.
_NO_CANDIDATES: Final = 2**62


@dataclass(frozen=True)
class SpanStore:
    """Where the spans are: OTLP/JSON files (the embedded engine) or ClickHouse.

    Attributes:
        paths: Files or directories of OTLP/JSON lines.
        clickhouse: A ClickHouse URL or a query function (chdb), instead of ``paths``.
        table: The Collector's traces table in ClickHouse.
        options: Unit and customer attributes, as for ``prodlens affected``.
    """

    paths: tuple[str, ...] = ()
    clickhouse: QueryFunction | str | None = None
    table: str = "otel_traces"
    options: SliceOptions = field(default_factory=SliceOptions)

    def read(self, filters: Filters) -> tuple[Report, AffectedReport]:
        """The subgroup's totals and its affected customers, for units passing ``filters``."""
        totals = replace(self.options, filters=filters, min_units=_NO_CANDIDATES, top_pairs=0)
        affected = replace(self.options, filters=filters)
        if self.clickhouse is not None:
            return (slice_clickhouse(self.clickhouse, totals, table=self.table),
                    affected_clickhouse(self.clickhouse, affected, table=self.table))
        return slice_failures(self.paths, totals), affected_customers(self.paths, affected)


class AlertResolver:
    """Turns subgroup alerts into incidents and customer notifications.

    Args:
        store: Where the spans are.
        manager: The incident manager (its ledger may be shared by several receivers).
        clock: Wall clock (Unix seconds).
    """

    def __init__(self, store: SpanStore, manager: IncidentManager, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.manager = manager
        self._clock = clock

    def _status(self, alert: SubgroupAlert) -> str | None:
        """The status of this alert's incident in the ledger (``None``: not opened yet).

        The incident's id is derived from the subgroup and the start, as the manager derives
        it when it opens the incident with ``started_at=alert.starts_at``.
        """
        incident = self.manager.ledger.incident(incident_id(alert.subgroup, alert.starts_at))
        return None if incident is None else incident.status

    def _update(self, alert: SubgroupAlert, until: float | None) -> None:
        where = tuple((key, value, True) for key, value in sorted(alert.subgroup.items()))
        filters = Filters(where=where, since_ns=int((alert.starts_at - alert.window) * _NS),
                          until_ns=None if until is None else int(until * _NS))
        totals, affected = self.store.read(filters)
        rate = alert.ratio if alert.ratio is not None else totals.rate
        stats = SubgroupStats(rate=rate, rest_rate=alert.rest_ratio or 0.0,
                              units=totals.units, failures=totals.failures)
        self.manager.open_or_update(
            alert.subgroup, stats, (customer.customer for customer in affected.customers),
            at=self._clock(), started_at=alert.starts_at)

    def handle(self, alert: SubgroupAlert) -> None:
        """Act on one alert (called on the receiver's worker thread)."""
        status = self._status(alert)
        if alert.status == "firing":
            if status == "resolved":
                # A repeat that crossed the resolve: that incident is over.
                _LOG.info("prodlens notify: %s already resolved", dict(alert.subgroup))
                return
            self._update(alert, None)
            return
        if status != "firing":
            _LOG.info("prodlens notify: resolved alert for %s with no open incident",
                      dict(alert.subgroup))
            return
        # Customers who failed since the last update are told it fired, then that it resolved.
        self._update(alert, alert.ends_at)
        self.manager.resolve(alert.subgroup, at=alert.ends_at or self._clock())
