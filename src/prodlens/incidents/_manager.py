"""The incident manager: the one entry point ``watch`` and the Alertmanager receiver call.

Each call is one ledger transaction that updates the incident, adds its customers and enqueues
every delivery it implies, then wakes the deliverer. Because the deliveries are written in the
same transaction as the change that implies them, a crash right after a call loses nothing, and
a repeated call (a restart re-evaluating, two receiver replicas handling one alert) adds nothing
twice.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping

from prodlens.incidents._ledger import (
    Ledger,
    add_customers,
    enqueue,
    enqueue_batches,
    incident_from_row,
)
from prodlens.incidents._model import Incident, Status, SubgroupStats, incident_id, subgroup_key
from prodlens.incidents._notify import Deliverer, NotifyOptions

#: Where deliveries go in ``--dry-run`` when no destination is configured: printed only.
DRY_RUN_TARGET = "stdout"


class IncidentManager:
    """Opens, updates and resolves incidents in the ledger and enqueues their notifications.

    Operators are notified when an incident opens, each time its affected customers double, and
    when it resolves; customers in batches of at most 100, each once per incident and status.

    Args:
        ledger: The ledger (shared by every process that notifies for these incidents).
        options: Destinations, template, dry run.
        deliverer: Woken after each change; ``None`` to only write the ledger.
        clock: Wall clock for delivery scheduling (incident times are given by the caller).

    Example::

        manager = IncidentManager(Ledger("ledger.sqlite3"), NotifyOptions(customers_url=url))
        incident = manager.open_or_update({"region": "eu"}, SubgroupStats(0.2, 0.005, 400, 80),
                                          ["acme", "globex"], at=time.time())
        manager.resolve({"region": "eu"}, at=time.time())
    """

    def __init__(self, ledger: Ledger, options: NotifyOptions, *,
                 deliverer: Deliverer | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.ledger = ledger
        self.options = options
        self.deliverer = deliverer
        self._clock = clock
        self._operators = options.operator_targets()
        self._customers_target = options.customers_url
        if options.dry_run and not self._operators:
            self._operators = [("operator", DRY_RUN_TARGET)]
        if options.dry_run and self._customers_target is None:
            self._customers_target = DRY_RUN_TARGET

    # -- the API ---------------------------------------------------------------------------

    def open_or_update(self, subgroup: Mapping[str, str], stats: SubgroupStats,
                       customers: Iterable[str] = (), *, at: float,
                       started_at: float | None = None) -> Incident:
        """Record that ``subgroup`` is failing at time ``at`` (Unix seconds).

        Opens an incident if none is firing for this subgroup (``started_at``, default ``at``,
        is its start), else updates the firing one. ``customers`` (any iterable, streamed in
        chunks) are the customers with a failed unit in the subgroup; those already known are
        ignored, new ones are batched for the customer webhook.

        Returns:
            The incident after the change.
        """
        incident = self._change(subgroup, stats, customers, at=at, started_at=started_at,
                                failing=True)
        assert incident is not None
        return incident

    def update(self, subgroup: Mapping[str, str], stats: SubgroupStats,
               customers: Iterable[str] = (), *, at: float) -> Incident | None:
        """Add customers and fresh counts to the firing incident of ``subgroup`` without saying
        it is still failing (its resolve hold-down goes on); ``None`` if none fires."""
        return self._change(subgroup, stats, customers, at=at, started_at=None, failing=False)

    def _change(self, subgroup: Mapping[str, str], stats: SubgroupStats,
                customers: Iterable[str], *, at: float, started_at: float | None,
                failing: bool) -> Incident | None:
        key = subgroup_key(subgroup)
        now = self._clock()
        with self.ledger.write() as db:
            row = db.execute("SELECT id, affected, notified_affected FROM incidents "
                             "WHERE subgroup_key = ? AND status = 'firing'", (key,)).fetchone()
            opened = row is None
            if opened and not failing:
                return None
            if opened:
                start = at if started_at is None else min(started_at, at)
                ident = incident_id(subgroup, start)
                db.execute(
                    "INSERT INTO incidents (id, subgroup_key, subgroup, rate, rest_rate, units, "
                    "failures, started_at, status, last_failing_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'firing', ?)",
                    (ident, key, key, stats.rate, stats.rest_rate, stats.units, stats.failures,
                     start, at))
                notified = 0
            else:
                ident, notified = row["id"], row["notified_affected"]
                db.execute(
                    "UPDATE incidents SET rate = ?, rest_rate = ?, units = ?, failures = ?, "
                    "last_failing_at = CASE WHEN ? THEN MAX(last_failing_at, ?) "
                    "ELSE last_failing_at END WHERE id = ?",
                    (stats.rate, stats.rest_rate, stats.units, stats.failures, failing, at,
                     ident))
            affected = add_customers(db, ident, customers)
            db.execute("UPDATE incidents SET affected = ? WHERE id = ?", (affected, ident))
            incident = self._read(db, ident)
            if opened:
                self._notify_operators(db, incident, "firing", now)
                db.execute("UPDATE incidents SET notified_affected = ? WHERE id = ?",
                           (affected, ident))
            elif notified and affected >= 2 * notified:
                self._notify_operators(db, incident, f"growth-{affected}", now)
                db.execute("UPDATE incidents SET notified_affected = ? WHERE id = ?",
                           (affected, ident))
            elif not notified and affected:  # opened with no customers known yet
                db.execute("UPDATE incidents SET notified_affected = ? WHERE id = ?",
                           (affected, ident))
            self._batch(db, incident, "firing", now)
        self._wake()
        return incident

    def resolve(self, subgroup: Mapping[str, str], *, at: float) -> Incident | None:
        """Resolve the firing incident of ``subgroup`` at time ``at``; ``None`` if none fires.

        Every customer of the incident gets the resolved message (once).
        """
        key = subgroup_key(subgroup)
        now = self._clock()
        with self.ledger.write() as db:
            row = db.execute("SELECT id FROM incidents WHERE subgroup_key = ? AND "
                             "status = 'firing'", (key,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE incidents SET status = 'resolved', resolved_at = ? WHERE id = ?",
                       (at, row["id"]))
            incident = self._read(db, row["id"])
            self._notify_operators(db, incident, "resolved", now)
            self._batch(db, incident, "resolved", now)
        self._wake()
        return incident

    def firing(self) -> list[Incident]:
        """The incidents firing now (a restarted ``watch`` continues these)."""
        return self.ledger.incidents(status="firing")

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _read(db: sqlite3.Connection, ident: str) -> Incident:
        row = db.execute("SELECT * FROM incidents WHERE id = ?", (ident,)).fetchone()
        return incident_from_row(row)

    def _notify_operators(self, db: sqlite3.Connection, incident: Incident, event: str,
                          now: float) -> None:
        status: Status = incident.status
        payload = json.dumps(incident.payload(), ensure_ascii=False)
        for kind, target in self._operators:
            enqueue(db, incident_id=incident.id, status=status, event=event, kind=kind,
                    target=target, payload=payload, now=now)

    def _batch(self, db: sqlite3.Connection, incident: Incident, status: Status,
               now: float) -> None:
        if self._customers_target is not None:
            enqueue_batches(db, incident_id=incident.id, status=status,
                            target=self._customers_target, size=self.options.batch_size,
                            now=now)

    def _wake(self) -> None:
        if self.deliverer is not None:
            self.deliverer.wake()
