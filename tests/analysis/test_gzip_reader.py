"""The reader's gzip files: inflated by ISA-L's igzip, read as ``gzip`` reads them."""

from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path

import pytest

from prodlens.analysis import slice_failures
from prodlens.analysis._reader import READ_BUFFER, _open, _read_errors

LINES = b"".join(b'{"n": %d, "pad": "%s"}\n' % (n, b"x" * (n % 97)) for n in range(40_000))


def read_all(path: Path) -> bytes:
    stream, raw = _open(str(path))
    with raw, stream:
        return b"".join(iter(lambda: stream.readline(READ_BUFFER), b""))


def test_reads_what_gzip_reads_members_and_padding_included(tmp_path: Path) -> None:
    half = len(LINES) // 2
    path = tmp_path / "joined.jsonl.gz"
    # two members (as `cat a.gz b.gz` makes), and the zero padding gzip reads past
    path.write_bytes(gzip.compress(LINES[:half]) + gzip.compress(LINES[half:], compresslevel=1)
                     + b"\x00" * 7)
    assert read_all(path) == gzip.decompress(path.read_bytes()) == LINES


@pytest.mark.parametrize("damage", ["cut", "flipped"])
def test_damage_raises_a_read_error_after_the_good_bytes(tmp_path: Path, damage: str) -> None:
    packed = bytearray(gzip.compress(LINES))
    if damage == "cut":
        packed = packed[: len(packed) // 2]
    else:
        packed[len(packed) // 2] ^= 0xFF
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(bytes(packed))
    stream, raw = _open(str(path))
    good = b""
    with raw, stream, pytest.raises(_read_errors()):
        while line := stream.readline(READ_BUFFER):
            good += line
    assert len(good) > len(LINES) // 4
    if damage == "cut":  # (a flipped bit inflates to garbage before the check sees it)
        assert LINES.startswith(good)


def test_a_gzip_bomb_is_inflated_a_bounded_piece_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "bomb.gz"
    with gzip.open(path, "wb", compresslevel=9) as sink:  # 1 GiB of zeros in ~1 MB
        block = b"\x00" * (1 << 24)
        for _ in range(64):
            sink.write(block)
    tracemalloc.start()
    try:
        stream, raw = _open(str(path))
        with raw, stream:
            inflated = 0
            while piece := stream.read(1 << 20):
                inflated += len(piece)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert inflated == 1 << 30
    assert peak < 32 << 20  # a buffer's worth at a time, never the whole file


def test_slice_of_a_gzipped_export_equals_the_plain_one(tmp_path: Path) -> None:
    from prodlens.analysis.synthetic import generate

    truth = generate(tmp_path / "plain", traces=600, seed=3)
    packed = tmp_path / "packed"
    packed.mkdir()
    for path in truth.paths:
        (packed / (path.name + ".gz")).write_bytes(gzip.compress(path.read_bytes()))
    plain, zipped = slice_failures([tmp_path / "plain"]), slice_failures([packed])
    assert zipped.input.spans == plain.input.spans == truth.spans
    assert zipped.verdict() == plain.verdict()
    assert zipped.findings == plain.findings


def test_a_bad_deflate_block_is_reported_not_raised(tmp_path: Path) -> None:
    packed = bytearray(gzip.compress(LINES))
    packed[10] ^= 0xFF  # the first deflate block's header, right after gzip's own
    path = tmp_path / "bad-block.jsonl.gz"
    path.write_bytes(bytes(packed))
    report = slice_failures([path])  # ISA-L's own error type, caught like zlib's
    assert report.input.malformed == 1
    assert "unreadable data" in report.input.malformed_examples[0]
