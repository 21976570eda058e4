"""OTLP/JSON ``ExportTraceServiceRequest`` as msgspec Structs that hold only what the engine reads.

Why Structs: building a dict for every field of every span (``orjson.loads``) cost more than
the whole analysis past it. A typed msgspec decoder skips the fields declared nowhere here (span
ids, end times, events, links, scopes) without making Python objects for them, and keeps span
and resource ``attributes`` as :class:`msgspec.Raw` (their JSON bytes, not parsed): most spans
are neither local roots nor ERRORs, and their attributes are never read. :class:`Attributes`
parses them for the spans the engine looks at closely.

Attribute values must turn into exactly the text :func:`prodlens.analysis._values.value_text`
gives (the ClickHouse engine is compared against it). :class:`AnyValue` therefore accepts only
the usual shape, where decoding gives the same Python values orjson gives; anything else (an
unknown field, a ``null`` string, an integer orjson would turn into a float...) sends the span's
attributes the dict-based engine's way: orjson dicts, read by its code (:class:`LooseKeyValue`).

Why leaves are ``Any``: OTLP/JSON writers differ (``kind`` is ``2`` or ``"SPAN_KIND_SERVER"``,
``startTimeUnixNano`` a string or a number, ``parentSpanId`` ``""``, ``null`` or absent), and the
engine compares leaves exactly as the dict-based engine did, defaults included (a field that is
absent reads as what ``dict.get`` returned). Containers may be ``null`` (protobuf JSON's "not
set") but otherwise must have their JSON type: a request whose ``spans`` is an object is
refused by the decoder and reported as a malformed line. Unknown fields are ignored.

``gc=False``: a decoded request holds no reference cycles, and untracked Structs are cheaper to
make and to free.

This module imports msgspec and orjson at import time: only code that already needs the
``analyze`` extra imports it (see :func:`prodlens.analysis._reader.load_otlp`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Final

import msgspec
import orjson
from msgspec import UNSET, UnsetType

from prodlens.analysis._values import attribute_map, value_text

__all__ = ["MISSING", "NO_ATTRIBUTES", "AnyValue", "Attributes", "ExportRequest", "KeyValue",
           "LooseKeyValue", "LooseValue", "Resource", "ResourceSpans", "ScopeSpans", "Span",
           "attribute_text", "decoder"]


class _Missing:
    """The type of :data:`MISSING`."""

    def __repr__(self) -> str:
        return "MISSING"


#: Default of a field whose absence the engine treats differently from ``null`` (``traceId``:
#: a root without one is a broken request, as ``span["traceId"]`` raised ``KeyError`` before).
MISSING: Final = _Missing()
#: Default ``attributes`` (and ``arrayValue``, ``kvlistValue``): empty, so falsy, never parsed.
NO_ATTRIBUTES: Final = msgspec.Raw()
#: An integer that both decoders keep as the same int (int64). msgspec keeps any integer, orjson
#: turns those past 64 bits into floats: such a value goes the orjson way (see AnyValue).
_Int = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class Span(msgspec.Struct, gc=False):
    """A span's fields that decide its role (local root, ERROR) and, for a root, its unit."""

    # camelCase: the OTLP/JSON names, in the order writers use (msgspec looks for the next
    # field first, so a line in that order decodes a little faster)
    traceId: Any = MISSING
    parentSpanId: Any = None
    flags: Any = 0
    name: Any = ""
    kind: Any = None
    startTimeUnixNano: Any = None
    attributes: msgspec.Raw = NO_ATTRIBUTES
    status: Any = None  # a small dict, read as before (an empty one costs no more than a Struct)


class ScopeSpans(msgspec.Struct, gc=False):
    """``scopeSpans[]``: the scope itself is not read."""

    spans: list[Span] | None = None


class Resource(msgspec.Struct, gc=False):
    """``resource``: its attributes, kept raw (they also key the engine's resource cache)."""

    attributes: msgspec.Raw = NO_ATTRIBUTES


class ResourceSpans(msgspec.Struct, gc=False):
    """``resourceSpans[]``."""

    resource: Resource | None = None
    scopeSpans: list[ScopeSpans] | None = None


class ExportRequest(msgspec.Struct, gc=False):
    """One ``ExportTraceServiceRequest``, one line of the file."""

    resourceSpans: list[ResourceSpans]


def decoder() -> msgspec.json.Decoder[ExportRequest]:
    """A decoder of one line into an :class:`ExportRequest`.

    Raises :class:`msgspec.DecodeError` (:class:`ValueError`) on a line that is not JSON or does
    not have the shape above, and :class:`UnicodeDecodeError` on invalid UTF-8 in a field it
    decodes; the reader works out which, to say so the way it always has.
    """
    return msgspec.json.Decoder(ExportRequest)


