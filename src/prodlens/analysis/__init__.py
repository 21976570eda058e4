"""Subgroup failure analysis over exported spans: which subgroup fails, and who was affected.

Pure functions over OTLP/JSON files (the embedded engine) or the Collector's ClickHouse table;
nothing here touches the OpenTelemetry SDK's global state.
Needs ``pip install 'prodlens[analyze]'``.

Example::

    from prodlens.analysis import SliceOptions, affected_customers, slice_failures

    report = slice_failures(["spans/"], SliceOptions(min_units=50))
    print(report.verdict())
    for finding in report.findings:
        print(finding.label(), finding.rate, finding.p_value)
    for customer in affected_customers(["spans/"]).customers:
        print(customer.customer, customer.failures)
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable

from prodlens.analysis._clickhouse import (
    ClickHouseAggregates,
    ClickHouseError,
    QueryFunction,
    chdb_query,
    http_query,
)
from prodlens.analysis._embedded import EmbeddedAggregates
from prodlens.analysis._model import (
    OUTCOME_ATTRIBUTES,
    AffectedCustomer,
    AffectedReport,
    Filters,
    Finding,
    InputSummary,
    Report,
    SliceOptions,
)
from prodlens.analysis._reader import InputError, ReadProgress, read_requests
from prodlens.analysis._slicing import build_report

__all__ = [
    "OUTCOME_ATTRIBUTES",
    "AffectedCustomer",
    "AffectedReport",
    "ClickHouseError",
    "Filters",
    "Finding",
    "InputError",
    "InputSummary",
    "QueryFunction",
    "Report",
    "SliceOptions",
    "affected_clickhouse",
    "affected_customers",
    "chdb_query",
    "http_query",
    "slice_clickhouse",
    "slice_failures",
]

Paths = str | os.PathLike[str] | Iterable[str | os.PathLike[str]]


def _as_list(paths: Paths) -> list[str | os.PathLike[str]]:
    if isinstance(paths, (str, os.PathLike)):
        return [paths]
    return list(paths)


def _scan(paths: Paths, options: SliceOptions, *, track_customers: bool,
          show_progress: bool) -> tuple[EmbeddedAggregates, InputSummary]:
    progress = ReadProgress()
    aggregates = EmbeddedAggregates(options, track_customers=track_customers)
    # The aggregates hold no reference cycles; the cyclic collector would only rescan them
    # over and over as parsed requests churn through (it doubled the run time).
    collecting = gc.isenabled()
    gc.disable()
    try:
        for where, request in read_requests(_as_list(paths), progress,
                                            show_progress=show_progress):
            try:
                aggregates.consume(request, progress)
            except (KeyError, TypeError, AttributeError, ValueError) as error:
                progress.bad_request(where, error)
        aggregates.finish()
    finally:
        if collecting:
            gc.enable()
    notes = list(progress.notes)  # files with no readable span, with a hint
    if aggregates.orphan_groups:
        notes.append(f"{aggregates.orphan_groups:,} (trace, service) groups held ERROR spans "
                     "but no root span; they are not counted")
    summary = InputSummary(
        spans=progress.spans, lines=progress.lines, malformed=progress.malformed,
        malformed_examples=tuple(progress.examples), notes=tuple(notes),
    )
    return aggregates, summary


def slice_failures(paths: Paths, options: SliceOptions | None = None, *,
                   show_progress: bool = False) -> Report:
    """Rank the subgroups where failures concentrate, reading OTLP/JSON files.

    Args:
        paths: Files, directories (walked) or ``-`` for stdin; ``.gz`` is read transparently.
        options: Units, filters and thresholds; defaults to :class:`SliceOptions()`.
        show_progress: Draw a progress bar on stderr when it is a terminal.

    Raises:
        InputError: a path does not exist or cannot be opened.
        ImportError: the ``analyze`` extra is missing.

    Example::

        >>> report = slice_failures([])
        >>> report.verdict()
        'no units to analyse: the input held no matching spans'
    """
    options = options or SliceOptions()
    aggregates, summary = _scan(paths, options, track_customers=False,
                                show_progress=show_progress)
    return build_report(aggregates, options, summary)


def affected_customers(paths: Paths, options: SliceOptions | None = None, *,
                       show_progress: bool = False) -> AffectedReport:
    """List the customers who saw at least one failed unit, reading OTLP/JSON files.

    Only ``options.unit``, ``options.filters`` and ``options.customer_attributes`` matter here.

    Example::

        >>> affected_customers([]).customers
        ()
    """
    options = options or SliceOptions()
    aggregates, summary = _scan(paths, options, track_customers=True,
                                show_progress=show_progress)
    return AffectedReport(tuple(aggregates.affected()), aggregates.pseudonymised, summary)


def _clickhouse(query: QueryFunction | str, options: SliceOptions,
                table: str) -> ClickHouseAggregates:
    run = http_query(query) if isinstance(query, str) else query
    return ClickHouseAggregates(run, options, table)


def slice_clickhouse(query: QueryFunction | str, options: SliceOptions | None = None, *,
                     table: str = "otel_traces") -> Report:
    """:func:`slice_failures` as SQL inside ClickHouse, over the Collector's ``otel_traces``.

    Args:
        query: A ClickHouse HTTP URL (``http://host:8123/?database=otel``) or a
            :data:`QueryFunction` such as :func:`chdb_query`.
        options: As for :func:`slice_failures`.
        table: ``[database.]table`` written by the Collector's ClickHouse exporter.

    Raises:
        ClickHouseError: the server refused a query or could not be reached.
    """
    options = options or SliceOptions()
    return build_report(_clickhouse(query, options, table), options, InputSummary())


def affected_clickhouse(query: QueryFunction | str, options: SliceOptions | None = None, *,
                        table: str = "otel_traces") -> AffectedReport:
    """:func:`affected_customers` as SQL inside ClickHouse."""
    options = options or SliceOptions()
    aggregates = _clickhouse(query, options, table)
    aggregates.totals()  # learns whether customers are pseudonymised
    return AffectedReport(tuple(aggregates.affected()), aggregates.pseudonymised, InputSummary())
