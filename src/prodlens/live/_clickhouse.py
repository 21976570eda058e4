"""``watch --clickhouse``: the same evaluation as SQL over the Collector's ``otel_traces``.

Each evaluation is the engine's ClickHouse aggregates restricted to the window
(``Filters.since_ns``/``until_ns``); only aggregates and the affected customers' ids leave the
server. Span time is the table's newest ``Timestamp``: evaluations happen at each ``every``
boundary that newest span has passed by ``grace``, so a backlog is evaluated window by window.
An unreachable server is reported and retried at the next poll, never fatal.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import IO

from prodlens.analysis import (
    ClickHouseError,
    Filters,
    InputSummary,
    QueryFunction,
    Report,
    SliceOptions,
    http_query,
)
from prodlens.analysis._clickhouse import ClickHouseAggregates
from prodlens.analysis._slicing import build_report
from prodlens.analysis._table import Counts
from prodlens.incidents import IncidentManager, iso
from prodlens.live._detect import Detector, Evaluation, Item
from prodlens.live._watch import WatchOptions, tested_options, watch_name

_STATE = """
CREATE TABLE IF NOT EXISTS watch_checkpoints (
    watch TEXT NOT NULL,
    at REAL NOT NULL,
    positions TEXT NOT NULL,
    PRIMARY KEY (watch, at)
)
"""


def _ns(seconds: float) -> int:
    return round(seconds * 1_000_000_000)


class ClickHouseView:
    """The detector's window over ClickHouse: ``[start, end)`` of span time."""

    def __init__(self, run: QueryFunction, options: SliceOptions, table: str, start: float,
                 end: float, every: float) -> None:
        self._run = run
        self._options = options
        self._table = table
        self.start = start
        self.end = end
        self._every = every
        self._aggregates = self._restricted((), start, end)

    def _restricted(self, items: Sequence[Item], start: float, end: float
                    ) -> ClickHouseAggregates:
        base = self._options.filters
        filters = Filters(where=base.where + tuple((k, v, True) for k, v in items),
                          since_ns=_ns(start), until_ns=_ns(end))
        return ClickHouseAggregates(self._run, dataclasses.replace(self._options,
                                                                   filters=filters), self._table)

    def report(self) -> Report:
        return build_report(self._aggregates, self._options, InputSummary())

    def totals(self) -> tuple[int, int, int]:
        return self._aggregates.totals()

    def subgroups(self, subgroups: Sequence[tuple[Item, ...]]) -> list[Counts]:
        return self._aggregates.subgroups(subgroups)

    def customers(self, items: Sequence[Item], *, since: float = -math.inf) -> set[str]:
        start = max(self.start, since)
        if start >= self.end:
            return set()
        found = self._restricted(items, start, self.end).affected()
        return {row.customer for row in found if row.failures}

    def bucket_counts(self, items: Sequence[Item]) -> Iterator[tuple[float, int, int]]:
        start = self.start
        while start < self.end:
            units, failures, _ = self._restricted(items, start, start + self._every).totals()
            yield start, units, failures
            start += self._every


class ClickHouseWatcher:
    """Polls the table and evaluates each due window; same interface as the file watcher."""

    def __init__(self, url: str | QueryFunction, options: WatchOptions,
                 manager: IncidentManager, *, table: str = "otel_traces",
                 out: IO[str] | None = None) -> None:
        self._run = http_query(url, timeout=60.0) if isinstance(url, str) else url
        self.options = options
        self.manager = manager
        self.table = table
        self.out = out or sys.stdout
        self.detector = Detector(manager, options.detect, every=options.every)
        self.name = watch_name([f"clickhouse:{url if isinstance(url, str) else 'query'}",
                                table])
        self.evaluations = 0
        self.errors = 0
        self.last_error: str | None = None
        self._latest: float | None = None
        with manager.ledger.write() as db:
            db.execute(_STATE)
        row = manager.ledger.read().execute(
            "SELECT MAX(at) FROM watch_checkpoints WHERE watch = ?", (self.name,)).fetchone()
        self._last_at: float | None = row[0] if row is not None else None

    def _newest(self) -> float | None:
        rows = self._run(f"SELECT toUnixTimestamp64Nano(max(Timestamp)) AS t, count() AS n "
                         f"FROM {self.table}")
        if not rows or not int(rows[0]["n"]):
            return None
        return int(rows[0]["t"]) / 1e9

    def step(self) -> list[Evaluation]:
        """One poll: evaluate every ``every`` boundary the newest span has passed."""
        try:
            newest = self._newest()
        except ClickHouseError as error:
            self.errors += 1
            if self.last_error is None:
                print(f"prodlens watch: ClickHouse unreachable (retrying): {error}",
                      file=sys.stderr)
            self.last_error = str(error)
            return []
        self.last_error = None
        if newest is None:
            return []
        self._latest = newest
        every = self.options.every
        if self._last_at is None:  # first run: start evaluating one window back
            self._last_at = math.floor((newest - self.options.window) / every) * every
        evaluations = []
        while self._last_at + every + self.options.grace <= newest:
            at = self._last_at + every
            tested = tested_options(self.options)
            view = ClickHouseView(self._run, tested, self.table, at - self.options.window, at,
                                  every)
            recent = (ClickHouseView(self._run, tested, self.table, at - self.options.recent,
                                     at, every)
                      if 0 < self.options.recent < self.options.window else None)
            try:
                evaluation = self.detector.evaluate(view, at, recent=recent)
            except ClickHouseError as error:
                self.errors += 1
                self.last_error = str(error)
                break
            self._last_at = at
            self.evaluations += 1
            with self.manager.ledger.write() as db:
                db.execute("INSERT OR REPLACE INTO watch_checkpoints VALUES (?, ?, '{}')",
                           (self.name, at))
                db.execute("DELETE FROM watch_checkpoints WHERE watch = ? AND at < ?",
                           (self.name, at))
            for incident in evaluation.opened:
                self._print(f"{iso(at)} OPEN {incident.text()}")
            for incident in evaluation.resolved:
                self._print(f"{iso(at)} RESOLVED {incident.text()}")
            evaluations.append(evaluation)
        return evaluations

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def status_line(self) -> str:
        pending = len(self.manager.ledger.pending())
        error = f", ClickHouse failing: {self.last_error}" if self.last_error else ""
        return (f"watch: span time {iso(self._latest) if self._latest else 'none yet'}, "
                f"{self.evaluations:,} evaluations, {len(self.manager.firing())} firing, "
                f"{pending} deliveries pending{error}")

    def run(self, stop: threading.Event, *, status_every: float = 60.0) -> None:
        last_status = time.monotonic()
        while not stop.is_set():
            self.step()
            if time.monotonic() - last_status >= status_every:
                last_status = time.monotonic()
                self._print(self.status_line())
            stop.wait(self.options.poll)


__all__ = ["ClickHouseView", "ClickHouseWatcher"]
