"""The analysis commands explain themselves, warn only about what they did not filter, and
leave the host's garbage collector as they found it."""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from otlp_lines import line, span, write

from prodlens.analysis import InputError, SliceOptions, slice_failures
from prodlens.cli import build_parser


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]  # type: ignore[no-any-return]
    raise AssertionError("no sub-commands")


@pytest.mark.parametrize("command", ["slice", "affected"])
def test_every_option_has_help_with_an_example(command: str) -> None:
    parser = _subparser(command)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, action.dest
        if action.nargs != 0:  # an option that takes a value shows one
            assert "e.g." in action.help, (action.dest, action.help)
    text = parser.format_help()
    assert "examples:" in text and f"prodlens {command} prodlens-spans/" in text


def test_slice_help_states_the_test_and_the_failure_rule() -> None:
    text = _subparser("slice").format_help()
    assert "one-sided Fisher exact test" in text and "own design effect" in text
    assert "Bonferroni" in text and "ordered by adjusted p-value" in text
    assert "aliases" in text
    assert "root span is ERROR or answered 5xx" in " ".join(text.split())


def _any_span_export(tmp_path: Path) -> Path:
    """Traces with a root and an ERROR child in one service; half in region a, half in b;
    plus three ERROR spans whose roots were never exported."""
    spans = []
    number = 0
    for trace in range(40):
        number += 2
        region = "a" if trace % 2 else "b"
        spans.append(span(trace, number, {"region": region}))
        spans.append(span(trace, number + 1, {}, kind=3, parent=number, error=True))
    for trace in range(100, 103):
        number += 1
        spans.append(span(trace, number, {}, kind=3, parent=99_999, error=True))
    return write(tmp_path / "spans.jsonl", [line("svc", spans)])


def test_the_no_root_warning_counts_only_groups_that_were_not_filtered_out(
        tmp_path: Path) -> None:
    _any_span_export(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "prodlens", "slice", str(tmp_path), "--failure", "any-span",
         "--where", "region=a"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "prodlens: 3 groups held ERROR spans but no root span" in result.stderr
    assert "20 units" in result.stdout
    # under the default rule the handled child errors fail nothing, and nothing is grouped
    default = subprocess.run(
        [sys.executable, "-m", "prodlens", "slice", str(tmp_path), "--where", "region=a"],
        capture_output=True, text=True, timeout=120)
    assert "no root span" not in default.stderr
    assert default.stdout.startswith("no failures in 20 units")


@pytest.fixture
def collector_enabled() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


@pytest.mark.usefixtures("collector_enabled")
def test_the_garbage_collector_is_left_as_found(tmp_path: Path) -> None:
    path = _any_span_export(tmp_path)
    slice_failures([path])
    assert gc.isenabled()
    with pytest.raises(InputError):
        slice_failures([path, tmp_path / "missing.jsonl"], SliceOptions())
    assert gc.isenabled()  # restored though reading failed
    gc.disable()
    slice_failures([path])
    assert not gc.isenabled()  # a host that turned it off keeps it off
