"""The watch loop: follow spans, close buckets on span time, evaluate, checkpoint.

Time is *span* time throughout: a bucket of ``every`` seconds closes once spans ``grace``
seconds past its end have been read, and its closing is an evaluation at its end. Reading a
day of spans in a minute therefore evaluates a day's worth of windows, exactly as live.

Checkpoints: after each evaluation the follower's positions are saved in the ledger. A
restarted ``watch`` goes back to the checkpoint one window before its last evaluation and
re-reads from there, so its window is whole again; evaluations it had already made are
replayed with ``live=False`` (firing incidents get the customers they may have missed, each
once; nothing opens or resolves twice).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Final

from prodlens.analysis import SliceOptions
from prodlens.analysis._reader import (
    ReadProgress,
    load_decoder,
    load_json_parser,
    why_malformed,
)
from prodlens.incidents import IncidentManager, Ledger, iso
from prodlens.live._detect import DetectOptions, Detector, Evaluation
from prodlens.live._follow import Follower
from prodlens.live._window import BucketBuilder, WindowAggregates

#: A span time further than this ahead of what was read so far is not trusted to move time.
_MAX_JUMP: Final = 3600.0

_CHECKPOINTS: Final = """
CREATE TABLE IF NOT EXISTS watch_checkpoints (
    watch TEXT NOT NULL,
    at REAL NOT NULL,
    positions TEXT NOT NULL,
    PRIMARY KEY (watch, at)
)
"""


@dataclass(frozen=True, slots=True)
class WatchOptions:
    """How ``watch`` reads and evaluates.

    Attributes:
        window: Seconds of span time evaluated at once.
        every: Seconds of span time between evaluations (the bucket size).
        grace: Seconds of span time waited past a bucket's end for late spans.
        poll: Wall-clock seconds between looks at the files when nothing new was read.
        recent: Seconds of span time of the recent window also evaluated (0: none); both
            reports are tested at half of ``slice.alpha``.
        from_start: Read files that exist at start from their beginning.
        slow_after: Seconds after which a unit counts as failed (``--slower-than``), or None.
        slice: The engine's options (unit, filters, thresholds, ``alpha``).
        detect: The incident rules.
    """

    window: float = 300.0
    every: float = 10.0
    recent: float = 30.0
    grace: float = 5.0
    poll: float = 1.0
    from_start: bool = False
    slow_after: float | None = None
    slice: SliceOptions = field(default_factory=lambda: SliceOptions(alpha=1e-5))
    detect: DetectOptions = field(default_factory=DetectOptions)


def tested_options(options: WatchOptions) -> SliceOptions:
    """The engine's options for each report: half of ``alpha`` each when two windows are
    ranked, so the family-wise level per evaluation stays ``alpha``."""
    if 0 < options.recent < options.window:
        return dataclasses.replace(options.slice, alpha=options.slice.alpha / 2)
    return options.slice


def watch_name(paths: Sequence[str]) -> str:
    """The checkpoint key of a set of inputs (several watches may share one ledger)."""
    return hashlib.sha256("\0".join(sorted(paths)).encode()).hexdigest()[:16]


def _request_time(request: Any) -> float | None:
    """The start of a request's first span, in seconds (None if it has no span)."""
    for resource_spans in request.resourceSpans or ():
        for scope_spans in resource_spans.scopeSpans or ():
            for span in scope_spans.spans or ():
                start = span.startTimeUnixNano
                if start is None:
                    continue
                try:
                    return int(start) / 1e9
                except (TypeError, ValueError):
                    return None
    return None


