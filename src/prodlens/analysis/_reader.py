"""Reading OTLP/JSON exports: files, directories, ``.gz`` and ``-`` (stdin), one request a line.

Lines are decoded one at a time (msgspec, into the Structs of :mod:`._otlp`) and handed on, so
memory does not grow with the input. A line that is not an ``ExportTraceServiceRequest`` is
counted and reported as ``file:line: reason``; a file that cannot be opened raises
:class:`InputError`.

Damage is read past, not given up on: a line cut short by an interrupted write (``kill -9``, a
full disk) is reported as a *torn line*, and when an older writer appended the next request to
it, that request is still read; a ``\\ud800`` escape (valid JSON, not valid Unicode, as Python's
``json.dumps`` writes a lone surrogate) is read as U+FFFD instead of costing the whole line; a line
over :data:`MAX_LINE_BYTES` is skipped without being held in memory. A file that held lines but
no readable span gets a note saying so, with a hint when it looks like the console exporter's
pretty-printed output.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any, Final, cast

if TYPE_CHECKING:
    import msgspec

    from prodlens.analysis._otlp import ExportRequest

MAX_EXAMPLES: Final = 20
#: Lines longer than this are skipped (reported), never held whole in memory; the JSON parsers
#: refuse documents of 2 GiB and more, and a writer's batch is a few MB at most.
MAX_LINE_BYTES: Final = 1 << 30
#: Where a request starts, as every OTLP/JSON writer begins its lines (for torn-line recovery).
_REQUEST_START: Final = b'{"resourceSpans":'
#: A ``\uD800``-``\uDFFF`` escape not itself escaped (an even run of backslashes before it).
_SURROGATE_ESCAPE: Final = re.compile(rb"(?<!\\)((?:\\\\)*)\\u([dD][89a-fA-F][0-9a-fA-F]{2})")
_TORN: Final = "torn line (cut short by an interrupted write: a crash, kill -9 or a full disk)"
#: In the note about a file that held lines but no readable span (the CLI exits non-zero).
NO_SPAN_NOTE: Final = "no readable span in"
#: How the console exporter (``OTEL_TRACES_EXPORTER=console``) writes ids, in pretty JSON.
_CONSOLE_MARK: Final = b'"trace_id": "0x'
_PROGRESS_AFTER_S: Final = 0.5
#: One export request is one line, often hundreds of KB: with the default 8 KiB buffer,
#: ``readline`` gathers such a line in pieces and spends 4x longer than with this one.
READ_BUFFER: Final = 1 << 20


class InputError(Exception):
    """An input file or directory cannot be read."""


_MISSING_EXTRA: Final = "prodlens analysis needs its extra: pip install 'prodlens[analyze]'"


def load_json_parser() -> Callable[[bytes | memoryview], Any]:
    """``orjson.loads``, or an :class:`ImportError` that says which extra to install.

    orjson parses what the engine reads of a span's raw attributes (into the same dicts as
    ever, so values turn into the same text) and words the reason a line is malformed.
    """
    try:
        import orjson
    except ImportError:
        raise ImportError(_MISSING_EXTRA) from None
    return orjson.loads


def load_otlp() -> ModuleType:
    """:mod:`prodlens.analysis._otlp`, or an :class:`ImportError` that says which extra to install.

    That module imports msgspec, so it is imported here, when files are read, and never by
    ``import prodlens`` or the CLI's parser.
    """
    try:
        from prodlens.analysis import _otlp
    except ImportError:
        raise ImportError(_MISSING_EXTRA) from None
    return _otlp


def load_decoder() -> Callable[[bytes], ExportRequest]:
    """A msgspec decoder of one line into an ``ExportRequest`` Struct (see :func:`load_otlp`)."""
    decoder: msgspec.json.Decoder[ExportRequest] = load_otlp().decoder()
    return decoder.decode


def why_malformed(line: bytes, error: Exception, loads: Callable[[bytes | memoryview], Any],
                  *, limit: int = 120) -> str:
    """Why a line is malformed (the decoder refused it, or the engine raised ``error`` on its
    request), worded as it was when every line was parsed with orjson first.

    The decoder stops at the first problem, which is a shape error even when the line is also
    cut short, and it does not check what it skips. So the rare bad line is parsed again with
    orjson, untyped: its error, or the document's top level, says which of "truncated line",
    "not JSON", "no resourceSpans list" or a malformed request it is.
    """
    try:
        document = loads(line)
    except ValueError as json_error:
        if not line.endswith(b"\n"):
            return "truncated line"
        if _cut_short(line, json_error, loads):
            return _TORN
        return f"not JSON ({json_error})"
    if not isinstance(document, dict) or not isinstance(document.get("resourceSpans"), list):
        return "no resourceSpans list"
    return f"not an OTLP trace request ({type(error).__name__}: {str(error)[:limit]})"


def _cut_short(line: bytes, error: ValueError, loads: Callable[[bytes | memoryview], Any]
               ) -> bool:
    """True if ``line`` (which failed with ``error``) is a document cut short, maybe inside a
    string (where its newline is the error) or a multi-byte character."""
    if str(error).startswith("unexpected end of data"):
        return True
    body = line.rstrip(b"\r\n")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as bad:
        if bad.start < len(body) - 3 or bad.reason != "unexpected end of data":
            return False
        body = body[:bad.start]
    try:
        loads(body)
    except ValueError as rest:
        return str(rest).startswith("unexpected end of data")
    return False


def replace_lone_surrogate_escapes(line: bytes) -> bytes | None:
    """``line`` with each ``\\uD800``-``\\uDFFF`` escape that is not half of a pair replaced by
    ``\\ufffd``; None when it has none (valid pairs are kept)."""
    matches = list(_SURROGATE_ESCAPE.finditer(line))
    if not matches:
        return None
    lone = []
    index = 0
    while index < len(matches):
        match = matches[index]
        high = match.group(2)[1:2].lower() in b"89ab"
        if high and index + 1 < len(matches):
            after = matches[index + 1]
            if after.start() == match.end() and not after.group(1) \
                    and after.group(2)[1:2].lower() in b"cdef":
                index += 2  # a valid pair
                continue
        lone.append(match)
        index += 1
    if not lone:
        return None
    out = bytearray()
    last = 0
    for match in lone:
        out += line[last:match.start()]
        out += match.group(1) + b"\\ufffd"
        last = match.end()
    out += line[last:]
    return bytes(out)


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Files to read, in order: directories are walked (sorted, hidden files skipped)."""
    files: list[str] = []
    for raw in paths:
        path = os.fspath(raw)
        if path == "-":
            files.append(path)
            continue
        if os.path.isdir(path):
            try:
                found = sorted(
                    str(p) for p in Path(path).rglob("*")
                    if p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )
            except OSError as error:
                raise InputError(f"{path}: cannot list: {error.strerror or error}") from None
            files.extend(found)
            continue
        if not os.path.exists(path):
            raise InputError(f"{path}: no such file or directory")
        files.append(path)
    return files