class AnyValue(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """An attribute value of the usual shape. Absent fields are ``UNSET``; arrays and maps stay
    raw, parsed by orjson only when such a value is turned into text."""

    stringValue: str | UnsetType = UNSET
    intValue: str | _Int | UnsetType = UNSET
    boolValue: bool | UnsetType = UNSET
    doubleValue: float | _Int | str | UnsetType = UNSET
    bytesValue: str | UnsetType = UNSET
    arrayValue: msgspec.Raw = NO_ATTRIBUTES
    kvlistValue: msgspec.Raw = NO_ATTRIBUTES


class KeyValue(msgspec.Struct, gc=False):
    """One attribute of the usual shape."""

    key: str
    value: AnyValue | None = None


class LooseValue:
    """An attribute the typed decoder refused, as orjson parsed it (the whole ``KeyValue``).

    ``stringValue`` is never a ``str`` here, so the engine always asks :func:`attribute_text`,
    which reads the dict exactly as the dict-based engine did.
    """

    __slots__ = ("item",)
    stringValue: Final = UNSET

    def __init__(self, item: dict[str, Any]) -> None:
        self.item = item


class LooseKeyValue:
    """A ``KeyValue`` the typed decoder refused: ``item["key"]`` raises as it always did."""

    __slots__ = ("key", "value")

    def __init__(self, item: Any) -> None:
        self.key: Any = item["key"]
        self.value = LooseValue(item)


def attribute_text(value: AnyValue | LooseValue | None) -> Any:
    """An attribute value as text, as :func:`prodlens.analysis._values.attribute_map` gives it.

    The engine reads ``value.stringValue`` itself when it is a ``str`` (the common case) and
    calls this for the rest. Text is a ``str`` except for loose input the old code also passed
    through (``"stringValue": 5``).
    """
    if value is None:
        return ""
    if isinstance(value, LooseValue):
        loose = value.item.get("value")
        text = loose.get("stringValue") if loose else None
        return text if text is not None else value_text(loose)
    if value.stringValue is not UNSET:
        return value.stringValue
    return value_text(_as_dict(value))


def _as_dict(value: AnyValue) -> dict[str, Any]:
    # The dict orjson would have made of this value: its scalars decode to the same Python
    # values (see _Int), and raw arrays and maps are parsed by orjson itself.
    out: dict[str, Any] = {}
    for name in value.__struct_fields__:
        field = getattr(value, name)
        if isinstance(field, msgspec.Raw):
            if field:
                out[name] = orjson.loads(memoryview(field))
        elif field is not UNSET:
            out[name] = field
    return out


class Attributes:
    """Parses raw ``attributes``: typed when they have the usual shape, else as orjson does."""

    def __init__(self) -> None:
        self._decode = msgspec.json.Decoder(list[KeyValue] | None).decode
        #: The typed decoding alone, for the engine's hot path: raises ``ValueError`` (or
        #: ``RecursionError``) on attributes that :meth:`span` reads the loose way.
        self.decode_list = self._decode

    def span(self, raw: msgspec.Raw) -> Sequence[KeyValue | LooseKeyValue]:
        """A span's attributes, each with ``.key`` and ``.value`` (see :func:`attribute_text`).

        Raises what the dict-based engine raised on attributes that are not a list of
        ``KeyValue`` objects (``KeyError``, ``TypeError``, orjson's ``JSONDecodeError``).
        """
        if not raw:
            return ()
        try:
            return self._decode(raw) or ()
        except (ValueError, RecursionError):  # not the usual shape: read it as the dict-based
            # engine did (orjson refuses nesting past its depth limit with a ValueError)
            return [LooseKeyValue(item) for item in orjson.loads(memoryview(raw)) or ()]

    def resource(self, raw: bytes) -> dict[str, str]:
        """A resource's attributes as text (once per distinct resource, so orjson dicts)."""
        return attribute_map(orjson.loads(raw) if raw else None)

    @staticmethod
    def texts(attributes: Sequence[KeyValue | LooseKeyValue]) -> dict[str, str]:
        """Every attribute as text, for ``--where`` (as ``attribute_map`` gave them)."""
        out: dict[str, str] = {}
        for attribute in attributes:
            value = attribute.value
            text = value.stringValue if value is not None else None
            out[attribute.key] = text if text.__class__ is str else attribute_text(value)
        return out