class Watcher:
    """Follows files and raises incidents. ``step()`` does one poll; ``run()`` loops."""

    def __init__(self, paths: Sequence[str], options: WatchOptions, manager: IncidentManager,
                 *, out: IO[str] | None = None,
                 on_evaluation: Callable[[Evaluation], None] | None = None) -> None:
        self.options = options
        self.manager = manager
        self.ledger: Ledger = manager.ledger
        self.out = out or sys.stdout
        self._on_evaluation = on_evaluation
        self.name = watch_name([str(path) for path in paths])
        self.detector = Detector(manager, options.detect, every=options.every)
        self.window = WindowAggregates(tested_options(options))
        self.recent = (WindowAggregates(tested_options(options))
                       if 0 < options.recent < options.window else None)
        self.builder = BucketBuilder(options.slice, options.every)
        self.progress: ReadProgress = self.builder.progress
        self._decode = load_decoder()
        self._loads = load_json_parser()
        self._watermark: float | None = None
        self._next: int | None = None  # the next bucket to close
        self.replay_until = -math.inf
        self._slow_ns = (None if options.slow_after is None
                         else int(options.slow_after * 1_000_000_000))
        self._mark_slow: Callable[[bytes, Any, int], int] | None = None
        if self._slow_ns is not None:
            # imports msgspec (the analyze extra), like the engine's reader: only when reading
            from prodlens.live._slow import mark_slow

            self._mark_slow = mark_slow
        self.evaluations = 0
        self.last_evaluation: Evaluation | None = None
        with self.ledger.write() as db:
            db.execute(_CHECKPOINTS)
        positions = self._restore()
        self.follower = Follower(paths, from_start=options.from_start, positions=positions)

    # -- checkpoints -----------------------------------------------------------------------

    def _restore(self) -> dict[str, int] | None:
        rows = self.ledger.read().execute(
            "SELECT at, positions FROM watch_checkpoints WHERE watch = ? ORDER BY at",
            (self.name,)).fetchall()
        if not rows:
            return None
        last = rows[-1]["at"]
        self.replay_until = last
        start = rows[0]
        for row in rows:
            if row["at"] <= last - self.options.window:
                start = row
        positions: dict[str, int] = json.loads(start["positions"])
        return positions

    def _checkpoint(self, at: float) -> None:
        if at <= self.replay_until:
            return  # the ledger already holds checkpoints up to here
        keep_after = at - self.options.window - 3 * self.options.every
        with self.ledger.write() as db:
            db.execute("INSERT OR REPLACE INTO watch_checkpoints VALUES (?, ?, ?)",
                       (self.name, at, json.dumps(self.follower.positions)))
            db.execute("DELETE FROM watch_checkpoints WHERE watch = ? AND at < ?",
                       (self.name, keep_after))

    # -- reading ---------------------------------------------------------------------------

    def step(self) -> list[Evaluation]:
        """Read what is new, close the buckets that are due and evaluate each; returns the
        evaluations made."""
        evaluations: list[Evaluation] = []
        for path, line in self.follower.poll():
            self.progress.lines += 1
            if line.isspace():
                continue
            try:
                request = self._decode(line)
            except (ValueError, RecursionError) as error:
                self.progress.bad_line(path, why_malformed(line, error, self._loads))
                continue
            evaluations.extend(self._consume(path, line, request))
        return evaluations

    def _consume(self, path: str, line: bytes, request: Any) -> list[Evaluation]:
        seconds = _request_time(request)
        if seconds is None:
            return []
        if self._watermark is None:
            self._watermark = seconds
            self._next = self.builder.index(seconds)
        elif seconds > self._watermark:
            if seconds - self._watermark > _MAX_JUMP and self.window.buckets:
                seconds = self._watermark  # a clock far ahead: count it, do not jump to it
            self._watermark = seconds
        assert self._next is not None
        index = max(self.builder.index(seconds), self._next)  # late: the oldest open bucket
        self.progress.line = line
        if self._mark_slow is not None and self._slow_ns is not None:
            self._mark_slow(line, request, self._slow_ns)
        try:
            self.builder.aggregates(index).consume(request, self.progress)
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            self.progress.bad_request(path, error)
        return self._close_due()

    def _close_due(self) -> list[Evaluation]:
        evaluations = []
        assert self._watermark is not None and self._next is not None
        every = self.options.every
        while (self._next + 1) * every + self.options.grace <= self._watermark:
            bucket = self.builder.close(self._next)
            self._next += 1
            at = self._next * every
            self.window.add(bucket)
            self.window.evict_before(at - self.options.window)
            if self.recent is not None:
                self.recent.add(bucket)
                self.recent.evict_before(at - self.options.recent)
            evaluations.append(self._evaluate(at))
        return evaluations

    def _evaluate(self, at: float) -> Evaluation:
        live = at > self.replay_until
        evaluation = self.detector.evaluate(self.window, at, live=live, recent=self.recent)
        self.evaluations += 1
        self.last_evaluation = evaluation
        self._checkpoint(at)
        for incident in evaluation.opened:
            self._print(f"{iso(at)} OPEN {incident.text()}")
        for incident in evaluation.resolved:
            self._print(f"{iso(at)} RESOLVED {incident.text()}")
        if self._on_evaluation is not None:
            self._on_evaluation(evaluation)
        return evaluation

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def status_line(self) -> str:
        """Lines read, malformed, span time reached, incidents and deliveries (for the log)."""
        deliverer = self.manager.deliverer
        pending = len(self.ledger.pending())
        delivery = ""
        if deliverer is not None:
            counts = deliverer.counts
            delivery = f", {counts.delivered:,} delivered"
            if counts.errors_by_target:
                delivery += f", failing: {'; '.join(counts.errors_by_target.values())}"
        span_time = iso(self._watermark) if self._watermark is not None else "none yet"
        firing = len(self.manager.firing())
        return (f"watch: {self.progress.lines:,} lines ({self.progress.malformed:,} malformed), "
                f"span time {span_time}, {self.evaluations:,} evaluations, {firing} firing, "
                f"{pending} deliveries pending{delivery}")

    def run(self, stop: threading.Event, *, status_every: float = 60.0) -> None:
        """Poll until ``stop`` is set, printing a status line every ``status_every`` seconds."""
        last_status = time.monotonic()
        reported = 0
        while not stop.is_set():
            before = self.progress.lines
            self.step()
            for example in self.progress.examples[reported:]:
                print(f"prodlens watch: malformed line: {example}", file=sys.stderr)
            reported = len(self.progress.examples)
            for problem in self.follower.unreadable:
                print(f"prodlens watch: cannot read {problem}", file=sys.stderr)
            if time.monotonic() - last_status >= status_every:
                last_status = time.monotonic()
                self._print(self.status_line())
            if self.progress.lines == before:
                stop.wait(self.options.poll)
