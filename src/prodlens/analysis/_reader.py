"""Reading OTLP/JSON exports: files, directories, ``.gz`` and ``-`` (stdin), one request a line.

Lines are decoded one at a time (msgspec, into the Structs of :mod:`._otlp`) and handed on, so
memory does not grow with the input. A line that is not an ``ExportTraceServiceRequest`` is
counted and reported as ``file:line: reason``; a file that cannot be opened raises
:class:`InputError`.
"""

from __future__ import annotations

import contextlib
import gzip
import os
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
        return "truncated line" if not line.endswith(b"\n") else f"not JSON ({json_error})"
    if not isinstance(document, dict) or not isinstance(document.get("resourceSpans"), list):
        return "no resourceSpans list"
    return f"not an OTLP trace request ({type(error).__name__}: {str(error)[:limit]})"


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


def _open(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    try:
        stream: IO[bytes] = open(path, "rb", buffering=READ_BUFFER)  # noqa: SIM115 - closed by the caller
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error.strerror or error}") from None
    if stream.read(2) == b"\x1f\x8b":
        stream.seek(0)
        return cast("IO[bytes]", gzip.GzipFile(fileobj=stream, mode="rb"))
    stream.seek(0)
    return stream


def read_requests(
    paths: Iterable[str | os.PathLike[str]],
    progress: ReadProgress,
    *,
    show_progress: bool = True,
) -> Iterator[tuple[str, ExportRequest]]:
    """Yield ``(where, request)`` for each decoded line, ``where`` being ``file:line``.

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
            stream = _open(path)
            raw = getattr(stream, "fileobj", None) or stream
            number = 0
            try:
                while True:
                    try:
                        line = stream.readline()
                    except (EOFError, OSError, zlib.error) as error:
                        progress.bad_line(f"{name}:{number + 1}", f"unreadable data ({error})")
                        break
                    if not line:
                        break
                    number += 1
                    progress.lines += 1
                    if line.isspace():  # not line.strip(): that copies the whole line
                        continue
                    try:
                        request = decode(line)
                    # msgspec's DecodeError, UnicodeDecodeError; RecursionError past ~1,000
                    # levels of nesting, where orjson's "depth limit exceeded" says not JSON
                    except (ValueError, RecursionError) as error:
                        progress.bad_line(f"{name}:{number}", why_malformed(line, error, loads))
                        continue
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
            if path != "-":
                with contextlib.suppress(OSError):
                    done_before += os.path.getsize(path)
    finally:
        bar.close()
