"""Rendering reports: a terminal table (rich, fitted to the terminal's width), JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from prodlens.analysis._model import ABSENT, AffectedReport, Finding, Report, describe

TEST_NAME: Final = ("one-sided Fisher exact test on counts divided by each subgroup's own "
                    "design effect (failed units per failed trace), Bonferroni-corrected")
FAILURE_RULES_TEXT: Final = {
    "root": "a unit failed when its root span is ERROR or answered 5xx",
    "any-span": "a unit failed when any of its spans is ERROR",
}
#: Below this a p-value is shown as ``< 1e-300`` (it may have underflowed to 0).
P_FLOOR: Final = 1e-300
#: Separator of a pair's parts in CSV cells (the table shows ``∧``).
CSV_SEPARATOR: Final = " & "
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def iso_utc(ns: int) -> str:
    """Unix nanoseconds as ISO 8601 UTC with milliseconds, e.g. ``2026-09-21T12:26:40.123Z``.

    Example::

        >>> iso_utc(1_500_000_000_123_456_789)
        '2017-07-14T02:40:00.123Z'
    """
    moment = _EPOCH + timedelta(microseconds=ns // 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_p(p_value: float, digits: int = 2) -> str:
    """A p-value as text; below float range (or 1e-300) as ``< 1e-300``.

    Example::

        >>> format_p(0.0), format_p(3.14e-12), format_p(0.5, 3)
        ('< 1e-300', '3.1e-12', '0.5')
    """
    if p_value < P_FLOOR:
        return "< 1e-300"
    return f"{p_value:.{digits - 1}e}" if digits == 2 else f"{p_value:.{digits}g}"


def _lift(value: float) -> float | None:
    return None if math.isinf(value) else round(value, 4)


def _json_subgroup(subgroup: Mapping[str, str]) -> dict[str, str | None]:
    return {key: None if value == ABSENT else value for key, value in subgroup.items()}


def finding_dict(finding: Finding) -> dict[str, Any]:
    """A finding as a JSON-ready dict (``lift`` is null when the rest never failed; a value
    ``null`` means units without the attribute)."""
    return {
        "subgroup": _json_subgroup(finding.subgroup),
        "aliases": [_json_subgroup(alias) for alias in finding.aliases],
        "units": finding.units,
        "failures": finding.failures,
        "rate": finding.rate,
        "rest_rate": finding.rest_rate,
        "lift": _lift(finding.lift),
        "p_value": finding.p_value,
        "customers": finding.customers,
        "interaction": finding.interaction,
        "design_effect": round(finding.design_effect, 4),
    }


def report_dict(report: Report) -> dict[str, Any]:
    """The whole report as one JSON-ready dict."""
    return {
        "verdict": report.verdict(),
        "unit": report.unit,
        "units": report.units,
        "failures": report.failures,
        "rate": report.rate,
        "failure": report.failure,
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
    """Findings as CSV, strongest first; a pair's parts joined by `` & ``, aliases by `` | ``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["subgroup", "units", "failures", "rate", "rest_rate", "lift", "p_value",
                     "customers", "interaction", "aliases"])
    for f in report.findings:
        lift = _lift(f.lift)
        writer.writerow([f.label(CSV_SEPARATOR), f.units, f.failures, f"{f.rate:.6f}",
                         f"{f.rest_rate:.6f}", "" if lift is None else lift,
                         format_p(f.p_value, 3), f.customers,
                         "true" if f.interaction else "false",
                         " | ".join(f.labels(CSV_SEPARATOR)[1:])])
    return out.getvalue()


def _columns(width: int | None) -> int:
    return width if width is not None else shutil.get_terminal_size((120, 24)).columns


