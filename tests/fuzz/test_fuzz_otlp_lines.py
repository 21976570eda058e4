"""Fuzz: OTLP/JSON lines as the analysis reader reads them. Damaged lines (cut, spliced,
garbage, lone surrogate escapes) never raise and never cost a neighbouring valid line; every
line is accounted for."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from fuzz_strategies import ANY_TEXT
from hypothesis import given
from hypothesis import strategies as st

from prodlens.analysis._reader import ReadProgress, read_requests


def valid_line(name: str) -> bytes:
    span = {"traceId": "1" * 32, "spanId": "2" * 16, "name": name, "kind": 2,
            "startTimeUnixNano": "1", "endTimeUnixNano": "2", "status": {},
            "attributes": [{"key": "enduser.id", "value": {"stringValue": name}}]}
    return json.dumps({"resourceSpans": [{"resource": {"attributes": []},
                                          "scopeSpans": [{"scope": {}, "spans": [span]}]}]}
                      ).encode()


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    line = valid_line(draw(ANY_TEXT))
    kind = draw(st.sampled_from(["cut", "splice", "garbage", "insert"]))
    at = draw(st.integers(0, len(line)))
    if kind == "cut":
        return line[:at]
    if kind == "splice":
        return line[:at] + valid_line("next")
    if kind == "insert":
        return line[:at] + draw(st.binary(max_size=20)).replace(b"\n", b"") + line[at:]
    return draw(st.binary(max_size=200)).replace(b"\n", b"")


@given(lines=st.lists(st.one_of(damaged(), st.just(b"VALID")), min_size=1, max_size=8))
def test_reader_accounts_for_every_line(lines: list[bytes]) -> None:
    body = [valid_line(f"ok{i}") if line == b"VALID" else line for i, line in enumerate(lines)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "spans.jsonl"
        path.write_bytes(b"\n".join(body) + b"\n")
        progress = ReadProgress()
        read = [where for where, _ in read_requests([path], progress, show_progress=False)]
    valid = {f"{path}:{i + 1}" for i, line in enumerate(lines) if line == b"VALID"}
    assert valid <= set(read)  # no damaged line costs a neighbour
    blank = sum(1 for line in body if line.isspace() or not line)
    assert progress.lines == len(body)
    # Each non-blank line is read, reported, or both (a torn part with a request glued on).
    assert len(read) + progress.malformed >= len(body) - blank
