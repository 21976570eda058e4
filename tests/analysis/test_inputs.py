"""Reading exports: malformed, truncated, empty, compressed, odd spans."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from prodlens.analysis import InputError, slice_failures
from prodlens.analysis.synthetic import SyntheticTraces


def span(trace: str, span_id: str, *, error: bool = False, attributes: Any = None,
         parent: str | None = None, kind: int = 2) -> dict[str, Any]:
    out: dict[str, Any] = {"traceId": trace, "spanId": span_id, "name": "GET /x", "kind": kind,
                           "startTimeUnixNano": "1790000000000000000",
                           "endTimeUnixNano": "1790000000100000000",
                           "status": {"code": 2} if error else {}}
    if attributes is not None:
        out["attributes"] = attributes
    if parent:
        out["parentSpanId"] = parent
    return out


def busiest(planted: SyntheticTraces) -> Path:
    return max(planted.paths, key=lambda p: p.read_bytes().count(b"\n"))


def request(*spans: dict[str, Any], service: str = "svc") -> str:
    return json.dumps({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"scope": {"name": "t"}, "spans": list(spans)}],
    }]})


def test_malformed_and_truncated_lines_are_counted_with_file_and_line(
        planted: SyntheticTraces, tmp_path: Path) -> None:
    source = busiest(planted).read_text().splitlines()
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([source[0], "{not json", '{"foo": 1}', "", "[1, 2]",
                                 source[1], source[2][: len(source[2]) // 2]]))
    report = slice_failures([broken])
    assert report.input.malformed == 4
    examples = report.input.malformed_examples
    assert len(examples) == 4
    assert examples[0].startswith(f"{broken}:2: not JSON (")
    assert examples[1:] == (
        f"{broken}:3: no resourceSpans list",
        f"{broken}:5: no resourceSpans list",
        f"{broken}:7: truncated line",
    )
    whole = slice_failures([busiest(planted)])
    assert report.input.spans < whole.input.spans


def test_structurally_wrong_request_is_malformed_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "odd.jsonl"
    path.write_text('{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "no ids"}]}]}]}\n'
                    + request(span("a" * 32, "b" * 16)) + "\n")
    report = slice_failures([path])
    assert report.input.malformed == 1
    assert "odd.jsonl:1: not an OTLP trace request (KeyError" in report.input.malformed_examples[0]
    assert report.units == 1


def test_empty_inputs(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    folder = tmp_path / "nothing"
    folder.mkdir()
    for paths in ([empty], [folder], []):
        report = slice_failures(paths)
        assert (report.units, report.failures, report.findings) == (0, 0, ())
        assert report.verdict() == "no units to analyse: the input held no matching spans"


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        slice_failures([tmp_path / "absent.jsonl"])


def test_gzip_and_truncated_gzip(planted: SyntheticTraces, tmp_path: Path) -> None:
    data = busiest(planted).read_bytes()
    packed = tmp_path / "spans.jsonl.gz"
    packed.write_bytes(gzip.compress(data))
    plain = slice_failures([busiest(planted)])
    zipped = slice_failures([packed])
    assert (zipped.units, zipped.input.spans) == (plain.units, plain.input.spans)
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gzip.compress(data)[: len(gzip.compress(data)) // 2])
    report = slice_failures([cut])
    assert report.input.malformed >= 1
    assert 0 < report.input.spans < plain.input.spans


def test_span_without_attributes_and_huge_values(tmp_path: Path) -> None:
    huge = "x" * 1_000_000
    lines = []
    for n in range(200):
        attributes = None if n % 2 else [
            {"key": "payload", "value": {"stringValue": huge}},
            {"key": "big.int", "value": {"intValue": str(2**63 - 1)}},
            {"key": "tier", "value": {"stringValue": "gold" if n % 4 == 0 else "silver"}},
        ]
        lines.append(request(span(f"{n:032x}", f"{n + 1:016x}", error=n % 4 == 0,
                                  attributes=attributes)))
    path = tmp_path / "odd.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = slice_failures([path])
    assert report.units == 200 and report.failures == 50
    assert report.input.malformed == 0
    top = report.findings[0]
    assert dict(top.subgroup) == {"tier": "gold"}  # the huge value is never a subgroup
    assert all("payload" not in f.subgroup for f in report.findings)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal_and_after_a_moment(
        planted_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prodlens.analysis import _reader

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    slice_failures([planted_dir], show_progress=True)
    assert terminal.getvalue() == ""  # done within half a second: no bar
    monkeypatch.setattr(_reader, "_PROGRESS_AFTER_S", 0.0)
    monkeypatch.setattr(_reader.time, "monotonic", iter(range(0, 10**6)).__next__)
    slice_failures([planted_dir], show_progress=True)
    drawn = terminal.getvalue()
    assert "\rreading [" in drawn and "spans" in drawn
    assert drawn.endswith("\r")  # the bar is wiped at the end
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    slice_failures([planted_dir], show_progress=True)
    assert pipe.getvalue() == ""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "prodlens", *args], capture_output=True,
                          text=True, timeout=120)


def console_export(path: Path) -> None:
    """What ``OTEL_TRACES_EXPORTER=console`` writes: the SDK's ConsoleSpanExporter, for real."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    with path.open("w") as out:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=out)))
        tracer = provider.get_tracer("console")
        for index in range(3):
            with tracer.start_as_current_span(f"GET /{index}"):
                pass
        provider.shutdown()