def _rich_table(header: Sequence[tuple[str, bool]], rows: Sequence[Sequence[str]],
                width: int, *, fold: Sequence[int] = (0,)) -> str:
    """A table fitted to ``width`` columns by rich: the ``fold`` columns wrap onto more lines
    (attribute names are what you paste into a query: never cut), others may be elided."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, expand=False,
                  padding=(0, 1), collapse_padding=True)
    for index, (name, right) in enumerate(header):
        folded = index in fold
        table.add_column(name, justify="right" if right else "left",
                         overflow="fold" if folded else "ellipsis", no_wrap=not folded,
                         min_width=20 if index == 0 and folded else None)
    for row in rows:
        table.add_row(*row)
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False,
                      highlight=False, markup=False, emoji=False, soft_wrap=False)
    console.print(table)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return "\n".join(line.rstrip() for line in str(out).splitlines())


def _wrap_description(text: str, width: int) -> list[str]:
    """``key=value`` in lines of ``width``: whole when it fits, else broken after ``=`` (the
    value indented), and only then folded."""
    if len(text) <= width:
        return [text]
    key, equals, value = text.partition("=")
    pieces = [key + equals, "  " + value] if equals else [text]
    lines = []
    for piece in pieces:
        while len(piece) > width:
            lines.append(piece[:width])
            piece = "  " + piece[width:]
        lines.append(piece)
    return lines if width > 2 else [text]


def _subgroup_cell(finding: Finding, width: int) -> str:
    """Each description on its own lines: a pair's parts joined by ``∧``, aliases after ``=``,
    an interaction marked; wrapped at ``=`` to ``width``."""
    lines: list[str] = []
    for number, subgroup in enumerate((finding.subgroup, *finding.aliases)):
        parts = [part for part in finding.label(_PART).split(_PART)] if not number else \
            [describe(subgroup)]
        for index, part in enumerate(parts):
            prefix = "" if not (number or index) else "= " if not index else "∧ "
            lines += _wrap_description(prefix + part, width)
    if finding.interaction:
        lines.append("(interaction)")
    return "\n".join(lines)


_PART: Final = "\x00"


def _other_widths(header: Sequence[tuple[str, bool]], rows: Sequence[Sequence[str]]) -> int:
    return sum(max(len(name), *(len(row[index]) for row in rows)) + 2
               for index, (name, _) in enumerate(header) if index)


def render_table(report: Report, limit: int = 20, width: int | None = None) -> str:
    """The verdict, then the findings as a table fitting the terminal (or ``width``), notes."""
    columns = _columns(width)
    lines = [report.verdict(), ""]
    if report.findings:
        header = [("subgroup", False), ("units", True), ("failed", True), ("rate", True),
                  ("rest", True), ("lift", True), ("p (adj.)", True), ("customers", True)]
        rows = []
        for f in report.findings[:limit]:
            lift = "inf" if math.isinf(f.lift) else f"{f.lift:.1f}x"
            rows.append(["", f"{f.units:,}", f"{f.failures:,}", f"{f.rate:.1%}",
                         f"{f.rest_rate:.1%}", lift, format_p(f.p_value), f"{f.customers:,}"])
        room = max(20, columns - _other_widths(header, rows) - 1)
        for row, finding in zip(rows, report.findings, strict=False):
            row[0] = _subgroup_cell(finding, room)
        lines.append(_rich_table(header, rows, columns))
        if len(report.findings) > limit:
            lines.append(f"… {len(report.findings) - limit} more (--limit, --format json)")
        lines.append("")
    lines.append(
        f"{report.units:,} units (unit={report.unit}; {FAILURE_RULES_TEXT[report.failure]}), "
        f"{report.failures:,} failed; {report.tested:,} distinct subgroups tested: {TEST_NAME}. "
        "Ordered by adjusted p-value; '=' lines are aliases (the same units)."
    )
    if report.skipped_attributes:
        lines.append("skipped as id-like (too many values): "
                     + ", ".join(report.skipped_attributes))
    # the verdict stays one line (it is what scripts grep); the notes are folded
    return "\n".join([lines[0], *(_fold(line, columns) for line in lines[1:])])


def _fold(text: str, width: int) -> str:
    """A prose line wrapped at spaces to ``width`` (table lines are already fitted)."""
    import textwrap

    if len(text) <= width or "\n" in text:
        return text
    return "\n".join(textwrap.wrap(text, width, break_long_words=False,
                                   break_on_hyphens=False))


#: CSV columns of ``affected``: ``failures`` and ``requests`` count requests (traces).
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
        # what "failures" and "requests" count: a customer's traces, not per-service units
        "counts": "requests (traces)",
        "input": {"spans": report.input.spans, "malformed": report.input.malformed,
                  "malformed_examples": list(report.input.malformed_examples)},
    }, ensure_ascii=False)


def render_affected_table(report: AffectedReport, width: int | None = None) -> str:
    """A table fitting the terminal (or ``width``), for reading; counts are requests (traces).

    Shorter than the CSV for the eye: times to the second with a space, operations separated
    by ``"; "``, and cohort columns named without the ``prodlens.cohort.`` prefix (said below
    the table), so that cells wrap at spaces.
    """
    from prodlens import attributes

    header, _ = _affected_rows(report)
    if not report.customers:
        return "no customer saw a failed request"
    prefix = attributes.DEFAULT_COHORT_PREFIX
    cohort_keys = header[len(AFFECTED_COLUMNS):]

    def when(ns: int) -> str:
        return iso_utc(ns)[:19].replace("T", " ")

    rows = [
        [c.customer, f"{c.failures:,}", f"{c.requests:,}", when(c.first_failure_ns),
         when(c.last_failure_ns), "; ".join(c.operations),
         *("; ".join(c.cohorts.get(key, ())) for key in cohort_keys)]
        for c in report.customers
    ]
    columns = [("customer", False), ("failed\nrequests", True), ("requests\n(traces)", True),
               ("first failure\n(UTC)", False), ("last failure\n(UTC)", False),
               ("operations", False),
               *((key.removeprefix(prefix), False) for key in cohort_keys)]
    # The customer and the counts stay whole; times, operations and cohorts wrap, each to no
    # less than _MIN_WRAPPED; past that, columns are left out, the least needed first.
    available = _columns(width)
    hidden: list[str] = []
    order = [3, 4, *range(len(columns) - 1, 5, -1), 5]
    while _narrowest(columns, rows) > available and order:
        index = order.pop(0)
        hidden.append(columns[index][0].split("\n")[0])
        columns = columns[:index] + columns[index + 1:]
        rows = [row[:index] + row[index + 1:] for row in rows]
        order = [i - 1 if i > index else i for i in order]
    table = _rich_table(columns, rows, available, fold=range(3, len(columns)))
    if any(key.startswith(prefix) for key in cohort_keys):
        table += "\n" + _fold(f"cohort columns are the attributes {prefix}<name>", available)
    if hidden:
        table += "\n" + _fold(f"left out to fit {available} columns: {', '.join(hidden)} "
                              "(a wider terminal, or --format csv)", available)
    return table


_MIN_WRAPPED: Final = 12


def _narrowest(columns: Sequence[tuple[str, bool]], rows: Sequence[Sequence[str]]) -> int:
    """The narrowest the table can be: whole first three columns, the rest wrapped."""
    total = 0
    for index, (name, _) in enumerate(columns):
        natural = max(max(len(part) for part in name.split("\n")),
                      *(len(row[index]) for row in rows))
        total += (natural if index < 3 else min(natural, _MIN_WRAPPED)) + 2
    return total
