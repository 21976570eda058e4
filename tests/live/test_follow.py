"""Following files like tail -F: new lines, new files, rotation, gzip, truncation, replacement,
and a partial last line that is waited for."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from prodlens.live._follow import Follower


def _line(number: int) -> bytes:
    return b'{"resourceSpans": [], "n": %d}\n' % number


def _numbers(lines: list[tuple[str, bytes]]) -> list[int]:
    return [int(line.split(b'"n": ')[1].rstrip(b"}\n")) for _, line in lines]


def test_new_lines_and_new_files_are_read_once(tmp_path: Path) -> None:
    live = tmp_path / "spans.jsonl"
    live.write_bytes(_line(1) + _line(2))
    follower = Follower([tmp_path])
    assert list(follower.poll()) == []  # existing content: followed from its end
    with open(live, "ab") as stream:
        stream.write(_line(3))
    (tmp_path / "other.jsonl").write_bytes(_line(4))
    assert sorted(_numbers(list(follower.poll()))) == [3, 4]
    assert list(follower.poll()) == []


def test_from_start_reads_what_exists(tmp_path: Path) -> None:
    (tmp_path / "spans.jsonl").write_bytes(_line(1) + _line(2))
    (tmp_path / ".hidden").write_bytes(_line(9))
    assert _numbers(list(Follower([tmp_path], from_start=True).poll())) == [1, 2]


def test_a_partial_last_line_is_waited_for(tmp_path: Path) -> None:
    live = tmp_path / "spans.jsonl"
    live.write_bytes(_line(1))
    follower = Follower([live], from_start=True)
    assert _numbers(list(follower.poll())) == [1]
    whole = _line(2)
    with open(live, "ab") as stream:
        stream.write(whole[:10])
    assert list(follower.poll()) == []
    with open(live, "ab") as stream:
        stream.write(whole[10:])
    assert _numbers(list(follower.poll())) == [2]


def test_a_file_whose_first_line_is_partial_waits_too(tmp_path: Path) -> None:
    follower = Follower([tmp_path])
    live = tmp_path / "spans.jsonl"
    live.write_bytes(_line(1)[:5])
    assert list(follower.poll()) == []
    live.write_bytes(_line(1))
    assert _numbers(list(follower.poll())) == [1]


def test_rotation_by_rename_continues_where_it_was(tmp_path: Path) -> None:
    live = tmp_path / "spans.jsonl"
    live.write_bytes(_line(1))
    follower = Follower([tmp_path], from_start=True)
    assert _numbers(list(follower.poll())) == [1]
    with open(live, "ab") as stream:
        stream.write(_line(2))  # written just before the rotation, not read yet
    os.rename(live, tmp_path / "spans.jsonl.1")
    live.write_bytes(_line(3))
    assert sorted(_numbers(list(follower.poll()))) == [2, 3]
    assert list(follower.poll()) == []


def test_a_rotated_file_compressed_later_is_not_read_again(tmp_path: Path) -> None:
    live = tmp_path / "spans.jsonl"
    live.write_bytes(_line(1) + _line(2))
    follower = Follower([tmp_path], from_start=True)
    assert _numbers(list(follower.poll())) == [1, 2]
    rotated = tmp_path / "spans.jsonl.1"
    os.rename(live, rotated)
    with gzip.open(tmp_path / "spans.jsonl.1.gz", "wb") as stream:
        stream.write(rotated.read_bytes())
    rotated.unlink()
    live.write_bytes(_line(3))
    assert _numbers(list(follower.poll())) == [3]


def test_a_gzip_file_that_appears_is_read(tmp_path: Path) -> None:
    follower = Follower([tmp_path])
    assert list(follower.poll()) == []
    with gzip.open(tmp_path / "old.jsonl.gz", "wb") as stream:
        stream.write(_line(1) + _line(2))
    assert _numbers(list(follower.poll())) == [1, 2]
    assert list(follower.poll()) == []


def test_a_gzip_file_still_being_written_is_read_when_whole(tmp_path: Path) -> None:
    follower = Follower([tmp_path])
    assert list(follower.poll()) == []
    data = gzip.compress(b"".join(_line(n) for n in range(1, 200)))
    target = tmp_path / "late.jsonl.gz"
    target.write_bytes(data[: len(data) // 2])
    first = _numbers(list(follower.poll()))
    target.write_bytes(data)
    rest = _numbers(list(follower.poll()))
    assert first + rest == list(range(1, 200))


def test_truncation_and_replacement_read_the_new_content(tmp_path: Path) -> None:
    live = tmp_path / "spans.jsonl"
    live.write_bytes(_line(1) + _line(2) + _line(3))
    follower = Follower([live], from_start=True)
    assert _numbers(list(follower.poll())) == [1, 2, 3]
    with open(live, "r+b") as stream:  # truncated in place (copytruncate), then written
        stream.truncate(0)
    with open(live, "ab") as stream:
        stream.write(_line(4))
    assert _numbers(list(follower.poll())) == [4]
    replacement = tmp_path / "new"
    replacement.write_bytes(_line(5) + _line(6))
    os.replace(replacement, live)  # a new file under the same name
    assert _numbers(list(follower.poll())) == [5, 6]


def test_positions_restore_where_a_checkpoint_was(tmp_path: Path) -> None:
    live = tmp_path / "spans.jsonl"
    live.write_bytes(_line(1) + _line(2))
    follower = Follower([tmp_path], from_start=True)
    assert _numbers(list(follower.poll())) == [1, 2]
    saved = dict(follower.positions)
    with open(live, "ab") as stream:
        stream.write(_line(3))
    (tmp_path / "b.jsonl").write_bytes(_line(4))
    restarted = Follower([tmp_path], positions=saved)
    assert sorted(_numbers(list(restarted.poll()))) == [3, 4]


def test_a_vanished_file_is_not_an_error(tmp_path: Path) -> None:
    live = tmp_path / "spans.jsonl"
    live.write_bytes(_line(1))
    follower = Follower([tmp_path], from_start=True)
    assert _numbers(list(follower.poll())) == [1]
    live.unlink()
    assert list(follower.poll()) == [] and follower.unreadable == []
    assert follower.positions == {}
