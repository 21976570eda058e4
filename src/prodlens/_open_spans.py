"""Bookkeeping of open spans, so late identification can reach their open ancestors.

An SDK span's ``parent`` is only a ``SpanContext``: to find the span object of a parent that is
still open, prodlens remembers the spans it saw start. A span started inside a prodlens scope
(a request, a ``tag()`` block) is appended to that scope's ``spans`` list: one list append, and
nothing to undo when the span ends, since the list goes when the scope does. Ended spans are
dropped from the list each time it doubles (past :data:`COMPACT_AT`), so a long-lived scope (a
websocket connection, a worker loop) holds its open spans plus a few ended ones. A span started
outside every scope goes into one process-wide table by span id, removed when it ends.

Both are bounded by ``PRODLENS_MAX_OPEN_SPANS`` (per scope, and for the table): past it, the
oldest entries are forgotten (an application that never ends some spans cannot leak memory; a
forgotten ancestor simply does not get late tags).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

from opentelemetry.sdk.trace import ReadableSpan, Span
from opentelemetry.trace import INVALID_SPAN_ID

from prodlens._safety import log_once
from prodlens._stamp import stamp

if TYPE_CHECKING:
    from prodlens.identity import Identity

#: Walking up stops after this many ancestors (guards against cycles and absurd depths).
MAX_DEPTH: Final = 256
#: A scope's span list is first compacted at this length (then each time it doubles).
COMPACT_AT: Final = 64


class SpanScope(Protocol):
    """What the walk needs of a ``prodlens._scope.Scope``."""

    @property
    def spans(self) -> list[Span]: ...

    @property
    def outer(self) -> SpanScope | None: ...


def compact_spans(spans: list[Span], limit: int) -> list[Span]:
    """``spans`` without the ended ones, and without the oldest open ones past ``limit``."""
    kept = [span for span in spans if span.end_time is None]
    if len(kept) > limit:
        kept = kept[len(kept) - limit:]
        _warn_limit(limit)
    return kept


def _warn_limit(limit: int) -> None:
    log_once(
        "limit:open_spans", logging.WARNING,
        "prodlens: more than %d spans are open at once; the oldest are forgotten and will "
        "not receive late identify() tags. Raise PRODLENS_MAX_OPEN_SPANS if this is expected.",
        limit,
    )


def open_span_finder(scope: SpanScope | None) -> Callable[[int], Span | None]:
    """``find(span_id)``: the open span with that id, from the process-wide table or the
    spans of ``scope`` and of the scopes it opened inside (indexed at the first miss)."""
    table = OPEN_SPANS.table
    index: dict[int, Span] | None = None

    def find(span_id: int) -> Span | None:
        nonlocal index
        span = table.get(span_id)
        if span is not None or scope is None:
            return span
        if index is None:
            index = {}
            current: SpanScope | None = scope
            for _ in range(MAX_DEPTH):
                if current is None:
                    break
                for candidate in current.spans:
                    if candidate.end_time is None:
                        index.setdefault(candidate.context.span_id, candidate)
                current = current.outer
        return index.get(span_id)

    return find


class OpenSpans:
    """Open spans by span id; bounded, thread-safe for CPython's atomic dict operations."""

    def __init__(self) -> None:
        #: span id -> open span.
        self.table: dict[int, Span] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.table)

    def add(self, span: Span, limit: int) -> None:
        """Remember ``span`` (started outside every scope) until it ends; at most ``limit``."""
        table = self.table
        table[span.context.span_id] = span
        if len(table) > limit:
            self.evict(limit)

    def remove(self, span: ReadableSpan) -> None:
        """Forget ``span`` (it ended); nothing to do for spans started in a scope."""
        if self.table:  # empty whenever every span starts inside a scope: skip the hashing
            self.table.pop(span.context.span_id, None)

    def evict(self, limit: int) -> None:
        """Forget the oldest spans once more than ``limit`` are open."""
        with self._lock:
            spans = self.table
            excess = len(spans) - limit
            if excess <= 0:
                return
            # Forget the oldest tenth at once, so eviction is rare under steady overflow.
            drop = max(excess, limit // 10)
            for span_id in list(spans)[:drop]:
                spans.pop(span_id, None)
        _warn_limit(limit)


OPEN_SPANS: Final = OpenSpans()


def tag_open_ancestors(
    start: Span,
    identity: Identity,
    boundary: int | None,
    scope: SpanScope | None = None,
) -> None:
    """Stamp ``identity`` on ``start`` and on each of its still-open ancestors in this process.

    Stops at the local root (a parent that is remote or unknown), at ``boundary`` (the span
    that was current when a ``tag()`` scope opened: identity set inside that scope never reaches
    above it), at a span that already ended, and at an ancestor that already carries a different
    customer (left as it is). The current span itself always takes the new identity. Ancestors
    are looked up in the process-wide table and in ``scope``'s spans (the current scope).
    """
    find = open_span_finder(scope)
    customer = identity.customer
    customer_attribute = identity.customer_attribute
    attributes, longest = identity.attributes, identity.longest
    span: Span | None = start
    depth = 0
    trace_id = start.context.trace_id
    while span is not None and depth < MAX_DEPTH:
        context = span.context
        if boundary is not None and context.span_id == boundary:
            return
        if span.end_time is not None:
            return
        if depth > 0 and customer is not None and span.attributes:
            existing = span.attributes.get(customer_attribute)
            if existing is not None and existing != customer:
                return  # this ancestor, and those above it, belong to another customer's scope
        stamp(span, attributes, longest)
        parent = span.parent
        if parent is None or parent.is_remote or parent.span_id == INVALID_SPAN_ID:
            return
        if parent.trace_id != trace_id:
            return
        span = find(parent.span_id)
        depth += 1
