"""Following OTLP/JSON files as they are written, like ``tail -F``, and surviving rotation.

A file is known by its *fingerprint* (a hash of its first line), not by its name or inode: a
writer's rotation renames ``spans.jsonl`` to ``spans.jsonl.1`` (same content, so the same
fingerprint: reading goes on where it was), logrotate may compress it to ``spans.jsonl.1.gz``
(decompressed, same first line: the part already read is skipped), and a file truncated or
replaced by a new one starts with a new first line (read from its start). Only whole lines are
handed on: a partial last line is left for the next poll, never reported as malformed.

Positions (fingerprint -> bytes read) are plain data, so ``watch`` can checkpoint them in the
ledger and a restarted ``watch`` continues where the checkpoint was.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, cast

#: Bytes of the first line hashed for the fingerprint (a line is one export request: its
#: first bytes carry the resource and the first trace id, unique enough).
_FINGERPRINT_BYTES: Final = 4096
#: Bytes read per step; a line longer than this is gathered over several steps.
_CHUNK: Final = 1 << 20
#: A line longer than this is skipped and reported, so one runaway write cannot exhaust memory.
MAX_LINE: Final = 64 << 20


@dataclass
class _Open:
    """A file being followed: where its content is and how much of it has been handed on."""

    path: str
    fingerprint: str
    gz: bool
    offset: int


class Follower:
    """Yields new complete lines from files and directories (walked, hidden files skipped).

    Args:
        paths: Files or directories to follow.
        from_start: Read files that exist at the first poll from their start; otherwise they
            are followed from their end (``tail -F``), and only files that appear later are
            read whole.
        positions: Fingerprint -> bytes already handed on, from a checkpoint; such files
            continue from there, and files not in it are read whole.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], *, from_start: bool = False,
                 positions: dict[str, int] | None = None) -> None:
        self.paths = [os.fspath(path) for path in paths]
        self.positions: dict[str, int] = dict(positions or {})
        self.skipped_long_lines = 0
        self.unreadable: list[str] = []
        self._from_start = from_start or positions is not None
        self._first_poll = True

    def _files(self) -> list[str]:
        files: list[str] = []
        for path in self.paths:
            if os.path.isdir(path):
                with contextlib.suppress(OSError):
                    for found in sorted(Path(path).rglob("*")):
                        relative = found.relative_to(path).parts
                        if any(part.startswith(".") for part in relative):
                            continue
                        if found.is_file():
                            files.append(str(found))
            elif os.path.isfile(path):
                files.append(path)

        def age(name: str) -> tuple[float, str]:
            try:
                return os.path.getmtime(name), name
            except OSError:
                return 0.0, name

        # oldest first, so lines come roughly in time order (rotated files before the live one)
        return sorted(files, key=age)

    def poll(self) -> Iterator[tuple[str, bytes]]:
        """Yield ``(path, line)`` for every complete line written since the last poll."""
        first = self._first_poll
        self._first_poll = False
        present: set[str] = set()
        self.unreadable = []
        for path in self._files():
            try:
                opened = self._identify(path)
                if opened is None:  # empty, or its first line is not complete yet
                    continue
                present.add(opened.fingerprint)
                if opened.fingerprint not in self.positions:
                    start = 0
                    if first and not self._from_start and not opened.gz:
                        start = _complete_size(path)
                    self.positions[opened.fingerprint] = start
                opened.offset = self.positions[opened.fingerprint]
                yield from self._read(opened)
            except OSError as error:  # removed between listing and opening, or unreadable
                if os.path.exists(path):
                    self.unreadable.append(f"{path}: {error.strerror or error}")
        # forget files that are gone (rotated away and deleted), keeping checkpoints small
        for fingerprint in list(self.positions):
            if fingerprint not in present:
                del self.positions[fingerprint]

    def _identify(self, path: str) -> _Open | None:
        with _open(path) as (stream, gz):
            try:
                head = stream.readline(_FINGERPRINT_BYTES)
            except (EOFError, zlib.error, gzip.BadGzipFile):
                return None  # a .gz still being written
        if not head or (len(head) < _FINGERPRINT_BYTES and not head.endswith(b"\n")):
            return None
        return _Open(path, hashlib.sha256(head).hexdigest()[:32], gz, 0)

    def _read(self, opened: _Open) -> Iterator[tuple[str, bytes]]:
        with _open(opened.path) as (stream, gz):
            if gz:
                _skip(stream, opened.offset)
            else:
                size = os.fstat(stream.fileno()).st_size
                if size < opened.offset:  # truncated in place, and written again since
                    opened.offset = 0
                stream.seek(opened.offset)
            pending = b""
            while True:
                try:
                    chunk = stream.read(_CHUNK)
                except (EOFError, zlib.error, gzip.BadGzipFile):
                    break  # a .gz cut short (being written): what is complete was handed on
                if not chunk:
                    break
                pending += chunk
                end = pending.rfind(b"\n")
                if end < 0:
                    if len(pending) > MAX_LINE:
                        self.skipped_long_lines += 1
                        opened.offset += len(pending)
                        self.positions[opened.fingerprint] = opened.offset
                        pending = b""
                    continue
                complete, pending = pending[:end + 1], pending[end + 1:]
                start = 0
                while start < len(complete):
                    stop = complete.index(b"\n", start) + 1
                    line = complete[start:stop]
                    opened.offset += len(line)
                    self.positions[opened.fingerprint] = opened.offset
                    yield opened.path, line
                    start = stop


def _complete_size(path: str) -> int:
    """The size of a file up to its last newline (a partial last line is read when done)."""
    try:
        with open(path, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            back = min(size, _CHUNK)
            stream.seek(size - back)
            tail = stream.read(back)
    except OSError:
        return 0
    newline = tail.rfind(b"\n")
    return size - back + newline + 1 if newline >= 0 else size - back


def _skip(stream: IO[bytes], count: int) -> None:
    while count > 0:
        chunk = stream.read(min(count, _CHUNK))
        if not chunk:
            return
        count -= len(chunk)


@contextlib.contextmanager
def _open(path: str) -> Iterator[tuple[IO[bytes], bool]]:
    raw = open(path, "rb")  # noqa: SIM115 - closed below
    try:
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        if gz:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                yield cast("IO[bytes]", stream), True
        else:
            yield raw, False
    finally:
        raw.close()
