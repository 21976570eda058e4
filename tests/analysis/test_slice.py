"""`slice` on synthetic exports: the planted subgroup on top, nothing on clean data."""

from __future__ import annotations

from pathlib import Path

import pytest

from prodlens.analysis import Filters, SliceOptions, slice_failures
from prodlens.analysis.synthetic import SyntheticTraces, generate

PLANTED = {"prodlens.cohort.region": "eu-west", "service.version": "2.3.0"}


def test_planted_interaction_is_the_top_finding(planted_dir: Path) -> None:
    report = slice_failures([planted_dir])
    top = report.findings[0]
    assert dict(top.subgroup) == PLANTED
    assert top.interaction
    assert top.rate > 0.12 and top.rest_rate < 0.03
    assert top.p_value < 1e-10
    assert report.verdict().startswith(
        "failures concentrate in prodlens.cohort.region=eu-west ∧ service.version=2.3.0: ")
    # both parts show up as single subgroups, after the interaction that explains them
    singles = [dict(f.subgroup) for f in report.findings if len(f.subgroup) == 1]
    assert {"prodlens.cohort.region": "eu-west"} in singles
    assert {"service.version": "2.3.0"} in singles


def test_findings_are_ordered_and_above_thresholds(planted_dir: Path) -> None:
    options = SliceOptions(min_units=40, min_failures=5, alpha=0.001)
    report = slice_failures([planted_dir], options)
    assert report.findings
    for finding in report.findings:
        assert finding.units >= 40 and finding.failures >= 5 and finding.p_value <= 0.001
        assert finding.rate > finding.rest_rate
        assert finding.lift == pytest.approx(finding.rate / finding.rest_rate)


def test_outcome_attributes_are_never_candidates(planted_dir: Path) -> None:
    report = slice_failures([planted_dir])
    keys = {key for f in report.findings for key in f.subgroup}
    assert not keys & {"http.response.status_code", "error.type", "otel.status_code"}
    # without the default list, "requests answered 502 fail 100%" would be the top finding
    raw = slice_failures([planted_dir], SliceOptions(exclude=()))
    assert dict(raw.findings[0].subgroup) in ({"error.type": "502"},
                                               {"http.response.status_code": "502"},
                                               {"error.type": "500"},
                                               {"http.response.status_code": "500"})


def test_id_like_attributes_are_skipped(planted_dir: Path) -> None:
    report = slice_failures([planted_dir])
    assert "url.path" in report.skipped_attributes  # thousands of distinct values
    keys = {key for f in report.findings for key in f.subgroup}
    assert not keys & {"enduser.id", "url.path", "service.instance.id", "user_agent.original"}


@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15, 16])
def test_no_finding_without_a_planted_failure(seed: int, tmp_path: Path) -> None:
    clean = generate(tmp_path, traces=2500, seed=seed, planted=False, base_rate=0.01)
    report = slice_failures(clean.paths)
    assert report.failures > 0
    assert report.findings == (), report.findings
    assert report.verdict().startswith("no subgroup stands out")


def test_where_filter_restricts_units(planted_dir: Path) -> None:
    everything = slice_failures([planted_dir])
    api = slice_failures([planted_dir], SliceOptions(
        filters=Filters(where=(("service.name", "api", True),))))
    not_api = slice_failures([planted_dir], SliceOptions(
        filters=Filters(where=(("service.name", "api", False),))))
    assert api.units + not_api.units == everything.units
    assert api.failures + not_api.failures == everything.failures
    assert dict(api.findings[0].subgroup) == PLANTED


def test_time_window(planted: SyntheticTraces, planted_dir: Path) -> None:
    start = 1_790_000_000_000_000_000
    middle = start + planted.traces // 2 * 50_000_000
    first = slice_failures([planted_dir], SliceOptions(filters=Filters(until_ns=middle)))
    second = slice_failures([planted_dir], SliceOptions(filters=Filters(since_ns=middle)))
    everything = slice_failures([planted_dir])
    assert first.units and second.units
    assert first.units + second.units == everything.units
    assert slice_failures([planted_dir], SliceOptions(
        filters=Filters(since_ns=start * 2))).units == 0


def test_units_span_and_trace(planted: SyntheticTraces, planted_dir: Path) -> None:
    traces = slice_failures([planted_dir], SliceOptions(unit="trace"))
    assert traces.units == planted.traces
    assert traces.failures == planted.failed_traces
    spans = slice_failures([planted_dir], SliceOptions(unit="span"))
    assert spans.units == planted.spans
    roots = slice_failures([planted_dir])
    assert traces.units < roots.units < spans.units


def test_bounded_window_gives_the_same_answer(planted_dir: Path) -> None:
    """Per-service files: a tiny window of open groups still sees each group whole."""
    wide = slice_failures([planted_dir])
    narrow = slice_failures([planted_dir], SliceOptions(max_open_groups=50))
    assert (narrow.units, narrow.failures) == (wide.units, wide.failures)
    assert narrow.findings == wide.findings


def test_projecting_out_id_like_attributes_midstream_keeps_the_answer(
        planted_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny table budget forces url.path (thousands of values) out while streaming."""
    from prodlens.analysis import _embedded

    wide = slice_failures([planted_dir])
    monkeypatch.setattr(_embedded, "_TABLE_BUDGET", 100)
    narrow = slice_failures([planted_dir])
    assert narrow.findings == wide.findings
    assert narrow.skipped_attributes == wide.skipped_attributes == ("url.path",)
