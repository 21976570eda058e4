"""The one writer of identity onto spans, at the cost of one dict update.

The processor's stamp at span start, late tagging of still-open ancestors (``identify()``, the
integrations' late sources) and OpenFeature flag variants all write through :func:`stamp` /
:func:`stamp_starting`; nothing else in prodlens writes span attributes.

``Span.set_attributes`` validates and copies every value on every call (about 0.7 us per
attribute: ``isinstance`` chains, a per-key lock round trip), and prodlens calls it on every
span. The values prodlens writes are already clean: strings bounded by
``PRODLENS_MAX_VALUE_LENGTH`` (or an int), under keys that are valid attribute names. So when
it is safe, :func:`stamp` merges them into the span's attribute dict directly, under the same
two locks ``set_attributes`` takes (:func:`stamp_starting`, for a span inside ``on_start`` that
no other thread can reach yet, takes none); the result is the one ``set_attributes`` would give.

This relies on how the SDK stores span attributes (a ``BoundedAttributes`` with a plain
``_dict``), which is not public API. It is therefore checked, not assumed: the first use runs
:func:`fast_path_works`, which stamps two probe spans both ways and compares the results
(attributes, their order, dropped counts). If the SDK stores attributes differently, the check
fails and every stamp goes through ``set_attributes``. The direct write is also skipped, per
span, whenever ``set_attributes`` would do more than store the values: a span attribute-count
limit that would evict, a value-length limit that would truncate, or a span that has ended (the
SDK logs a warning and writes nothing). A key already set is rewritten the SDK's way (moved
after the others, in the order written). ``PRODLENS_DIRECT_STAMP=false`` turns the direct write
off (:func:`use_direct`); when the probe turns it off, that is logged at INFO.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan, Span
from opentelemetry.util.types import AttributeValue

__all__ = ["attribute_dict", "fast_path_works", "stamp", "stamp_starting", "use_direct"]

_logger: Final = logging.getLogger("prodlens")
_BOUNDED: Final = BoundedAttributes
_EMPTY: Final[Mapping[str, AttributeValue]] = MappingProxyType({})
#: Whether the direct write is in use: None until the first stamp runs the probe.
_fast: bool | None = None
#: The probe's verdict on the installed SDK, once run.
_probed: bool | None = None


def use_direct(enabled: bool) -> None:
    """Allow the direct write (still subject to the probe) or forbid it
    (``PRODLENS_DIRECT_STAMP``)."""
    global _fast
    _fast = _probed if enabled else False


def stamp(span: Span, attributes: Mapping[str, AttributeValue], longest: int) -> None:
    """Set ``attributes`` on ``span`` exactly as ``span.set_attributes`` would.

    Args:
        span: an SDK span, open or ended, that other threads may be writing to.
        attributes: valid attribute names to strings or ints (no sequences).
        longest: the length of the longest string value (0 when there are none), checked
            against the span's value-length limit.
    """
    fast = _fast
    if fast is None:
        fast = _decide()
    if not (fast and _direct(span, attributes, longest)):
        span.set_attributes(attributes)


def stamp_starting(span: Span, attributes: Mapping[str, AttributeValue], longest: int) -> None:
    """:func:`stamp` for a span inside its processors' ``on_start``, before anything else can
    see it: the SDK has not returned the span to anyone yet, so no other thread can reach it
    and the two locks are not taken."""
    fast = _fast
    if fast is None:
        fast = _decide()
    if not (fast and _merge(span, attributes, longest)):
        span.set_attributes(attributes)


def attribute_dict(span: ReadableSpan) -> Mapping[str, AttributeValue]:
    """The span's attributes, read-only: a view of the SDK's own dict when the direct path is
    in use (no copy), else the public read-only mapping.

    Reading it without the span's lock is as safe as reading any dict another thread may
    write to: each look-up sees the value before or after a write, never a torn one.
    """
    if _fast or (_fast is None and _decide()):
        bounded: Any = span._attributes
        if bounded.__class__ is _BOUNDED:
            return MappingProxyType(bounded._dict)
    return span.attributes or _EMPTY


def _direct(span: Span, attributes: Mapping[str, AttributeValue], longest: int) -> bool:
    """Merge ``attributes`` into the span's attribute dict when that is all ``set_attributes``
    would do; False (nothing written) otherwise."""
    bounded: Any = span._attributes
    if bounded.__class__ is not _BOUNDED:  # its lock may not exist; _merge checks the rest
        return False
    with span._lock, bounded._lock:  # the order Span.set_attributes takes them in
        return _merge(span, attributes, longest)


def _merge(span: Span, attributes: Mapping[str, AttributeValue], longest: int) -> bool:
    """The write itself; the caller holds the span's locks or owns the span alone."""
    bounded: Any = span._attributes
    if bounded.__class__ is not _BOUNDED or span._end_time is not None:
        return False
    values = bounded._dict
    limit = bounded.maxlen
    length_limit = bounded.max_value_len
    before = len(values)
    if ((limit is None or before + len(attributes) <= limit)
            and (length_limit is None or longest <= length_limit)
            and not bounded._immutable):
        values.update(attributes)
        if len(values) != before + len(attributes):
            # A key was already set: set_attributes re-inserts every key it writes, in order,
            # after the others. Rare; checking for it up front would cost every span.
            for key in attributes:
                values[key] = values.pop(key)
        return True
    return False


