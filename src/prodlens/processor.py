"""The span processor: stamps every span with the current identity at start.

On start it stamps the span with the current scope's identity (its attribute mapping is built
once per identity, not per span, and written through :mod:`prodlens._stamp`, the one span
writer) and remembers the span while it is open (in its scope's span list, or the process-wide
table outside scopes), so a late ``identify()`` can tag it as an ancestor.

Example::

    from opentelemetry.sdk.trace import TracerProvider
    import prodlens

    provider = TracerProvider()
    prodlens.configure(provider)  # adds ProdlensSpanProcessor once per provider
"""

from __future__ import annotations

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from prodlens import _runtime
from prodlens._open_spans import OPEN_SPANS
from prodlens._safety import internal_error
from prodlens._scope import SCOPE
from prodlens._stamp import stamp_starting

__all__ = ["ProdlensSpanProcessor"]


def open_span_count() -> int:
    """How many spans started outside every prodlens scope are remembered as open (bounded by
    PRODLENS_MAX_OPEN_SPANS); spans started in a scope are remembered in its ``spans``."""
    return len(OPEN_SPANS)


class ProdlensSpanProcessor(SpanProcessor):
    """Stamps every span with the current identity and tracks open spans (bounded).

    Inert while prodlens is disabled (``PRODLENS_ENABLED=false`` or after the instrumentor's
    ``uninstrument()``): the SDK cannot detach a processor, so this one checks on every span.
    """

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        # A plain try/except rather than ``with guard(...)``: this runs for every span, and a
        # guard costs ~0.4 us here (timeit), about as much as the whole stamp.
        try:
            runtime = _runtime.current()
            if not runtime.on:
                return
            # Stamped before the span is published (in its scope's span list or the open-span
            # table): until then no other thread can reach it, so the write takes no lock
            # (prodlens._stamp.stamp_starting).
            scope = SCOPE.get()
            if scope is not None:
                identity = scope.identity
                if identity is not None and identity.attributes:
                    stamp_starting(span, identity.attributes, identity.longest)
                # Remembered in its scope: one append, nothing to undo in on_end.
                spans = scope.spans
                spans.append(span)
                if len(spans) >= scope.compact_at:
                    scope.compact(runtime.max_open_spans)
                return
            OPEN_SPANS.add(span, runtime.max_open_spans)
        except Exception as error:
            internal_error("span start", error)

    def on_end(self, span: ReadableSpan) -> None:
        try:
            OPEN_SPANS.remove(span)
        except Exception as error:
            internal_error("span end", error)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
