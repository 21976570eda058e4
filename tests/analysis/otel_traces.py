"""The Collector's ClickHouse ``otel_traces`` table, in chdb, filled from OTLP/JSON files.

``TRACES_TABLE_SQL`` is ``exporter/clickhouseexporter/internal/sqltemplates/traces_table.sql``
from opentelemetry-collector-contrib (commit 2bf6b9e1f8c8716ab54eaac1635e56b4d0649900) with its
template rendered as the exporter does by default: database ``otel``, table ``otel_traces``, no
cluster, no full-text search, ``MergeTree()``, no TTL.

Rows are written the way ``exporter_traces.go`` writes them: start time as ``Timestamp``, hex ids,
``traceutil.SpanKindStr``/``StatusCodeStr`` enum names (or the newer ``Server``/``Error`` style),
``ServiceName`` from the resource, every attribute value as text (``pcommon.Value.AsString``),
and the scope name and version added to ``SpanAttributes`` as ``otel.scope.name``/``.version``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson

from prodlens.analysis._values import attribute_map

TRACES_TABLE_SQL = """\
CREATE TABLE IF NOT EXISTS `otel`.`otel_traces`  (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(T64, ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    ResourceAttributeItems Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2), CAST(ResourceAttributes, 'Array(Tuple(String, String))')),
    SpanAttributeItems Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2), CAST(SpanAttributes, 'Array(Tuple(String, String))')),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1,
    INDEX idx_lower_span_name lower(SpanName) TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8
) ENGINE = MergeTree()
PARTITION BY toDate(Timestamp)
PRIMARY KEY (ServiceName, SpanName, toDateTime(Timestamp))
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp), Timestamp)

SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
"""

_KINDS = {
    "proto": {0: "SPAN_KIND_UNSPECIFIED", 1: "SPAN_KIND_INTERNAL", 2: "SPAN_KIND_SERVER",
              3: "SPAN_KIND_CLIENT", 4: "SPAN_KIND_PRODUCER", 5: "SPAN_KIND_CONSUMER"},
    "short": {0: "Unspecified", 1: "Internal", 2: "Server", 3: "Client", 4: "Producer",
              5: "Consumer"},
}
_STATUS = {
    "proto": {0: "STATUS_CODE_UNSET", 1: "STATUS_CODE_OK", 2: "STATUS_CODE_ERROR"},
    "short": {0: "Unset", 1: "Ok", 2: "Error"},
}
_STRUCTURE = (
    "ts Int64, TraceId String, SpanId String, ParentSpanId String, TraceState String, "
    "SpanName String, SpanKind String, ServiceName String, "
    "ResourceAttributes Map(String, String), ScopeName String, ScopeVersion String, "
    "SpanAttributes Map(String, String), Duration UInt64, StatusCode String, "
    "StatusMessage String, ev_ts Array(Int64), ev_name Array(String), "
    "ev_attrs Array(Map(String, String))"
)


def rows_from_otlp(paths: list[Path], style: str = "proto") -> list[dict[str, Any]]:
    """Span rows as the Collector's ClickHouse exporter would insert them."""
    rows = []
    for path in paths:
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            request = orjson.loads(line)
            for resource_spans in request["resourceSpans"]:
                resource = attribute_map(resource_spans.get("resource", {}).get("attributes"))
                for scope_spans in resource_spans.get("scopeSpans", []):
                    scope = scope_spans.get("scope", {})
                    for span in scope_spans.get("spans", []):
                        attrs = attribute_map(span.get("attributes"))
                        if scope.get("name"):
                            attrs["otel.scope.name"] = scope["name"]
                        if scope.get("version"):
                            attrs["otel.scope.version"] = scope["version"]
                        status = span.get("status", {})
                        start, end = int(span["startTimeUnixNano"]), int(span["endTimeUnixNano"])
                        events = span.get("events", [])
                        rows.append({
                            "ts": start, "TraceId": span["traceId"], "SpanId": span["spanId"],
                            "ParentSpanId": span.get("parentSpanId", ""),
                            "TraceState": span.get("traceState", ""), "SpanName": span["name"],
                            "SpanKind": _KINDS[style][span.get("kind", 0)],
                            "ServiceName": resource.get("service.name", ""),
                            "ResourceAttributes": resource, "ScopeName": scope.get("name", ""),
                            "ScopeVersion": scope.get("version", ""), "SpanAttributes": attrs,
                            "Duration": end - start,
                            "StatusCode": _STATUS[style][status.get("code", 0)],
                            "StatusMessage": status.get("message", ""),
                            "ev_ts": [int(e["timeUnixNano"]) for e in events],
                            "ev_name": [e["name"] for e in events],
                            "ev_attrs": [attribute_map(e.get("attributes")) for e in events],
                        })
    return rows


def load_into_chdb(session: Any, paths: list[Path], scratch: Path, style: str = "proto",
                   table: str = "otel.otel_traces") -> int:
    """Create ``otel.otel_traces`` with the exporter's DDL (and ``table`` like it) and insert
    the spans into ``table``; returns rows."""
    session.query("CREATE DATABASE IF NOT EXISTS otel")
    session.query(TRACES_TABLE_SQL)
    if table != "otel.otel_traces":
        session.query(f"CREATE DATABASE IF NOT EXISTS {table.split('.')[0]}")
        session.query(f"CREATE TABLE IF NOT EXISTS {table} AS otel.otel_traces")
    rows = rows_from_otlp(paths, style)
    staging = scratch / f"rows-{table}.jsonl"
    staging.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    session.query(
        f"INSERT INTO {table} (Timestamp, TraceId, SpanId, ParentSpanId, TraceState, "
        "SpanName, SpanKind, ServiceName, ResourceAttributes, ScopeName, ScopeVersion, "
        "SpanAttributes, Duration, StatusCode, StatusMessage, `Events.Timestamp`, "
        "`Events.Name`, `Events.Attributes`) "
        "SELECT fromUnixTimestamp64Nano(ts), TraceId, SpanId, ParentSpanId, TraceState, "
        "SpanName, SpanKind, ServiceName, ResourceAttributes, ScopeName, ScopeVersion, "
        "SpanAttributes, Duration, StatusCode, StatusMessage, "
        "arrayMap(t -> fromUnixTimestamp64Nano(t), ev_ts), ev_name, ev_attrs "
        f"FROM file('{staging}', JSONEachRow, '{_STRUCTURE}')"
    )
    return len(rows)
