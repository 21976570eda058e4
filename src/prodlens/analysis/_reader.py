"""Reading OTLP/JSON exports: files, directories, ``.gz`` and ``-`` (stdin), one request a line.

Lines are parsed one at a time and handed on, so memory does not grow with the input. A line
that is not an ``ExportTraceServiceRequest`` is counted and reported as ``file:line: reason``;
a file that cannot be opened raises :class:`InputError`.
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
from typing import IO, Any, Final, cast

MAX_EXAMPLES: Final = 20
_PROGRESS_AFTER_S: Final = 0.5


class InputError(Exception):
    """An input file or directory cannot be read."""


_MISSING_EXTRA: Final = "prodlens analysis needs its extra: pip install 'prodlens[analyze]'"


def load_json_parser() -> Callable[[bytes], Any]:
    """``orjson.loads``, or an :class:`ImportError` that says which extra to install."""
    try:
        import orjson
    except ImportError:
        raise ImportError(_MISSING_EXTRA) from None
    return orjson.loads


def load_json_dumper() -> Callable[[Any], bytes]:
    """``orjson.dumps``, or an :class:`ImportError` that says which extra to install."""
    try:
        import orjson
    except ImportError:
        raise ImportError(_MISSING_EXTRA) from None
    return orjson.dumps


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

    def bad_line(self, where: str, reason: str) -> None:
        """Count a malformed line and keep the first few examples."""
        self.malformed += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{where}: {reason}")


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
        stream: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed by the caller
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
) -> Iterator[tuple[str, Any]]:
    """Yield ``(where, request)`` for each parsed line, ``where`` being ``file:line``.

    Raises:
        InputError: a path does not exist or a file cannot be opened.
        ImportError: orjson (the ``analyze`` extra) is missing.
    """
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
                    truncated = not line.endswith(b"\n")
                    try:
                        request = loads(line)
                    except ValueError as error:
                        reason = "truncated line" if truncated else f"not JSON ({error})"
                        progress.bad_line(f"{name}:{number}", reason)
                        continue
                    if not isinstance(request, dict) or not isinstance(
                            request.get("resourceSpans"), list):
                        progress.bad_line(f"{name}:{number}", "no resourceSpans list")
                        continue
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
