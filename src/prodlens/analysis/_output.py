"""Rendering reports: a terminal table, one JSON object, or CSV."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from prodlens.analysis._model import AffectedReport, Finding, Report

TEST_NAME = "one-sided Fisher exact test, Bonferroni-corrected"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def iso_utc(ns: int) -> str:
    """Unix nanoseconds as ISO 8601 UTC with milliseconds, e.g. ``2026-09-21T12:26:40.123Z``.

    Example::

        >>> iso_utc(1_500_000_000_123_456_789)
        '2017-07-14T02:40:00.123Z'
    """
    moment = _EPOCH + timedelta(microseconds=ns // 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _lift(value: float) -> float | None:
    return None if math.isinf(value) else round(value, 4)


def finding_dict(finding: Finding) -> dict[str, Any]:
    """A finding as a JSON-ready dict (``lift`` is null when the rest never failed)."""
    return {
        "subgroup": dict(finding.subgroup),
        "units": finding.units,
        "failures": finding.failures,
        "rate": finding.rate,
        "rest_rate": finding.rest_rate,
        "lift": _lift(finding.lift),
        "p_value": finding.p_value,
        "customers": finding.customers,
        "interaction": finding.interaction,
    }


def report_dict(report: Report) -> dict[str, Any]:
    """The whole report as one JSON-ready dict."""
    return {
        "verdict": report.verdict(),
        "unit": report.unit,
        "units": report.units,
        "failures": report.failures,
        "rate": report.rate,
        "test": TEST_NAME,
        "tested": report.tested,
        "design_effect": round(report.design_effect, 4),
        "findings": [finding_dict(f) for f in report.findings],
        "skipped_attributes": list(report.skipped_attributes),
        "pseudonymised": report.pseudonymised,
        "input": {
            "spans": report.input.spans,
            "lines": report.input.lines,
            "malformed": report.input.malformed,
            "malformed_examples": list(report.input.malformed_examples),
            "notes": list(report.input.notes),
        },
    }


def render_json(report: Report) -> str:
    """One JSON object."""
    return json.dumps(report_dict(report), ensure_ascii=False)


def render_csv(report: Report) -> str:
    """Findings as CSV, strongest first."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["subgroup", "units", "failures", "rate", "rest_rate", "lift", "p_value",
                     "customers", "interaction"])
    for f in report.findings:
        lift = _lift(f.lift)
        writer.writerow([f.label(), f.units, f.failures, f"{f.rate:.6f}", f"{f.rest_rate:.6f}",
                         "" if lift is None else lift, f"{f.p_value:.3g}", f.customers,
                         "true" if f.interaction else "false"])
    return out.getvalue()


