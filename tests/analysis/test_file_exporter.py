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
from hypothesis import given, settings
from hypothesis import strategies as st
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


def _valid_unicode(text: str) -> str:
    """What a string becomes once made valid Unicode: surrogate pairs joined, lone ones U+FFFD."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _read_back(path: Path) -> list[dict[str, str]]:
    """Every span's attributes as text, through the analysis reader (one dict per span)."""
    from prodlens.analysis._otlp import Attributes
    from prodlens.analysis._reader import ReadProgress, read_requests

    progress = ReadProgress()
    parse = Attributes()
    spans = []
    for _, request in read_requests([path], progress, show_progress=False):
        for resource_spans in request.resourceSpans or ():
            for scope_spans in resource_spans.scopeSpans or ():
                for span in scope_spans.spans or ():
                    spans.append(Attributes.texts(parse.span(span.attributes)))
    assert progress.malformed == 0, progress.examples
    return spans


#: Any code point, surrogates included (hypothesis's text() leaves them out whatever its
#: alphabet, so this joins a list of characters).
ANY_TEXT = st.lists(st.one_of(st.characters(exclude_categories=()),
                              st.sampled_from("\ud800\udbff\udc00\udfff\ud83d\ude00")),
                    max_size=40).map("".join)


@given(customer=ANY_TEXT, cohort=ANY_TEXT)
@settings(max_examples=150, deadline=None)
def test_any_string_round_trips_or_is_replaced_and_never_drops_a_neighbour(
        tmp_path_factory: pytest.TempPathFactory, customer: str, cohort: str) -> None:
    # identify() -> span -> exporter -> reader, in one batch with two ordinary neighbours.
    import prodlens

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    prodlens.configure(provider, environ={}, metrics=False, max_value_length=64)
    tracer = provider.get_tracer("tests")
    try:
        for who, plan in (("before", "free"), (customer, cohort), ("after", "pro")):
            with prodlens.tag(), tracer.start_as_current_span("work"):
                prodlens.identify(who, plan=plan)
        spans = memory.get_finished_spans()
        path = tmp_path_factory.mktemp("rt") / "spans.jsonl"
        exporter = OTLPJsonFileSpanExporter(path)
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        exporter.shutdown()
    finally:
        provider.shutdown()
    read = _read_back(path)
    assert len(read) == 3  # the odd value cost no span, its own included
    assert read[0] == {"enduser.id": "before", "prodlens.cohort.plan": "free"}
    assert read[2] == {"enduser.id": "after", "prodlens.cohort.plan": "pro"}
    expected = {"enduser.id": _valid_unicode(customer), "prodlens.cohort.plan": _valid_unicode(cohort)}
    assert read[1] == {k: v for k, v in expected.items() if v}
    # What prodlens put on the span is already valid UTF-8 (any exporter can write it).
    for span in spans:
        for value in (span.attributes or {}).values():
            assert isinstance(value, str) and value.encode("utf-8")


def test_a_span_from_another_instrumentation_with_a_lone_surrogate_costs_no_neighbour(
        tmp_path: Path) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests")
    for index in range(200):
        with tracer.start_as_current_span(f"GET /{index}", attributes={"n": index}):
            pass
    with tracer.start_as_current_span("GET /\udcff\ud800", attributes={"url.path": "/\ud800x"}):
        pass
    provider.shutdown()
    exporter = OTLPJsonFileSpanExporter(tmp_path / "spans.jsonl")
    assert exporter.export(memory.get_finished_spans()) is SpanExportResult.SUCCESS
    exporter.shutdown()
    lines = (tmp_path / "spans.jsonl").read_bytes().splitlines()
    assert len(lines) == 1
    spans = json.loads(lines[0])["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert len(spans) == 201
    assert spans[-1]["name"] == "GET /\ufffd\ufffd"
    assert spans[-1]["attributes"] == [{"key": "url.path", "value": {"stringValue": "/\ufffdx"}}]
    assert exporter.dropped_spans == 0


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text")


def test_a_span_that_cannot_be_encoded_is_left_out_alone_and_counted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests")
    for index in range(3):
        with tracer.start_as_current_span(f"ok{index}"):
            pass
    with tracer.start_as_current_span("bad") as bad:
        bad.add_event("odd", {"k": "v"})
    provider.shutdown()
    spans = list(memory.get_finished_spans())
    # An SDK user's own ReadableSpan (not checked by the SDK) whose event name is no text.
    broken = ReadableSpan(name="broken", context=spans[-1].get_span_context(),
                          events=[type(spans[-1].events[0])(_Unprintable(), {})],  # type: ignore[arg-type]
                          resource=spans[-1].resource)
    exporter = OTLPJsonFileSpanExporter(tmp_path / "spans.jsonl")
    caplog.set_level(logging.WARNING, logger="prodlens")
    assert exporter.export([*spans[:3], broken, spans[3]]) is SpanExportResult.SUCCESS
    assert exporter.export([broken]) is SpanExportResult.FAILURE
    exporter.shutdown()
    written = json.loads((tmp_path / "spans.jsonl").read_bytes())
    names = [s["name"] for rs in written["resourceSpans"] for ss in rs["scopeSpans"]
             for s in ss["spans"]]
    assert names == ["ok0", "ok1", "ok2", "bad"]
    assert exporter.dropped_spans == 2
    assert sum("left out" in r.getMessage() for r in caplog.records) == 1
