"""Hand-written OTLP/JSON export lines, for analysis tests that need exact counts."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def attribute(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def span(trace: int, number: int, attributes: dict[str, Any], *, error: bool = False,
         parent: int | None = None, kind: int = 2, name: str = "GET /x") -> dict[str, Any]:
    """A span of trace ``trace``; a server span (a local root) unless told otherwise."""
    out: dict[str, Any] = {
        "traceId": f"{trace:032x}", "spanId": f"{number:016x}", "name": name, "kind": kind,
        "startTimeUnixNano": str(1_790_000_000_000_000_000 + number),
        "endTimeUnixNano": str(1_790_000_000_100_000_000 + number),
        "attributes": [attribute(key, value) for key, value in attributes.items()],
        "status": {"code": 2} if error else {},
    }
    if parent is not None:
        out["parentSpanId"] = f"{parent:016x}"
    return out


def line(service: str, spans: list[dict[str, Any]], **resource: str) -> dict[str, Any]:
    """One ``ExportTraceServiceRequest`` of one service's spans."""
    attributes = [attribute("service.name", service)]
    attributes += [attribute(key, value) for key, value in resource.items()]
    return {"resourceSpans": [{"resource": {"attributes": attributes},
                               "scopeSpans": [{"scope": {"name": "t"}, "spans": spans}]}]}


def write(path: Path, lines: Iterable[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(item) + "\n" for item in lines))
    return path