@dataclass
class ReadProgress:
    """Counters kept while reading; turned into an ``InputSummary`` at the end."""

    spans: int = 0
    lines: int = 0
    malformed: int = 0
    examples: list[str] = field(default_factory=list)
    bytes_read: int = 0
    #: The line of the request last handed on (for :meth:`bad_request`).
    line: bytes = b""
    #: Notes for the reader's user: files that held lines but no readable span, with a hint.
    notes: list[str] = field(default_factory=list)

    def bad_line(self, where: str, reason: str) -> None:
        """Count a malformed line and keep the first few examples."""
        self.malformed += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{where}: {reason}")

    def bad_request(self, where: str, error: Exception) -> None:
        """Count the line of a request the engine could not read (it raised ``error``).

        The decoder does not look into what it skips (raw attributes, span ids...), so a line
        can decode and still not be JSON; the reason then says "not JSON", as it always did.
        """
        self.bad_line(where, why_malformed(self.line, error, load_json_parser(), limit=80))


class _ProgressBar:
    """A one-line progress bar on stderr, only on a terminal and only after a moment."""

    def __init__(self, total_bytes: int, enabled: bool) -> None:
        self._total = total_bytes
        self.enabled = enabled and sys.stderr.isatty()
        self._start = time.monotonic()
        self._last = 0.0
        self._shown = False

    def update(self, done_bytes: int, spans: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._start < _PROGRESS_AFTER_S or now - self._last < 0.2:
            return
        self._last = now
        self._shown = True
        if self._total:
            share = min(1.0, done_bytes / self._total)
            bar = "#" * int(share * 30)
            sys.stderr.write(f"\rreading [{bar:<30}] {share:4.0%} {spans:,} spans ")
        else:
            sys.stderr.write(f"\rreading {spans:,} spans ")
        sys.stderr.flush()

    def close(self) -> None:
        if self._shown:
            sys.stderr.write("\r" + " " * 70 + "\r")
            sys.stderr.flush()


def _open(path: str) -> tuple[IO[bytes], IO[bytes]]:
    """``path`` opened for reading lines: (its lines' stream, the file itself).

    A gzipped file (by its magic bytes, whatever its name) is inflated by ISA-L's igzip
    (:class:`isal.igzip.IGzipFile`: the standard library's ``GzipFile``, inflating about twice
    as fast; ``bench/bench_analysis.py``'s read floors): a file cut short gives every line
    before the cut, then ``EOFError``. The file's position (``tell``) is how far the compressed
    input has been read.
    """
    if path == "-":
        return sys.stdin.buffer, sys.stdin.buffer
    try:
        stream: IO[bytes] = open(path, "rb", buffering=READ_BUFFER)  # noqa: SIM115 - closed by the caller
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error.strerror or error}") from None
    if stream.read(2) == b"\x1f\x8b":
        stream.seek(0)
        try:
            from isal import igzip
        except ImportError:
            stream.close()
            raise ImportError(_MISSING_EXTRA) from None
        inflated = igzip.IGzipFile(fileobj=stream, mode="rb")  # type: ignore[no-untyped-call]
        return cast("IO[bytes]", inflated), stream
    stream.seek(0)
    return stream, stream


