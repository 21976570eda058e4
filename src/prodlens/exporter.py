"""A span exporter that appends OTLP/JSON lines to a file, rotating it by size.

Each call to :meth:`OTLPJsonFileSpanExporter.export` appends one line: an
``ExportTraceServiceRequest`` in the OTLP/JSON encoding, the format the OpenTelemetry
Collector's ``file`` exporter writes (hex trace and span ids, lowerCamelCase keys, enums as
integers, 64-bit integers as strings). ``prodlens slice`` and ``prodlens affected`` read these
files, so a team without a Collector can still analyse its spans.

It runs inside applications, so it uses only the standard library and the OpenTelemetry SDK.
It never raises out of :meth:`~OTLPJsonFileSpanExporter.export`: a failed write returns
``SpanExportResult.FAILURE`` and is logged once.

One span never costs its neighbours: a string that is not valid Unicode (a lone surrogate, from
any instrumentation) is written with U+FFFD in its place, and a span that cannot be encoded at
all is left out alone (counted in :attr:`~OTLPJsonFileSpanExporter.dropped_spans`, logged
once). A line cut short by a crash (``kill -9``) or a full disk is terminated before the next
append, so the batches after it stay readable (the reader reports the torn line).

Environment variables (read when an argument is left ``None``)::

    export OTEL_TRACES_EXPORTER=prodlens_file
    export PRODLENS_FILE_PATH=/var/log/app/spans.jsonl   # default prodlens-spans/spans.jsonl
    export PRODLENS_FILE_MAX_BYTES=10485760              # rotate past 10 MiB; 0: never
    export PRODLENS_FILE_BACKUPS=5                       # keep spans.jsonl.1 ... .5

Example::

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from prodlens.exporter import OTLPJsonFileSpanExporter

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPJsonFileSpanExporter("spans.jsonl")))
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, StatusCode

__all__ = ["OTLPJsonFileSpanExporter", "encode_spans"]

_logger = logging.getLogger(__name__)

#: OTLP ``Span.SpanKind`` numbers (the SDK's enum starts at INTERNAL=0; OTLP's at UNSPECIFIED=0).
_KIND: Final[Mapping[SpanKind, int]] = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
#: OTLP ``Status.StatusCode`` numbers.
_STATUS: Final[Mapping[StatusCode, int]] = {
    StatusCode.UNSET: 0,
    StatusCode.OK: 1,
    StatusCode.ERROR: 2,
}
# SpanFlags: bit 8 says whether bit 9 (parent is remote) is known, as the OTLP proto exporter sets.
_HAS_IS_REMOTE: Final = 0x100
_IS_REMOTE: Final = 0x200


def _any_value(value: object) -> dict[str, Any]:
    """One attribute value as an OTLP/JSON ``AnyValue``."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        if math.isnan(value):
            return {"doubleValue": "NaN"}
        if math.isinf(value):
            return {"doubleValue": "Infinity" if value > 0 else "-Infinity"}
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Sequence):
        return {"arrayValue": {"values": [_any_value(item) for item in value]}}
    return {"stringValue": str(value)}


def _attributes(attributes: Mapping[str, object] | None) -> list[dict[str, Any]]:
    if not attributes:
        return []
    return [{"key": key, "value": _any_value(value)} for key, value in attributes.items()]


def _flags(context: SpanContext | None) -> int:
    if context is None:
        return _HAS_IS_REMOTE
    return _HAS_IS_REMOTE | (_IS_REMOTE if context.is_remote else 0)


