"""A compact console span exporter for development: one short line per span.

The SDK's ``console`` exporter prints each span as a page of pretty JSON; during development
what matters is whether tagging works. This exporter prints one line per span — start time
(UTC), service, kind, name, status, duration, then the customer and cohorts prodlens put on
it — bounded in length, so a developer sees tagging work without a backend::

    16:58:01.234 shop server GET /orders/<tenant> ok 3.1ms customer=acme plan=pro tenant=t1
    16:58:01.236 shop client select ok 0.2ms customer=acme plan=pro tenant=t1

Select it under ``opentelemetry-instrument`` (no code change)::

    export OTEL_TRACES_EXPORTER=prodlens_console

It reads the customer attribute and cohort prefix from the settings in force
(``PRODLENS_CUSTOMER_ATTRIBUTE``, ``PRODLENS_COHORT_PREFIX``), and never raises out of
:meth:`~CompactConsoleSpanExporter.export`: a failed write returns ``FAILURE`` and is logged once.
For analysis, write OTLP/JSON files instead (``OTEL_TRACES_EXPORTER=prodlens_file``): this output
is for eyes only.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, Final

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from prodlens import _runtime, attributes
from prodlens._safety import internal_error

__all__ = ["CompactConsoleSpanExporter"]

#: Line width when the output is not a terminal (a pipe, a log file, a container's log).
DEFAULT_WIDTH: Final = 200
#: Narrowest line accepted: below this not even time, service and status fit.
MIN_WIDTH: Final = 60
# Per-field bounds, so that one long value cannot push the others off the line.
_MAX_SERVICE: Final = 24
_MAX_VALUE: Final = 40
_MIN_NAME: Final = 16
_ELLIPSIS: Final = "..."


def _clip(text: str, limit: int) -> str:
    """``text`` on one line, printable, at most ``limit`` characters (``...`` marks a cut)."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else "?" for c in text)
    if len(text) <= limit:
        return text
    if limit <= len(_ELLIPSIS):
        return text[:limit]
    return text[: limit - len(_ELLIPSIS)] + _ELLIPSIS


def _duration(nanoseconds: int) -> str:
    if nanoseconds < 0:
        return "?"
    if nanoseconds < 1_000_000_000:
        return f"{nanoseconds / 1e6:.1f}ms"
    return f"{nanoseconds / 1e9:.2f}s"


def _clock(nanoseconds: int) -> str:
    seconds, remainder = divmod(nanoseconds, 1_000_000_000)
    return time.strftime("%H:%M:%S", time.gmtime(seconds)) + f".{remainder // 1_000_000:03d}"


class CompactConsoleSpanExporter(SpanExporter):
    """Print one line per span: time, service, kind, name, status, duration, customer, cohorts.

    Args:
        out: Where lines go. ``None``: ``sys.stdout`` as it is at each export (so a test's or a
            server's redirection is honoured).
        width: Longest line, in characters. ``None``: the terminal's width when ``out`` is a
            terminal, else 200. At least 60.

    Example::

        >>> import io
        >>> from opentelemetry.sdk.resources import Resource
        >>> from opentelemetry.sdk.trace import TracerProvider
        >>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        >>> out = io.StringIO()
        >>> provider = TracerProvider(resource=Resource({"service.name": "shop"}))
        >>> provider.add_span_processor(SimpleSpanProcessor(CompactConsoleSpanExporter(out)))
        >>> with provider.get_tracer("t").start_as_current_span("charge") as span:
        ...     span.set_attribute("enduser.id", "acme")
        >>> out.getvalue().split()[1:4], out.getvalue().split()[-1]
        (['shop', 'internal', 'charge'], 'customer=acme')
    """

    def __init__(self, out: IO[str] | None = None, *, width: int | None = None) -> None:
        if width is not None and width < MIN_WIDTH:
            raise ValueError(f"width must be at least {MIN_WIDTH}, got {width}")
        self._out = out
        self._width = width
        self._lock = threading.Lock()
        self._closed = False

    def _stream(self) -> IO[str]:
        return self._out if self._out is not None else sys.stdout

    def _line_width(self, stream: IO[str]) -> int:
        if self._width is not None:
            return self._width
        try:
            if stream.isatty():
                return max(MIN_WIDTH, shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns)
        except (AttributeError, ValueError, OSError):  # a closed or unusual stream
            pass
        return DEFAULT_WIDTH

    def format(self, span: ReadableSpan, width: int = DEFAULT_WIDTH) -> str:
        """The line printed for ``span``, at most ``width`` characters."""
        settings = _runtime.current().settings
        attrs: Mapping[str, object] = span.attributes or {}
        identity = []
        customer = attrs.get(settings.customer_attribute)
        if customer is not None:
            identity.append(f"customer={_clip(str(customer), _MAX_VALUE)}")
        pseudonym = attrs.get(attributes.PSEUDONYM_ATTRIBUTE)
        if pseudonym is not None and settings.customer_attribute != attributes.PSEUDONYM_ATTRIBUTE:
            identity.append(f"pseudo={_clip(str(pseudonym), _MAX_VALUE)}")
        prefix = settings.cohort_prefix
        for key, value in attrs.items():
            if key.startswith(prefix) and len(key) > len(prefix):
                identity.append(
                    f"{_clip(key[len(prefix):], _MAX_VALUE)}={_clip(str(value), _MAX_VALUE)}")
        service = span.resource.attributes.get("service.name", "-") if span.resource else "-"
        start, end = span.start_time or 0, span.end_time or span.start_time or 0
        head = " ".join((_clock(start), _clip(str(service), _MAX_SERVICE),
                         span.kind.name.lower()))
        status = "ERROR" if span.status.status_code is StatusCode.ERROR else "ok"
        tail = " ".join((status, _duration(end - start), *identity))
        # The name yields its room to the identity (the point of this output); past that, the
        # end of the line is cut.
        name_room = max(_MIN_NAME, width - len(head) - len(tail) - 2)
        return _clip(f"{head} {_clip(span.name or '-', name_room)} {tail}", width)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Print the spans, one line each. Never raises; returns FAILURE when writing fails."""
        if self._closed:
            return SpanExportResult.FAILURE
        try:
            stream = self._stream()
            width = self._line_width(stream)
            text = "".join(self.format(span, width) + "\n" for span in spans)
            with self._lock:
                try:
                    stream.write(text)
                except UnicodeEncodeError:  # e.g. an ASCII-only stdout: escape, do not drop
                    encoding = getattr(stream, "encoding", None) or "ascii"
                    stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
                stream.flush()
        except Exception as error:
            internal_error("the console exporter", error)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the output stream."""
        try:
            self._stream().flush()
        except Exception as error:
            internal_error("the console exporter", error)
            return False
        return True

    def shutdown(self) -> None:
        """Stop printing (the stream itself is not closed: it is usually stdout)."""
        self._closed = True