def _read_errors() -> tuple[type[BaseException], ...]:
    """What reading a file's lines raises on damage (a gzip file cut short or corrupt)."""
    isal_zlib = sys.modules.get("isal.isal_zlib")
    errors: tuple[type[BaseException], ...] = (EOFError, OSError, zlib.error)
    return (*errors, isal_zlib.error) if isal_zlib is not None else errors


def _salvage(line: bytes, decode: Callable[[bytes], ExportRequest]
             ) -> tuple[bytes, ExportRequest, str | None] | None:
    """A request read from a line the decoder refused: (the line read, its request, the reason
    to report or None), or None when nothing in it can be read.

    Two kinds of damage are read past: lone surrogate escapes (replaced, not reported: the line
    is valid JSON), and a torn line that an older writer appended the next request to (the torn
    part is reported, the request after it read).
    """
    repaired = replace_lone_surrogate_escapes(line) if b"\\u" in line else None
    if repaired is not None:
        try:
            return repaired, decode(repaired), None
        except (ValueError, RecursionError):
            line = repaired
    start = line.rfind(_REQUEST_START)
    if start > 0:
        tail = line[start:]
        try:
            return tail, decode(tail), _TORN + ", joined to a complete request, which was read"
        except (ValueError, RecursionError):
            pass
    return None


def _skip_rest_of_line(stream: IO[bytes]) -> int:
    """Read to the end of the current line in bounded pieces; the bytes skipped."""
    skipped = 0
    while True:
        piece = stream.readline(READ_BUFFER)
        skipped += len(piece)
        if not piece or piece.endswith(b"\n"):
            return skipped


