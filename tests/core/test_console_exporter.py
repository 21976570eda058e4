"""The compact console exporter (``OTEL_TRACES_EXPORTER=prodlens_console``), with the real SDK.

Its runs under ``opentelemetry-instrument`` are
tests/integrations/test_zero_code.py::test_readme_zero_code_output_under_opentelemetry_instrument
and tests/docs/test_examples_as_documented.py.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from importlib.metadata import entry_points

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

import prodlens
from prodlens.console_exporter import MIN_WIDTH, CompactConsoleSpanExporter

CLOCK = r"\d\d:\d\d:\d\d\.\d{3}"
DURATION = r"\d+\.\dms"


def _provider(exporter: CompactConsoleSpanExporter, **settings: object) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    prodlens.configure(provider, environ={}, metrics=False, **settings)  # type: ignore[arg-type]
    return provider


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    yield stream


def test_entry_point_is_prodlens_console() -> None:
    (entry,) = [e for e in entry_points(group="opentelemetry_traces_exporter")
                if e.name == "prodlens_console"]
    assert entry.load() is CompactConsoleSpanExporter


def test_one_line_per_span_with_time_service_kind_name_status_duration_and_identity(
        out: io.StringIO) -> None:
    provider = _provider(CompactConsoleSpanExporter(out, width=120))
    tracer = provider.get_tracer("t")
    with prodlens.tag("acme", plan="pro", region="eu-west"):
        with tracer.start_as_current_span("GET /orders/<tenant>", kind=SpanKind.SERVER):
            with tracer.start_as_current_span("select", kind=SpanKind.CLIENT):
                pass
            with tracer.start_as_current_span("charge") as failed:
                failed.set_status(Status(StatusCode.ERROR, "card declined"))
    with tracer.start_as_current_span("untagged"):
        pass
    provider.shutdown()
    lines = out.getvalue().splitlines()
    identity = "customer=acme plan=pro region=eu-west"
    patterns = [
        rf"{CLOCK} shop client select ok {DURATION} {identity}",
        rf"{CLOCK} shop internal charge ERROR {DURATION} {identity}",
        rf"{CLOCK} shop server GET /orders/<tenant> ok {DURATION} {identity}",
        rf"{CLOCK} shop internal untagged ok {DURATION}",
    ]
    assert len(lines) == len(patterns), lines
    for line, pattern in zip(lines, patterns, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)


def test_configured_attribute_names_are_read(out: io.StringIO) -> None:
    provider = _provider(CompactConsoleSpanExporter(out), customer_attribute="app.customer",
                         cohort_prefix="app.cohort.")
    with prodlens.tag("acme", plan="pro"):
        with provider.get_tracer("t").start_as_current_span("work"):
            pass
    provider.shutdown()
    assert re.fullmatch(rf"{CLOCK} shop internal work ok {DURATION} customer=acme plan=pro\n",
                        out.getvalue())


def test_pseudonymised_customer_is_labelled_as_such(out: io.StringIO) -> None:
    provider = _provider(CompactConsoleSpanExporter(out), pseudonymize=True,
                         pseudonym_key="k" * 32)
    with prodlens.tag("acme"):
        with provider.get_tracer("t").start_as_current_span("work"):
            pass
    provider.shutdown()
    (line,) = out.getvalue().splitlines()
    assert "acme" not in line
    assert re.fullmatch(rf"{CLOCK} shop internal work ok {DURATION} pseudo=\S+", line), line


def test_lines_are_bounded_and_keep_the_identity(out: io.StringIO) -> None:
    width = 100
    provider = _provider(CompactConsoleSpanExporter(out, width=width))
    tracer = provider.get_tracer("t")
    with prodlens.tag("acme", plan="pro"):
        with tracer.start_as_current_span("x" * 10_000):
            pass
        with tracer.start_as_current_span("GET\n/injected\r"):
            pass
    with prodlens.tag("c" * 120, **{f"cohort{i}": "v" * 100 for i in range(8)}):
        with tracer.start_as_current_span("many"):
            pass
    provider.shutdown()
    lines = out.getvalue().split("\n")
    assert lines[-1] == ""
    lines = lines[:-1]
    assert len(lines) == 3  # a newline inside a name does not start a new line
    assert " GET?/injected? ok " in lines.pop(1)
    assert all(len(line) <= width for line in lines), [len(line) for line in lines]
    assert lines[0].endswith(" ok " + lines[0].rsplit(" ok ", 1)[1])
    assert lines[0].endswith("customer=acme plan=pro")
    assert "xxx..." in lines[0]
    assert lines[1].endswith("...")
    assert " many ok " in lines[1]


def test_terminal_width_applies_when_writing_to_a_terminal(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("COLUMNS", "80")
    out = Terminal()
    provider = _provider(CompactConsoleSpanExporter(out))
    with prodlens.tag("acme", plan="pro"):
        with provider.get_tracer("t").start_as_current_span("n" * 300):
            pass
    provider.shutdown()
    (line,) = out.getvalue().splitlines()
    assert len(line) == 80
    assert line.endswith("customer=acme plan=pro")


def test_a_failing_stream_never_raises() -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("disk full")

    exporter = CompactConsoleSpanExporter(Broken())
    provider = _provider(exporter)
    with provider.get_tracer("t").start_as_current_span("work") as span:
        pass
    from opentelemetry.sdk.trace.export import SpanExportResult

    assert exporter.export([span]) is SpanExportResult.FAILURE  # type: ignore[list-item]
    closed = io.StringIO()
    closed.close()
    assert CompactConsoleSpanExporter(closed).export([span]) is SpanExportResult.FAILURE  # type: ignore[list-item]
    provider.shutdown()


def test_non_ascii_values_are_escaped_on_an_ascii_stream() -> None:
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii", write_through=True)
    provider = _provider(CompactConsoleSpanExporter(out))
    with prodlens.tag("café", region="zürich"):
        with provider.get_tracer("t").start_as_current_span("work"):
            pass
    provider.shutdown()
    line = raw.getvalue().decode("ascii")
    assert line.endswith(r"customer=caf\xe9 region=z\xfcrich" + "\n"), line


def test_after_shutdown_nothing_is_printed(out: io.StringIO) -> None:
    exporter = CompactConsoleSpanExporter(out)
    provider = _provider(exporter)
    exporter.shutdown()
    with provider.get_tracer("t").start_as_current_span("late"):
        pass
    provider.shutdown()
    assert out.getvalue() == ""


def test_too_narrow_a_width_is_refused() -> None:
    with pytest.raises(ValueError, match=f"at least {MIN_WIDTH}"):
        CompactConsoleSpanExporter(width=MIN_WIDTH - 1)
