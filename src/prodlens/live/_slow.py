"""``--slower-than``: slow units count as failed (latency is the other partial failure).

The engine decides failure from a root span's status. A second, minimal decode of the same line
reads each span's start and end (which the engine's decoder skips), and a local root slower than
the threshold gets an ERROR status on the engine's decoded span before the engine sees it. The
second decode costs only with the option on.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

_ROOT_KINDS: Final = frozenset({2, 5, "SPAN_KIND_SERVER", "SPAN_KIND_CONSUMER"})
_REMOTE_PARENT: Final = 0x300
_SLOW: Final = {"code": 2, "message": "slower than --slower-than"}


class _Span(msgspec.Struct, gc=False):
    parentSpanId: Any = None
    flags: Any = 0
    kind: Any = None
    startTimeUnixNano: Any = None
    endTimeUnixNano: Any = None


class _Scope(msgspec.Struct, gc=False):
    spans: list[_Span] | None = None


class _Resource(msgspec.Struct, gc=False):
    scopeSpans: list[_Scope] | None = None


class _Request(msgspec.Struct, gc=False):
    resourceSpans: list[_Resource] | None = None


_DECODER: Final = msgspec.json.Decoder(_Request)


def mark_slow(line: bytes, request: Any, threshold_ns: int) -> int:
    """Give every local root span of ``request`` slower than ``threshold_ns`` an ERROR status.

    ``request`` is the engine's decode of ``line``; spans are matched by position. Returns the
    number of spans marked; a line this decoder cannot read is left as it is (the engine
    reports it if it is broken).
    """
    try:
        timed = _DECODER.decode(line)
    except (msgspec.DecodeError, ValueError):
        return 0
    marked = 0
    for resource, engine_resource in zip(timed.resourceSpans or (),
                                         request.resourceSpans or (), strict=False):
        for scope, engine_scope in zip(resource.scopeSpans or (),
                                       engine_resource.scopeSpans or (), strict=False):
            for span, engine_span in zip(scope.spans or (), engine_scope.spans or (),
                                         strict=False):
                local_root = (not span.parentSpanId or span.kind in _ROOT_KINDS
                              or (span.flags & _REMOTE_PARENT) == _REMOTE_PARENT)
                if not local_root:
                    continue
                try:
                    duration = int(span.endTimeUnixNano) - int(span.startTimeUnixNano)
                except (TypeError, ValueError):
                    continue
                if duration > threshold_ns:
                    engine_span.status = dict(_SLOW)
                    marked += 1
    return marked
