"""The OTLP/JSON file exporter, through the real SDK."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import threading
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as proto_encode
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from prodlens.exporter import OTLPJsonFileSpanExporter, encode_spans


def make_spans() -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "shop",
                                                        "service.version": "2.3.0"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests", "1.2")
    with tracer.start_as_current_span("GET /cart", kind=SpanKind.SERVER, attributes={
        "s": "text", "i": 3, "f": 1.5, "b": True, "l": ["x", "y"], "li": [1, 2],
    }) as root, tracer.start_as_current_span(
            "child", links=[Link(root.get_span_context(), {"k": "v"})]) as child:
        child.add_event("retry", {"attempt": 2})
        child.set_status(Status(StatusCode.ERROR, "boom"))
    provider.shutdown()
    return list(memory.get_finished_spans())


def _hex_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: base64.b64decode(v).hex() if k in ("traceId", "spanId", "parentSpanId")
                else _hex_ids(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_hex_ids(v) for v in value]
    return value


def test_encoding_equals_the_official_otlp_proto_encoding_in_json() -> None:
    spans = make_spans()
    official = MessageToDict(proto_encode(spans), use_integers_for_enums=True)
    # protobuf's JSON writes ids as base64; OTLP/JSON (and the Collector's file exporter) as hex
    assert encode_spans(spans) == _hex_ids(official)


def test_writes_one_request_per_line_with_hex_ids_and_enums(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "spans.jsonl"
    exporter = OTLPJsonFileSpanExporter(path, max_bytes=0, backups=0)
    spans = make_spans()
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    (line,) = path.read_text().splitlines()
    request = json.loads(line)
    (resource_spans,) = request["resourceSpans"]
    assert {"key": "service.version", "value": {"stringValue": "2.3.0"}} in \
        resource_spans["resource"]["attributes"]
    (scope_spans,) = resource_spans["scopeSpans"]
    assert scope_spans["scope"] == {"name": "tests", "version": "1.2"}
    child, root = scope_spans["spans"]
    context = spans[1].get_span_context()
    assert root == {
        "traceId": f"{context.trace_id:032x}", "spanId": f"{context.span_id:016x}",
        "flags": 256, "name": "GET /cart", "kind": 2,
        "startTimeUnixNano": str(spans[1].start_time),
        "endTimeUnixNano": str(spans[1].end_time),
        "attributes": [
            {"key": "s", "value": {"stringValue": "text"}},
            {"key": "i", "value": {"intValue": "3"}},
            {"key": "f", "value": {"doubleValue": 1.5}},
            {"key": "b", "value": {"boolValue": True}},
            {"key": "l", "value": {"arrayValue": {"values": [{"stringValue": "x"},
                                                            {"stringValue": "y"}]}}},
            {"key": "li", "value": {"arrayValue": {"values": [{"intValue": "1"},
                                                             {"intValue": "2"}]}}},
        ],
        "status": {},
    }
    assert child["parentSpanId"] == root["spanId"]
    assert child["status"] == {"code": 2, "message": "boom"}
    assert child["events"][0]["name"] == "retry"
    assert child["links"][0]["spanId"] == root["spanId"]


def test_non_finite_doubles_are_written_as_protojson_strings(tmp_path: Path) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.get_tracer("t").start_span("s", attributes={
        "nan": float("nan"), "inf": float("inf")}).end()
    path = tmp_path / "s.jsonl"
    exporter = OTLPJsonFileSpanExporter(path, max_bytes=0, backups=0)
    assert exporter.export(memory.get_finished_spans()) is SpanExportResult.SUCCESS
    exporter.shutdown()
    span = json.loads(path.read_text())["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["attributes"] == [{"key": "nan", "value": {"doubleValue": "NaN"}},
                                  {"key": "inf", "value": {"doubleValue": "Infinity"}}]


def test_rotates_by_size_and_keeps_the_configured_backups(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    exporter = OTLPJsonFileSpanExporter(path, max_bytes=6000, backups=2)
    spans = make_spans()
    for _ in range(30):
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["spans.jsonl", "spans.jsonl.1", "spans.jsonl.2"]
    for file in tmp_path.iterdir():
        assert file.stat().st_size <= 6000
        for line in file.read_text().splitlines():
            json.loads(line)


def test_zero_backups_truncates_instead(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    exporter = OTLPJsonFileSpanExporter(path, max_bytes=6000, backups=0)
    for _ in range(20):
        exporter.export(make_spans())
    exporter.shutdown()
    assert [p.name for p in tmp_path.iterdir()] == ["spans.jsonl"]
    assert path.stat().st_size <= 6000


def test_concurrent_exports_never_interleave_lines(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    exporter = OTLPJsonFileSpanExporter(path, max_bytes=0, backups=0)
    spans = make_spans()

    def work() -> None:
        for _ in range(25):
            assert exporter.export(spans) is SpanExportResult.SUCCESS

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    exporter.shutdown()
    lines = path.read_text().splitlines()
    assert len(lines) == 200
    assert all(len(json.loads(line)["resourceSpans"]) == 1 for line in lines)


def test_a_failed_write_returns_failure_and_logs_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    exporter = OTLPJsonFileSpanExporter(tmp_path, max_bytes=0, backups=0)  # a directory
    with caplog.at_level(logging.ERROR, logger="prodlens.exporter"):
        assert exporter.export(make_spans()) is SpanExportResult.FAILURE
        assert exporter.export(make_spans()) is SpanExportResult.FAILURE
    assert len([r for r in caplog.records if "cannot write spans" in r.getMessage()]) == 1


def test_export_after_shutdown_fails_without_raising(tmp_path: Path) -> None:
    exporter = OTLPJsonFileSpanExporter(tmp_path / "s.jsonl")
    exporter.shutdown()
    assert exporter.export(make_spans()) is SpanExportResult.FAILURE
    assert exporter.force_flush() is True


def test_settings_come_from_prodlens_variables(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "from-env" / "spans.jsonl"
    monkeypatch.setenv("PRODLENS_FILE_PATH", str(target))
    monkeypatch.setenv("PRODLENS_FILE_MAX_BYTES", "6000")
    monkeypatch.setenv("PRODLENS_FILE_BACKUPS", "1")
    exporter = OTLPJsonFileSpanExporter()
    for _ in range(10):
        exporter.export(make_spans())
    exporter.shutdown()
    assert exporter.path == target
    assert sorted(p.name for p in target.parent.iterdir()) == ["spans.jsonl", "spans.jsonl.1"]


def test_entry_point_builds_the_exporter_without_arguments(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODLENS_FILE_PATH", str(tmp_path / "ep.jsonl"))
    (entry,) = [e for e in entry_points(group="opentelemetry_traces_exporter")
                if e.value == "prodlens.exporter:OTLPJsonFileSpanExporter"]
    assert entry.name == "prodlens_file"
    exporter = entry.load()()  # as the SDK's configurator does for OTEL_TRACES_EXPORTER
    assert isinstance(exporter, OTLPJsonFileSpanExporter)
    assert exporter.export(make_spans()) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert (tmp_path / "ep.jsonl").exists()


def test_otel_traces_exporter_selects_it(tmp_path: Path) -> None:
    """The SDK's own configurator, as opentelemetry-instrument runs it (in a subprocess: it
    sets the global tracer provider)."""
    target = tmp_path / "auto" / "spans.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PRODLENS_"))}
    env.update(OTEL_TRACES_EXPORTER="prodlens_file", OTEL_METRICS_EXPORTER="none",
               OTEL_LOGS_EXPORTER="none", OTEL_SERVICE_NAME="auto-app",
               PRODLENS_FILE_PATH=str(target))
    code = (
        "from opentelemetry.sdk._configuration import _OTelSDKConfigurator\n"
        "_OTelSDKConfigurator().configure()\n"
        "from opentelemetry import trace\n"
        "with trace.get_tracer('app').start_as_current_span('GET /'):\n"
        "    pass\n"
        "trace.get_tracer_provider().shutdown()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    (line,) = target.read_text().splitlines()
    resource_spans = json.loads(line)["resourceSpans"][0]
    assert {"key": "service.name", "value": {"stringValue": "auto-app"}} in \
        resource_spans["resource"]["attributes"]
    assert resource_spans["scopeSpans"][0]["spans"][0]["name"] == "GET /"
