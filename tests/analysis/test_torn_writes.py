"""Torn writes (issue #16, finding 4): a writer killed mid-line (``kill -9``) or stopped by a
full disk leaves a torn last line; the next append terminates it, so every later batch stays
readable, and the reader reports the torn line (file and line) and reads past it."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from pathlib import Path

from prodlens.analysis._reader import ReadProgress, read_requests

WRITER = Path(__file__).parent / "spans_writer.py"
BATCH = 50
TORN = "torn line (cut short by an interrupted write: a crash, kill -9 or a full disk)"


def start(path: Path, mode: str, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(WRITER), str(path), mode, str(count)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def written_until(process: subprocess.Popen[str], stop: str | int) -> int:
    """Batches the writer reported written whole, reading its output until ``stop`` (a line,
    or that many batches)."""
    assert process.stdout is not None
    wrote = 0
    for line in process.stdout:
        if line.strip() == "WROTE":
            wrote += 1
            if wrote == stop:
                break
        elif line.strip() == stop:
            break
    else:
        raise AssertionError(f"writer ended early: {process.communicate()[1][-2000:]}")
    return wrote


def kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL


def read(path: Path) -> tuple[int, ReadProgress]:
    progress = ReadProgress()
    spans = 0
    for _, request in read_requests([path], progress, show_progress=False):
        for resource_spans in request.resourceSpans or ():
            for scope_spans in resource_spans.scopeSpans or ():
                spans += len(scope_spans.spans or ())
    return spans, progress


def test_writers_killed_after_a_torn_write_lose_no_later_batch(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    rng = random.Random(16)
    written = 0
    rounds = 6
    for _ in range(rounds):
        # The disk fills mid-line (a line is ~60 KB), then the writer is killed -9 before it
        # can write again: its last line stays torn, as after a crash.
        writer = start(path, "tear", rng.randrange(2, 200_000))
        written += written_until(writer, "TORN")
        kill(writer)
    finisher = start(path, "loop", 0)
    written += written_until(finisher, 3)
    kill(finisher)
    spans, progress = read(path)
    assert spans >= written * BATCH
    torn = [e for e in progress.examples if e.endswith(TORN)]
    # Every malformed line is a torn one (the last may be cut at the end of the file), reported
    # with file and line; none had a later batch glued to it.
    assert progress.malformed == len(progress.examples)
    assert all(e.startswith(f"{path}:") for e in progress.examples)
    assert set(progress.examples) - set(torn) <= {e for e in progress.examples
                                                  if e.endswith(": truncated line")}
    assert len(torn) >= rounds - 1 and not any("joined" in e for e in progress.examples)


def test_writers_killed_at_any_moment_lose_no_batch_they_finished(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    rng = random.Random(4)
    written = 0
    for _ in range(6):
        writer = start(path, "loop", 0)
        written += written_until(writer, rng.randrange(1, 12))
        kill(writer)  # wherever it is: maybe mid-line
    spans, progress = read(path)
    assert spans >= written * BATCH
    assert all(e.endswith((TORN, ": truncated line")) for e in progress.examples), \
        progress.examples


def test_a_full_disk_in_a_running_process_loses_only_the_torn_batch(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    writer = start(path, "full", 150_000)  # room for two whole lines and a part
    stdout, stderr = writer.communicate(timeout=60)
    assert writer.returncode == 0, stderr
    lines = stdout.split()
    assert lines.count("TORN") == 1
    written = lines.count("WROTE")
    assert lines[lines.index("TORN") + 1:] == ["WROTE"] * 3  # space came back: all written
    spans, progress = read(path)
    assert spans == written * BATCH
    assert progress.examples == [f"{path}:3: {TORN}"]


def test_a_torn_line_an_older_writer_appended_to_is_read_past(tmp_path: Path) -> None:
    # Files written before the exporter terminated torn lines: the next request is glued on.
    complete = tmp_path / "one.jsonl"
    writer = start(complete, "tear", 10**9)  # room for everything: write one batch, then stop
    written_until(writer, 1)
    kill(writer)
    line = complete.read_bytes().split(b"\n")[0]
    glued = tmp_path / "glued.jsonl"
    glued.write_bytes(line + b"\n" + line[: len(line) // 3] + line + b"\n" + line + b"\n")
    spans, progress = read(glued)
    assert spans == 3 * BATCH
    assert progress.examples == [
        f"{glued}:2: {TORN}, joined to a complete request, which was read"]
