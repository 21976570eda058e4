"""OTLP/JSON ``AnyValue`` to text, exactly as the Collector's ClickHouse exporter stores it, so
the embedded engine and the ClickHouse SQL compare the same strings."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

__all__ = ["attribute_map", "format_double", "value_text"]


def format_double(value: float) -> str:
    """A double as the Collector's ClickHouse exporter writes it (Go ``'f'``, shortest).

    Example::

        >>> format_double(1.0), format_double(0.25), format_double(1e-7)
        ('1', '0.25', '0.0000001')
    """
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return format(Decimal(repr(value)).normalize(), "f")


def _plain(value: Mapping[str, Any]) -> Any:
    """An ``AnyValue`` as a plain JSON-able value (for arrays and maps)."""
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "doubleValue" in value:
        raw = value["doubleValue"]
        return raw if isinstance(raw, (int, float)) else float(raw)
    if "arrayValue" in value:
        return [_plain(v) for v in (value["arrayValue"] or {}).get("values") or ()]
    if "kvlistValue" in value:
        return {kv["key"]: _plain(kv.get("value") or {})
                for kv in (value["kvlistValue"] or {}).get("values") or ()}
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def value_text(value: Mapping[str, Any] | None) -> str:
    """An ``AnyValue`` as text, the way the Collector's ClickHouse exporter stores it."""
    if not value:
        return ""
    if "stringValue" in value:
        return str(value["stringValue"])
    if "intValue" in value:
        return str(int(value["intValue"]))
    if "boolValue" in value:
        return "true" if value["boolValue"] else "false"
    if "doubleValue" in value:
        raw = value["doubleValue"]
        return format_double(float(raw))
    if "bytesValue" in value:
        return base64.b64encode(base64.b64decode(value["bytesValue"])).decode("ascii")
    return json.dumps(_plain(value), separators=(",", ":"), ensure_ascii=False)


def attribute_map(items: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    """OTLP/JSON ``KeyValue`` list → ``{key: text}``."""
    out: dict[str, str] = {}
    if items:
        for item in items:
            value = item.get("value")
            text = value.get("stringValue") if value else None
            out[item["key"]] = text if text is not None else value_text(value)
    return out