@pytest.mark.parametrize("command", ["slice", "affected"])
def test_console_exporter_output_exits_non_zero_with_a_hint(tmp_path: Path,
                                                           command: str) -> None:
    console = tmp_path / "console.log"
    console_export(console)
    result = cli(command, str(console))
    assert result.returncode == 1, result.stderr
    assert f"{console}: no readable span in " in result.stderr
    assert "console exporter" in result.stderr
    assert "OTEL_TRACES_EXPORTER=prodlens_file" in result.stderr


def test_a_file_of_malformed_lines_exits_non_zero_even_beside_good_files(
        planted: SyntheticTraces, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n[1, 2]\n")
    alone = cli("slice", str(bad))
    assert alone.returncode == 1
    assert "skipped 2 malformed line(s)" in alone.stderr
    assert f"{bad}: no readable span in 2 line(s)" in alone.stderr
    assert "console exporter" not in alone.stderr
    beside = cli("slice", str(busiest(planted)), str(bad))
    assert beside.returncode == 1 and f"{bad}: no readable span" in beside.stderr
    good = cli("slice", str(busiest(planted)))
    assert good.returncode == 0 and good.stderr == ""


def test_empty_input_exits_non_zero(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = cli("slice", str(empty))
    assert result.returncode == 1
    assert "no span was read" in result.stderr and "prodlens_file" in result.stderr


def test_a_lone_surrogate_escape_costs_only_itself(tmp_path: Path) -> None:
    # Python's json.dumps (ensure_ascii) writes a lone surrogate as a \ud800 escape: valid JSON.
    tagged = [{"key": "enduser.id", "value": {"stringValue": "\ud800x"}},
              {"key": "tier", "value": {"stringValue": "gold\udfff"}}]
    pair = [{"key": "tier", "value": {"stringValue": "\U0001f600"}}]
    path = tmp_path / "escapes.jsonl"
    path.write_text("\n".join([
        request(span("1" * 32, "1" * 16, error=True, attributes=tagged)),
        request(span("2" * 32, "2" * 16, attributes=pair)),
        request(span("3" * 32, "3" * 16, error=True, attributes=[
            {"key": "enduser.id", "value": {"stringValue": "\\\\ud800 is text"}}])),
    ]) + "\n")
    assert "\\ud800" in path.read_text() and "\\ud83d\\ude00" in path.read_text()
    report = slice_failures([path])
    assert report.input.malformed == 0 and report.units == 3 and report.failures == 2
    from prodlens.analysis import affected_customers

    customers = affected_customers([path])
    assert sorted(c.customer for c in customers.customers) == ["\\\\ud800 is text", "\ufffdx"]


def test_a_huge_line_is_skipped_in_bounded_memory_and_reading_goes_on(tmp_path: Path) -> None:
    from prodlens.analysis._reader import ReadProgress, read_requests

    small = request(span("1" * 32, "1" * 16))
    huge = request(span("2" * 32, "2" * 16, attributes=[
        {"key": "payload", "value": {"stringValue": "x" * 5_000_000}}]))
    path = tmp_path / "huge.jsonl"
    path.write_text("\n".join([small, huge, small]) + "\n")
    progress = ReadProgress()
    read = [where for where, _ in read_requests([path], progress, show_progress=False,
                                                 max_line_bytes=1_000_000)]
    assert read == [f"{path}:1", f"{path}:3"]
    assert progress.examples == [
        f"{path}:2: line of {len(huge) + 1:,} bytes skipped (longer than 1,000,000; export "
        "smaller batches)"]
    progress = ReadProgress()
    assert len(list(read_requests([path], progress, show_progress=False))) == 3
