"""Bookkeeping of open spans, so late identification can reach their open ancestors.

An SDK span's ``parent`` is only a ``SpanContext``: to find the span object of a parent that is
still open, prodlens remembers every open span by span id between ``on_start`` and ``on_end``.
The table is bounded by ``PRODLENS_MAX_OPEN_SPANS``: past it, the oldest entries are forgotten
(an application that never ends some spans cannot leak memory; a forgotten ancestor simply does
not get late tags).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Final

from opentelemetry.sdk.trace import ReadableSpan, Span
from opentelemetry.trace import INVALID_SPAN_ID

from prodlens._safety import log_once

#: Walking up stops after this many ancestors (guards against cycles and absurd depths).
MAX_DEPTH: Final = 256


class OpenSpans:
    """Open spans by span id; bounded, thread-safe for CPython's atomic dict operations."""

    def __init__(self) -> None:
        #: span id -> open span. The processor writes it directly on the hot path.
        self.table: dict[int, Span] = {}
        self._spans = self.table
        self._lock = threading.Lock()

    def add(self, span: Span, limit: int) -> None:
        spans = self._spans
        spans[span.context.span_id] = span
        if len(spans) > limit:
            self.evict(limit)

    def discard(self, span: ReadableSpan) -> None:
        context = span.context
        if context is not None:
            self._spans.pop(context.span_id, None)

    def get(self, span_id: int) -> Span | None:
        return self._spans.get(span_id)

    def __len__(self) -> int:
        return len(self._spans)

    def evict(self, limit: int) -> None:
        """Forget the oldest spans once more than ``limit`` are open."""
        with self._lock:
            spans = self._spans
            excess = len(spans) - limit
            if excess <= 0:
                return
            # Forget the oldest tenth at once, so eviction is rare under steady overflow.
            drop = max(excess, limit // 10)
            for span_id in list(spans)[:drop]:
                spans.pop(span_id, None)
        log_once(
            "limit:open_spans", logging.WARNING,
            "prodlens: more than %d spans are open at once; the oldest are forgotten and will "
            "not receive late identify() tags. Raise PRODLENS_MAX_OPEN_SPANS if this is expected.",
            limit,
        )


OPEN_SPANS: Final = OpenSpans()


def tag_open_ancestors(
    start: Span,
    stamp: Mapping[str, str],
    customer_attribute: str,
    customer: str | None,
    boundary: int | None,
) -> None:
    """Set ``stamp`` on ``start`` and on each of its still-open ancestors in this process.

    Stops at the local root (a parent that is remote or unknown), at ``boundary`` (the span
    that was current when a ``tag()`` scope opened: identity set inside that scope never reaches
    above it), at a span that already ended, and at an ancestor that already carries a different
    customer (left as it is). The current span itself always takes the new identity.
    """
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
        span.set_attributes(stamp)
        parent = span.parent
        if parent is None or parent.is_remote or parent.span_id == INVALID_SPAN_ID:
            return
        if parent.trace_id != trace_id:
            return
        span = OPEN_SPANS.get(parent.span_id)
        depth += 1