def _span(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None  # a ReadableSpan always has one
    out: dict[str, Any] = {
        "traceId": format(context.trace_id, "032x"),
        "spanId": format(context.span_id, "016x"),
    }
    trace_state = context.trace_state.to_header() if context.trace_state else ""
    if trace_state:
        out["traceState"] = trace_state
    if span.parent is not None:
        out["parentSpanId"] = format(span.parent.span_id, "016x")
    out["flags"] = _flags(span.parent)
    out["name"] = span.name
    out["kind"] = _KIND.get(span.kind, 0)
    out["startTimeUnixNano"] = str(span.start_time or 0)
    out["endTimeUnixNano"] = str(span.end_time or 0)
    attributes = _attributes(span.attributes)
    if attributes:
        out["attributes"] = attributes
    if span.dropped_attributes:
        out["droppedAttributesCount"] = span.dropped_attributes
    if span.events:
        out["events"] = [
            {"timeUnixNano": str(event.timestamp), "name": event.name,
             **({"attributes": _attributes(event.attributes)} if event.attributes else {})}
            for event in span.events
        ]
    if span.dropped_events:
        out["droppedEventsCount"] = span.dropped_events
    if span.links:
        out["links"] = [
            {"traceId": format(link.context.trace_id, "032x"),
             "spanId": format(link.context.span_id, "016x"),
             **({"attributes": _attributes(link.attributes)} if link.attributes else {}),
             "flags": _flags(link.context)}
            for link in span.links
        ]
    if span.dropped_links:
        out["droppedLinksCount"] = span.dropped_links
    status: dict[str, Any] = {}
    code = _STATUS.get(span.status.status_code, 0)
    if code:
        status["code"] = code
    if span.status.description:
        status["message"] = span.status.description
    out["status"] = status
    return out


def _utf8(text: str) -> bytes:
    """``text`` as UTF-8; surrogates (which UTF-8 cannot hold) joined into pairs or replaced."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace").encode()


def _dumps(request: dict[str, Any]) -> str:
    return json.dumps(request, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _scope(scope: InstrumentationScope | None) -> dict[str, Any]:
    if scope is None:
        return {}
    out: dict[str, Any] = {"name": scope.name}
    if scope.version:
        out["version"] = scope.version
    attributes = _attributes(getattr(scope, "attributes", None))
    if attributes:
        out["attributes"] = attributes
    return out


def encode_spans(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """Encode spans as one OTLP/JSON ``ExportTraceServiceRequest`` (a JSON-ready dict).

    Spans are grouped by resource, then by instrumentation scope, as the OTLP exporters do.

    Example::

        >>> encode_spans([])
        {'resourceSpans': []}
    """
    by_resource: dict[int, tuple[Resource, dict[int, tuple[InstrumentationScope | None, list[
        dict[str, Any]]]]]] = {}
    for span in spans:
        resource = span.resource
        _, scopes = by_resource.setdefault(id(resource), (resource, {}))
        scope = span.instrumentation_scope
        _, encoded = scopes.setdefault(id(scope), (scope, []))
        encoded.append(_span(span))
    resource_spans: list[dict[str, Any]] = []
    for resource, scopes in by_resource.values():
        entry: dict[str, Any] = {
            "resource": {"attributes": _attributes(resource.attributes)},
            "scopeSpans": [],
        }
        for scope, encoded in scopes.values():
            scope_entry: dict[str, Any] = {"scope": _scope(scope), "spans": encoded}
            if scope is not None and scope.schema_url:
                scope_entry["schemaUrl"] = scope.schema_url
            entry["scopeSpans"].append(scope_entry)
        if resource.schema_url:
            entry["schemaUrl"] = resource.schema_url
        resource_spans.append(entry)
    return {"resourceSpans": resource_spans}


class OTLPJsonFileSpanExporter(SpanExporter):
    """Append each batch of spans to a file as one OTLP/JSON line; rotate the file by size.

    Args:
        path: The file to append to; its directory is created. ``None``: ``PRODLENS_FILE_PATH``.
        max_bytes: Rotate before a write would take the file past this size; 0 never rotates.
            ``None``: ``PRODLENS_FILE_MAX_BYTES`` (default 100 MiB).
        backups: Rotated files kept (``spans.jsonl.1`` is the newest); 0 truncates instead.
            ``None``: ``PRODLENS_FILE_BACKUPS`` (default 5).

    Raises:
        prodlens.ConfigError: a ``PRODLENS_FILE_*`` variable is malformed (at construction only).

    Example::

        >>> import tempfile, os
        >>> exporter = OTLPJsonFileSpanExporter(os.path.join(tempfile.mkdtemp(), "s.jsonl"))
        >>> exporter.export([]).name
        'SUCCESS'
        >>> exporter.shutdown()
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        max_bytes: int | None = None,
        backups: int | None = None,
    ) -> None:
        if path is None or max_bytes is None or backups is None:
            from prodlens.config import load_settings

            settings = load_settings()
            path = settings.file_path if path is None else path
            max_bytes = settings.file_max_bytes if max_bytes is None else max_bytes
            backups = settings.file_backups if backups is None else backups
        if max_bytes < 0 or backups < 0:
            raise ValueError("max_bytes and backups must be >= 0")
        self._path = Path(path)
        self._max_bytes = max_bytes
        self._backups = backups
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._size = 0
        self._closed = False
        self._logged_failure = False
        self._logged_dropped = False
        self._dropped = 0

    @property
    def path(self) -> Path:
        """The file spans are appended to."""
        return self._path

    @property
    def dropped_spans(self) -> int:
        """Spans left out because they could not be encoded (their batch was written)."""
        return self._dropped

    def _open(self) -> IO[bytes]:
        if self._file is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            # Unbuffered: a write that fails (full disk) leaves nothing behind to be flushed
            # later into the middle of another line.
            stream = open(self._path, "ab", buffering=0)  # noqa: SIM115 - kept open
            try:
                self._size = stream.seek(0, os.SEEK_END)
                if self._size and not self._ends_with_newline():
                    # The last line was torn (a crash or a full disk mid-write): end it, or the
                    # next line would be glued to it and both be unreadable.
                    self._write_all(stream, b"\n")
                    self._size += 1
            except BaseException:
                stream.close()
                raise
            self._file = stream
        return self._file

    def _ends_with_newline(self) -> bool:
        with open(self._path, "rb") as reader:
            reader.seek(-1, os.SEEK_END)
            return reader.read(1) == b"\n"

    @staticmethod
    def _write_all(stream: IO[bytes], data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = stream.write(view)
            if not written:
                raise OSError("no progress writing spans")
            view = view[written:]

    def _encode(self, spans: Sequence[ReadableSpan]) -> bytes | None:
        """One line for ``spans``; a span that cannot be encoded is left out alone."""
        try:
            return _utf8(_dumps(encode_spans(spans))) + b"\n"
        except Exception:
            pass
        kept = []
        for span in spans:  # find the span(s) at fault; the rest of the batch is written
            try:
                _dumps(encode_spans([span]))
            except Exception:
                self._dropped += 1
                if not self._logged_dropped:
                    self._logged_dropped = True
                    _logger.warning("prodlens: a span that cannot be encoded as JSON was left "
                                    "out of %s (logged once; see dropped_spans)", self._path,
                                    exc_info=True)
                continue
            kept.append(span)
        return _utf8(_dumps(encode_spans(kept))) + b"\n" if kept else None

    def _rotate(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._backups == 0:
            open(self._path, "wb").close()
            return
        for index in range(self._backups - 1, 0, -1):
            older = self._path.with_name(f"{self._path.name}.{index}")
            if older.exists():
                os.replace(older, self._path.with_name(f"{self._path.name}.{index + 1}"))
        if self._path.exists():
            os.replace(self._path, self._path.with_name(f"{self._path.name}.1"))

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Append the spans as one line. Never raises; returns FAILURE when the write fails."""
        try:
            if not spans:
                return SpanExportResult.SUCCESS
            line = self._encode(spans)
            if line is None:
                return SpanExportResult.FAILURE
            with self._lock:
                if self._closed:
                    return SpanExportResult.FAILURE
                stream = self._open()
                if self._max_bytes and self._size and self._size + len(line) > self._max_bytes:
                    self._rotate()
                    stream = self._open()
                try:
                    self._write_all(stream, line)
                except BaseException:
                    # Part of the line may be in the file: reopen (and so terminate it) on the
                    # next export.
                    self._file = None
                    with contextlib.suppress(OSError):
                        stream.close()
                    raise
                self._size += len(line)
            return SpanExportResult.SUCCESS
        except Exception:  # never break the host application
            if not self._logged_failure:
                self._logged_failure = True
                _logger.exception("prodlens: cannot write spans to %s (logged once)", self._path)
            return SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the file; lines are already flushed per export, so this is cheap."""
        with self._lock:
            if self._file is not None:
                try:
                    self._file.flush()
                except OSError:
                    return False
        return True

    def shutdown(self) -> None:
        """Close the file; later exports return FAILURE."""
        with self._lock:
            self._closed = True
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None