def _wrap(cell: str, width: int) -> list[str]:
    """``cell`` in lines of at most ``width``: broken after `` ∧ `` where it can be, else hard."""
    parts = cell.split(" ∧ ")
    pieces = [part + " ∧" for part in parts[:-1]] + [parts[-1]]
    lines: list[str] = []
    current = ""
    for piece in pieces:
        candidate = f"{current} {piece}" if current else piece
        if len(candidate) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        while len(piece) > width:
            lines.append(piece[:width])
            piece = "  " + piece[width:]
        current = piece
    lines.append(current)
    return lines


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int],
           first_max: int) -> list[str]:
    """An aligned table; a first-column cell wider than ``first_max`` wraps onto more lines
    (attribute names are never cut: they are what you paste into a query)."""
    widths = [len(h) for h in header]
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))
    widths[0] = min(widths[0], max(len(header[0]), first_max))

    def fit(cell: str, index: int) -> str:
        return cell.rjust(widths[index]) if index in right else cell.ljust(widths[index])

    def render(row: Sequence[str]) -> list[str]:
        first, *more = _wrap(row[0], widths[0])
        out = ["  ".join(fit(c, i) for i, c in enumerate([first, *row[1:]])).rstrip()]
        out.extend(line if line.startswith(" ") else "  " + line for line in more)
        return out

    lines = ["  ".join(fit(h, i) for i, h in enumerate(header)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.extend(render(row))
    return lines


def render_table(report: Report, limit: int = 20) -> str:
    """The verdict, then the findings as an aligned table fitting the terminal, then notes."""
    lines = [report.verdict(), ""]
    if report.findings:
        header = ["subgroup", "units", "failures", "rate", "rest", "lift", "p (adj.)",
                  "customers", "note"]
        rows = []
        for f in report.findings[:limit]:
            lift = "inf" if math.isinf(f.lift) else f"{f.lift:.1f}x"
            rows.append([f.label(), f"{f.units:,}", f"{f.failures:,}", f"{f.rate:.1%}",
                         f"{f.rest_rate:.1%}", lift, f"{f.p_value:.1e}", f"{f.customers:,}",
                         "interaction" if f.interaction else ""])
        columns = shutil.get_terminal_size((120, 24)).columns
        others = sum(max(len(h), max(len(r[i]) for r in rows)) + 2
                     for i, h in enumerate(header) if i)
        # Wrap pairs at their ∧ rather than cut them; one part always fits on a line.
        longest_part = max(len(part) + 2 for r in rows for part in r[0].split(" ∧ "))
        first_max = max(24, min(longest_part, 72), columns - others)
        lines += _table(header, rows, set(range(1, len(header) - 1)), first_max)
        if len(report.findings) > limit:
            lines.append(f"… {len(report.findings) - limit} more (--limit, --format json)")
        lines.append("")
    lines.append(
        f"{report.units:,} units (unit={report.unit}), {report.failures:,} failed; "
        f"{report.tested:,} subgroups tested ({TEST_NAME}"
        + (f";\ncounts divided by the design effect {report.design_effect:.2f}, failed units "
           "per failed trace)" if report.design_effect > 1 else ")")
    )
    if report.skipped_attributes:
        lines.append("skipped as id-like (too many values): "
                     + ", ".join(report.skipped_attributes))
    return "\n".join(lines)


AFFECTED_COLUMNS = ("customer", "failures", "requests", "first_failure", "last_failure",
                    "operations")


def _affected_rows(report: AffectedReport) -> tuple[list[str], list[list[str]]]:
    cohort_keys = sorted({key for c in report.customers for key in c.cohorts})
    header = [*AFFECTED_COLUMNS, *cohort_keys]
    rows = [
        [c.customer, str(c.failures), str(c.requests), iso_utc(c.first_failure_ns),
         iso_utc(c.last_failure_ns), ";".join(c.operations),
         *(";".join(c.cohorts.get(key, ())) for key in cohort_keys)]
        for c in report.customers
    ]
    return header, rows


def render_affected_csv(report: AffectedReport) -> str:
    """``customer,failures,requests,first_failure,last_failure,operations,<cohorts...>``."""
    header, rows = _affected_rows(report)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def render_affected_json(report: AffectedReport) -> str:
    """One JSON object: ``{"customers": [...], "pseudonymised": bool, ...}``."""
    return json.dumps({
        "customers": [
            {"customer": c.customer, "failures": c.failures, "requests": c.requests,
             "first_failure": iso_utc(c.first_failure_ns),
             "last_failure": iso_utc(c.last_failure_ns),
             "operations": list(c.operations),
             "cohorts": {key: list(values) for key, values in c.cohorts.items()}}
            for c in report.customers
        ],
        "pseudonymised": report.pseudonymised,
        "input": {"spans": report.input.spans, "malformed": report.input.malformed,
                  "malformed_examples": list(report.input.malformed_examples)},
    }, ensure_ascii=False)


def render_affected_table(report: AffectedReport) -> str:
    """An aligned table, for reading on a terminal."""
    header, rows = _affected_rows(report)
    if not rows:
        return "no customer saw a failure"
    return "\n".join(_table(header, rows, {1, 2}, 40))