def _no_span_note(name: str, lines: int, console: bool) -> str:
    if console:
        return (f"{name}: {NO_SPAN_NOTE} {lines:,} line(s); it looks like the console "
                "exporter's output (OTEL_TRACES_EXPORTER=console: pretty-printed JSON over many "
                "lines), which prodlens cannot read. Export with "
                "OTEL_TRACES_EXPORTER=prodlens_file (and PRODLENS_FILE_PATH) instead")
    return (f"{name}: {NO_SPAN_NOTE} {lines:,} line(s); prodlens reads OTLP/JSON, one "
            "ExportTraceServiceRequest a line, as OTEL_TRACES_EXPORTER=prodlens_file or the "
            "Collector's file exporter write it")


def read_requests(
    paths: Iterable[str | os.PathLike[str]],
    progress: ReadProgress,
    *,
    show_progress: bool = True,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[tuple[str, ExportRequest]]:
    """Yield ``(where, request)`` for each decoded line, ``where`` being ``file:line``.

    A file with non-blank lines but no readable span adds a note to ``progress.notes``. Lines
    longer than ``max_line_bytes`` are skipped and reported.

    Raises:
        InputError: a path does not exist or a file cannot be opened.
        ImportError: msgspec or orjson (the ``analyze`` extra) is missing.
    """
    decode = load_decoder()
    loads = load_json_parser()
    files = expand_paths(paths)
    total = 0
    for path in files:
        if path != "-":
            with contextlib.suppress(OSError):
                total += os.path.getsize(path)
    bar = _ProgressBar(total, show_progress)
    done_before = 0
    try:
        for path in files:
            name = "<stdin>" if path == "-" else path
            stream, raw = _open(path)
            read_errors = _read_errors()
            number = 0
            skipped = 0
            content_lines = 0
            spans_before = progress.spans
            console = False
            try:
                while True:
                    try:
                        line = stream.readline(max_line_bytes + 1)
                        if len(line) > max_line_bytes and not line.endswith(b"\n"):
                            skipped = len(line) + _skip_rest_of_line(stream)
                            line = b""
                    except read_errors as error:
                        progress.bad_line(f"{name}:{number + 1}", f"unreadable data ({error})")
                        break
                    if not line:
                        if not skipped:
                            break
                        number += 1
                        progress.lines += 1
                        content_lines += 1
                        progress.bad_line(f"{name}:{number}",
                                          f"line of {skipped:,} bytes skipped (longer than "
                                          f"{max_line_bytes:,}; export smaller batches)")
                        skipped = 0
                        continue
                    number += 1
                    progress.lines += 1
                    if line.isspace():  # not line.strip(): that copies the whole line
                        continue
                    content_lines += 1
                    try:
                        request = decode(line)
                    # msgspec's DecodeError, UnicodeDecodeError; RecursionError past ~1,000
                    # levels of nesting, where orjson's "depth limit exceeded" says not JSON
                    except (ValueError, RecursionError) as error:
                        salvaged = _salvage(line, decode)
                        if salvaged is None:
                            progress.bad_line(f"{name}:{number}",
                                              why_malformed(line, error, loads))
                            console = console or _CONSOLE_MARK in line
                            continue
                        line, request, reason = salvaged
                        if reason is not None:
                            progress.bad_line(f"{name}:{number}", reason)
                    progress.line = line
                    yield f"{name}:{number}", request
                    if bar.enabled and path != "-":
                        try:
                            position = raw.tell()
                        except (OSError, ValueError):
                            position = 0
                        bar.update(done_before + position, progress.spans)
            finally:
                if path != "-":
                    stream.close()
                    if raw is not stream:
                        raw.close()
            if content_lines and progress.spans == spans_before:
                progress.notes.append(_no_span_note(name, content_lines, console))
            if path != "-":
                with contextlib.suppress(OSError):
                    done_before += os.path.getsize(path)
    finally:
        bar.close()