def _probe_pair(initial: Mapping[str, AttributeValue], limit: int | None,
                length_limit: int | None) -> tuple[Span, Span]:
    """Two identical open spans from a private provider (no processor: never exported)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    provider = TracerProvider(
        sampler=ALWAYS_ON, resource=Resource({}), shutdown_on_exit=False,
        span_limits=SpanLimits(max_span_attributes=limit, max_attribute_length=length_limit),
    )
    tracer = provider.get_tracer("prodlens.probe")
    pair = tuple(tracer.start_span("probe", attributes=initial) for _ in range(2))
    return pair[0], pair[1]  # type: ignore[return-value]


def fast_path_works() -> bool:
    """True if a direct write gives what ``set_attributes`` gives on the installed SDK.

    Stamps pairs of probe spans (from a private provider with no processor: never exported)
    one way each, with and without limits, with a key already present, and compares the
    attributes, their order and the dropped counts. The probes stay within the limits, so the
    SDK logs nothing.
    """
    cases: tuple[tuple[dict[str, AttributeValue], dict[str, AttributeValue], int | None,
                       int | None, int], ...] = (
        ({"http.route": "/a"}, {"enduser.id": "acme", "prodlens.cohort.plan": "pro"},
         None, None, 4),
        ({"http.route": "/a"}, {"enduser.id": "acme", "prodlens.repeat_count": 3}, 3, 8, 4),
        ({"enduser.id": "old", "z": "1"}, {"enduser.id": "new"}, None, None, 3),
    )
    try:
        for initial, attributes, limit, length_limit, longest in cases:
            direct, reference = _probe_pair(initial, limit, length_limit)
            if not _direct(direct, attributes, longest):
                direct.set_attributes(attributes)
            reference.set_attributes(attributes)
            if (list(direct.attributes.items()) != list(reference.attributes.items())  # type: ignore[union-attr]
                    or direct.dropped_attributes != reference.dropped_attributes):
                return False
        # The direct write itself must have happened in the plain case, and be visible.
        direct, _ = _probe_pair({}, None, None)
        written = _direct(direct, {"prodlens.probe": "1"}, 1)
        direct.end()
        readable: Any = direct._readable_span()
        return (written and dict(direct.attributes or {}) == {"prodlens.probe": "1"}
                and readable._attributes.__class__ is _BOUNDED
                and readable._attributes._dict == {"prodlens.probe": "1"})
    except Exception:  # any surprise in the SDK's internals: use the public API
        return False


def _decide() -> bool:
    global _fast, _probed
    works = fast_path_works()
    _fast = _probed = works
    if not works:
        _logger.info("prodlens: this SDK's span attributes are not the expected "
                     "BoundedAttributes; stamping through Span.set_attributes")
    return works
