"""Refresh-storm signals: how often one customer hit one route in the last N seconds.

When a subgroup fails, its users retry and refresh, multiplying load on exactly the part that is
already hurting. For every local root span (a request or a consumed message) prodlens counts the
requests the same customer made to the same route in the last ``PRODLENS_STORM_WINDOW_SECONDS``
in this process, this one included, and writes the count to ``prodlens.repeat_count`` on the
span, so any backend can slice "is this a storm?". The metrics processor also counts requests
whose count reaches ``PRODLENS_STORM_THRESHOLD`` (``prodlens.requests.repeated``).

Memory is bounded: at most ``PRODLENS_STORM_MAX_KEYS`` customer-route pairs are remembered (least
recently seen are forgotten first), each as a two-bucket sliding-window counter keyed by a
64-bit hash (the customer id itself is not kept). ``PRODLENS_STORMS=false`` turns storm
tracking off (the cohort metrics stay on). Environment variables::

    export PRODLENS_STORMS=true
    export PRODLENS_STORM_WINDOW_SECONDS=60
    export PRODLENS_STORM_MAX_KEYS=100000
    export PRODLENS_STORM_THRESHOLD=3

Example::

    >>> from prodlens.signals.storms import RepeatTracker
    >>> now = [0.0]
    >>> tracker = RepeatTracker(window_seconds=60, max_keys=1000, clock=lambda: now[0])
    >>> [tracker.hit("acme", "/cart") for _ in range(3)]
    [1, 2, 3]
    >>> tracker.hit("globex", "/cart")
    1
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from itertools import islice
from typing import Final

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from prodlens import _runtime, attributes
from prodlens._open_spans import MAX_DEPTH, open_span_finder
from prodlens._safety import internal_error, log_once
from prodlens._scope import SCOPE
from prodlens._stamp import attribute_dict, stamp, stamp_starting

__all__ = ["RepeatTracker", "StormSpanProcessor", "StormTagger"]

#: Root spans waiting for their customer or route (bounded; see StormTagger).
MAX_PENDING: Final = 10000
_ROUTE: Final = "http.route"
#: Counts per window saturate at 2**21 - 1 (two counts and the bucket packed in one int).
_COUNT_BITS: Final = 21
_COUNT_MASK: Final = (1 << _COUNT_BITS) - 1
_BUCKET_SHIFT: Final = 2 * _COUNT_BITS


class RepeatTracker:
    """Requests per (customer, route) in a sliding window; bounded memory, thread-safe.

    Each pair keeps a two-bucket sliding-window counter (the current and the previous window),
    and the estimate is ``current + previous * (share of the previous window still inside the
    sliding window)``: exact for the requests in the current bucket, interpolated for the
    previous one. At most ``max_keys`` pairs are kept; past it the least recently seen are
    forgotten (a sixteenth at a time, so eviction stays cheap), logged once.

    Args:
        window_seconds: length of the sliding window.
        max_keys: most customer-route pairs remembered.
        clock: seconds as a float, monotonic (injectable for tests).
    """

    def __init__(self, window_seconds: float, max_keys: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._window = float(window_seconds)
        self._max_keys = max_keys
        self._clock = clock
        #: hash((customer, route)) -> bucket number, previous and current counts packed in one
        #: int (a third of the memory of a tuple). Insertion order is recency order: a hit pops
        #: the key and re-inserts it.
        self._entries: dict[int, int] = {}
        self._lock = threading.Lock()

    @property
    def window_seconds(self) -> float:
        """Length of the sliding window, in seconds."""
        return self._window

    @property
    def max_keys(self) -> int:
        """Most customer-route pairs remembered."""
        return self._max_keys

    def __len__(self) -> int:
        return len(self._entries)

    def hit(self, customer: str, route: str) -> int:
        """Record one request; the requests in the window for this pair, this one included."""
        now = self._clock()
        window = self._window
        bucket = int(now // window)
        key = hash((customer, route))
        with self._lock:
            entries = self._entries
            entry = entries.pop(key, None)
            if entry is None:
                previous, count = 0, 1
                if len(entries) >= self._max_keys:
                    self._evict()
            else:
                last_bucket = entry >> _BUCKET_SHIFT
                last_count = entry & _COUNT_MASK
                if last_bucket == bucket:
                    previous = (entry >> _COUNT_BITS) & _COUNT_MASK
                    count = last_count + 1 if last_count < _COUNT_MASK else last_count
                elif last_bucket == bucket - 1:
                    previous, count = last_count, 1
                else:
                    previous, count = 0, 1
            entries[key] = (bucket << _BUCKET_SHIFT) | (previous << _COUNT_BITS) | count
        if not previous:
            return count
        remaining = 1.0 - (now - bucket * window) / window
        return count + int(previous * remaining)

    def _evict(self) -> None:
        entries = self._entries
        drop = max(1, self._max_keys // 16)
        for key in list(islice(entries, drop)):
            del entries[key]
        log_once(
            "limit:storm_max_keys", logging.WARNING,
            "prodlens: more than %d customer-route pairs seen within the storm window; the least "
            "recently seen are forgotten (their repeat_count restarts). Raise "
            "PRODLENS_STORM_MAX_KEYS to track more.", self._max_keys,
        )


def customer_of(attrs: Mapping[str, AttributeValue], customer_attribute: str) -> str | None:
    """The customer (or pseudonym) a span carries, as text, or None."""
    value = attrs.get(customer_attribute)
    if value is None:
        value = attrs.get(attributes.PSEUDONYM_ATTRIBUTE)
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def is_request_root(span: ReadableSpan) -> bool:
    """True for a local root (no parent, or a remote one) of kind SERVER or CONSUMER."""
    parent = span.parent
    if parent is not None and not parent.is_remote:
        return False
    kind = span.kind
    return kind is SpanKind.SERVER or kind is SpanKind.CONSUMER


class _Claims(threading.local):
    """The span id this thread's taggers last saw at a root's start (see StormTagger.start)."""

    span_id = 0


class StormTagger:
    """Writes ``prodlens.repeat_count`` on local root spans while they are still open.

    The SDK freezes a span's attributes before any processor sees its end, so the count must be
    written while the root span is open:

    * at the root's start, when its customer and route are already known (Flask and FastAPI
      put ``http.route`` on the server span at start; the customer comes from sources resolved
      before the span opens: header, cookie, query, jwt, baggage);
    * otherwise at the start of the first child span that finds both known on the open root
      (Django sets ``http.route`` after routing, and ``user``/``path`` sources identify late);
    * otherwise never on the span; :meth:`end` still counts the request, so the storm metric
      covers it.

    Inert while ``PRODLENS_STORMS`` is off (re-read when the settings change).

    Args:
        tracker: the counter; default: one built from the settings in force (rebuilt when
            ``prodlens.configure()`` changes them).
    """

    #: Shared by every tagger: the processors of one provider run one after the other on the
    #: same thread for a span's start, so a second tagger sees the first one's claim.
    _claims: Final = _Claims()

    def __init__(self, tracker: RepeatTracker | None = None) -> None:
        self._fixed = tracker
        self._tracker = tracker
        self._generation = -1
        self._enabled = True
        self._customer_attribute = attributes.DEFAULT_CUSTOMER_ATTRIBUTE
        #: Open request roots whose customer or route was unknown at start, by span id.
        self._pending: dict[int, Span] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """``PRODLENS_STORMS`` in force."""
        self._refresh()
        return self._enabled

    def tracker(self) -> RepeatTracker:
        """The tracker in use (for inspection and tests)."""
        self._refresh()
        assert self._tracker is not None
        return self._tracker

    def _refresh(self) -> None:
        runtime = _runtime.current()
        if runtime.generation == self._generation and self._tracker is not None:
            return
        with self._lock:
            settings = runtime.settings
            if self._fixed is None:
                current = self._tracker
                if (current is None or current.window_seconds != settings.storm_window_seconds
                        or current.max_keys != settings.storm_max_keys):
                    self._tracker = RepeatTracker(settings.storm_window_seconds,
                                                  settings.storm_max_keys)
            self._customer_attribute = settings.customer_attribute
            self._enabled = settings.storms
            if not self._enabled:
                self._pending.clear()
            self._generation = runtime.generation

    def start(self, span: Span) -> None:
        """Count the request and tag the span now if it is a root whose pair is known."""
        parent = span.parent
        if parent is not None and not parent.is_remote:
            # A child span: nothing to do unless a root waits for its customer or route.
            if self._pending:
                self._tag_pending_root(parent.span_id)
            return
        kind = span.kind
        if kind is not SpanKind.SERVER and kind is not SpanKind.CONSUMER:
            return
        if _runtime.current().generation != self._generation:
            self._refresh()
        if not self._enabled:
            return
        span_id = span.context.span_id
        claims = self._claims
        if claims.span_id == span_id:
            return  # another prodlens tagger on this provider counts this request
        claims.span_id = span_id
        if not self._try_tag(span, attribute_dict(span), starting=True):
            pending = self._pending
            pending[span_id] = span
            if len(pending) > MAX_PENDING:
                with self._lock:
                    for key in list(islice(pending, len(pending) - MAX_PENDING)):
                        pending.pop(key, None)

    def _try_tag(self, span: Span, attrs: Mapping[str, AttributeValue], *,
                 starting: bool = False) -> bool:
        """Count the request and write its repeat count if its customer and route are known.
        ``starting``: called from the span's own start (no other thread can reach it yet)."""
        customer = attrs.get(self._customer_attribute)
        if customer is None:
            customer = attrs.get(attributes.PSEUDONYM_ATTRIBUTE)
            if customer is None:
                return False
        route = attrs.get(_ROUTE)
        if route is None:
            # A consumer span's name is its destination or task ("run/app.tasks.send"): stable.
            if span.kind is not SpanKind.CONSUMER:
                return False
            route = span.name
        # The same pair as count_untagged (text), whatever type the attribute had.
        if type(customer) is not str:
            customer = str(customer)
        if type(route) is not str:
            route = str(route)
        tracker = self._tracker
        assert tracker is not None
        count = {attributes.REPEAT_COUNT_ATTRIBUTE: tracker.hit(customer, route)}
        (stamp_starting if starting else stamp)(span, count, 0)
        return True

    def _tag_pending_root(self, span_id: int) -> None:
        pending = self._pending
        find = open_span_finder(SCOPE.get())
        for _ in range(MAX_DEPTH):
            root = pending.get(span_id)
            if root is not None:
                if root.end_time is None and self._try_tag(root, attribute_dict(root)):
                    pending.pop(span_id, None)
                return
            ancestor = find(span_id)
            if ancestor is None:
                return
            parent = ancestor.parent
            if parent is None or parent.is_remote:
                return
            span_id = parent.span_id

    def end(self, span: ReadableSpan,
            attrs: Mapping[str, AttributeValue] | None = None) -> int | None:
        """The request's repeat count, counting it now if it was not tagged while open.

        Returns None for spans that are not request roots, that carry no customer, or while
        ``PRODLENS_STORMS`` is off.

        Args:
            span: the ended span.
            attrs: its attributes, if the caller already has them.
        """
        if not is_request_root(span):
            return None
        if self._pending:
            self._pending.pop(span.context.span_id, None)
        if attrs is None:
            attrs = span.attributes or {}
        tagged = attrs.get(attributes.REPEAT_COUNT_ATTRIBUTE)
        if isinstance(tagged, int):
            return tagged
        return self.count_untagged(span, attrs)

    def count_untagged(self, span: ReadableSpan,
                       attrs: Mapping[str, AttributeValue]) -> int | None:
        """Count an ended request root that was not tagged while open (see :meth:`end`)."""
        if self._pending:
            self._pending.pop(span.context.span_id, None)
        self._refresh()
        if not self._enabled:
            return None
        customer = customer_of(attrs, self._customer_attribute)
        if customer is None:
            return None
        route = attrs.get(_ROUTE)
        assert self._tracker is not None
        return self._tracker.hit(customer, str(route) if route is not None else span.name)

    def forget(self, span: ReadableSpan) -> None:
        """Drop a root from the pending table (its end, when no count is wanted)."""
        if self._pending:
            self._pending.pop(span.context.span_id, None)


class StormSpanProcessor(SpanProcessor):
    """Tags request roots with ``prodlens.repeat_count`` (no metrics).

    :class:`prodlens.signals.metrics.CohortMetricsProcessor` does this too (and records the
    storm metric); use this processor alone when metrics are off.

    Example::

        from opentelemetry.sdk.trace import TracerProvider
        from prodlens.signals.storms import StormSpanProcessor

        provider = TracerProvider()
        prodlens.configure(provider, metrics=False)
        provider.add_span_processor(StormSpanProcessor())  # after prodlens's own processor
    """

    def __init__(self, tracker: RepeatTracker | None = None) -> None:
        self.tagger = StormTagger(tracker)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:  # per span: see ProdlensSpanProcessor.on_start on guard
            if _runtime.current().on:
                self.tagger.start(span)
        except Exception as error:
            internal_error("storm tracking", error)

    def on_end(self, span: ReadableSpan) -> None:
        try:  # per span: see ProdlensSpanProcessor.on_start on guard
            self.tagger.forget(span)
        except Exception as error:
            internal_error("storm tracking", error)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
