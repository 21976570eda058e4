"""The ``prodlens slice`` and ``prodlens affected`` sub-commands.

Importing this module needs only the core install; the ``analyze`` extra (msgspec, orjson) is
imported when a command reads files, and a clear message says what to install if it is missing.

Example::

    prodlens slice spans/ --where deployment.environment.name=production --since 2h
    prodlens affected spans/ --where prodlens.cohort.region=eu-west > customers.csv
    prodlens slice --clickhouse http://clickhouse:8123/?database=otel --format json
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import datetime, timezone
from typing import Any

from prodlens._argtypes import fraction, positive_count
from prodlens.analysis._model import (
    CUSTOMER_ATTRIBUTES,
    FAILURE_RULES,
    OUTCOME_ATTRIBUTES,
    UNITS,
    Filters,
    SliceOptions,
)
from prodlens.analysis._reader import NO_SPAN_NOTE

__all__ = ["add_commands", "parse_time", "parse_where"]

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_EXTRA_HINT = "pip install 'prodlens[analyze]'"


def parse_time(text: str, now: float | None = None) -> int:
    """``--since``/``--until``: ISO 8601 (naive means UTC) or a duration ago (``90m``, ``2h``).

    Returns Unix nanoseconds.

    Example::

        >>> parse_time("2026-01-01T00:00:00Z")
        1767225600000000000
        >>> parse_time("1h", now=7200.0)
        3600000000000
    """
    match = _DURATION_RE.match(text.strip())
    if match:
        seconds = float(match.group(1)) * _SECONDS[match.group(2)]
        current = time.time() if now is None else now
        return int((current - seconds) * 1_000_000_000)
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected ISO 8601 (2026-01-31T14:00:00Z) or a duration ago (90m, 2h, 1d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def parse_where(text: str) -> tuple[str, str, bool]:
    """``--where attr=value`` or ``attr!=value`` → ``(attr, value, equal)``."""
    if "!=" in text:
        key, _, value = text.partition("!=")
        equal = False
    else:
        key, sep, value = text.partition("=")
        equal = True
        if not sep:
            raise argparse.ArgumentTypeError(f"{text!r}: expected ATTRIBUTE=VALUE or "
                                             "ATTRIBUTE!=VALUE")
    if not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: the attribute name is empty")
    return key.strip(), value, equal


def _add_input_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("input")
    source.add_argument("files", nargs="*", metavar="FILE",
                        help="OTLP/JSON files (one ExportTraceServiceRequest a line, .gz too), "
                             "directories, or - for stdin; e.g. prodlens-spans/ or "
                             "spans.jsonl.gz")
    source.add_argument("--clickhouse", metavar="URL",
                        help="run the analysis as SQL in ClickHouse instead, over the "
                             "Collector's traces table, e.g. "
                             "--clickhouse http://user:pw@host:8123/?database=otel")
    source.add_argument("--table", default="otel_traces",
                        help="[database.]table written by the Collector's ClickHouse exporter, "
                             "e.g. --table otel.otel_traces (default: otel_traces)")
    source.add_argument("--unit", choices=UNITS, default="root",
                        help="what is counted: root: one unit per local root span, the "
                             "request's entry in each service (default); span: every span; "
                             "trace: one per trace; e.g. --unit trace")
    source.add_argument("--failure", choices=FAILURE_RULES, default="root",
                        help="when a unit failed: root: its root span is ERROR or answered "
                             "5xx, what its caller saw; errors handled below it (a 404 from a "
                             "dependency, a retried database error) do not count (default); "
                             "any-span: any span of its (trace, service) is ERROR, e.g. "
                             "--failure any-span")
    source.add_argument("--where", action="append", type=parse_where, default=[],
                        metavar="ATTR=VALUE", help="keep units with this attribute value "
                        "(ATTR!=VALUE to drop them); repeatable, all must hold; e.g. "
                        "--where deployment.environment.name=production "
                        "--where service.name!=healthcheck")
    source.add_argument("--since", type=parse_time, metavar="TIME",
                        help="keep units that started at or after TIME, ISO 8601 or a "
                             "duration ago; e.g. --since 2h, --since 2026-01-31T14:00:00Z")
    source.add_argument("--until", type=parse_time, metavar="TIME",
                        help="keep units that started before TIME (as --since), e.g. "
                             "--until 30m")
    source.add_argument("--customer-attribute", action="append", metavar="ATTR",
                        help="attribute holding the customer, repeatable, first present wins "
                             f"(default: {', '.join(CUSTOMER_ATTRIBUTES)}); e.g. "
                             "--customer-attribute tenant.id")
    source.add_argument("--max-open-groups", type=positive_count, default=50_000, metavar="N",
                        help="with --failure any-span: open (trace, service) groups kept "
                             "while streaming files; bounds memory (default: 50000), e.g. "
                             "--max-open-groups 200000")
    source.add_argument("--no-progress", action="store_true",
                        help="no progress bar (it only shows on a terminal anyway)")


def add_commands(subparsers: Any) -> None:
    """Add ``slice`` and ``affected`` to the ``prodlens`` command's sub-parsers."""
    slice_parser = subparsers.add_parser(
        "slice", help="rank the subgroups where failures concentrate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Rank the subgroups (attribute values, absence of an attribute, and "
        "pairs) where failures concentrate.\n\n"
        "Test: one-sided Fisher exact test per subgroup, on its counts divided by its own "
        "design effect\n(its failed units per failed trace: one failed request fails a unit "
        "in every service on its path),\nBonferroni-corrected over the distinct subgroups "
        "tested. Subgroups with the same units are one\nfinding listing every description "
        "(aliases). A pair is an interaction only when a test shows it\nfailing more than "
        "each of its parts. Findings are ordered by adjusted p-value, then rate.\n"
        "Outcome attributes (status codes, error.type, exception.*) are never candidates.",
        epilog="examples:\n"
        "  prodlens slice prodlens-spans/\n"
        "  prodlens slice prodlens-spans/ --where deployment.environment.name=production "
        "--since 2h\n"
        "  prodlens slice spans.jsonl.gz --format json > report.json\n"
        "  prodlens slice --clickhouse http://clickhouse:8123/?database=otel --format csv\n"
        "  prodlens slice prodlens-spans/ --failure any-span --unit trace",
    )
    _add_input_arguments(slice_parser)
    stats = slice_parser.add_argument_group("findings")
    stats.add_argument("--min-units", type=positive_count, default=20, metavar="N",
                       help="units a subgroup needs to be tested (default: 20), e.g. "
                            "--min-units 100")
    stats.add_argument("--min-failures", type=positive_count, default=3, metavar="N",
                       help="failures a finding needs (default: 3), e.g. --min-failures 10")
    stats.add_argument("--alpha", type=fraction, default=0.01,
                       help="family-wise significance level (default: 0.01), e.g. "
                            "--alpha 0.001")
    stats.add_argument("--max-values", type=positive_count, default=50, metavar="N",
                       help="attributes with more distinct values are skipped as ids "
                            "(default: 50), e.g. --max-values 200")
    stats.add_argument("--top-pairs", type=int, default=8, metavar="N",
                       help="pair budget: pairs of distinct single findings are tested, "
                            "strongest first, up to N*(N-1)/2 informative pairs (default: 8, "
                            "so 28; 0: no pairs), e.g. --top-pairs 12")
    stats.add_argument("--exclude", action="append", default=[], metavar="ATTR",
                       help="another outcome attribute to ignore (NAME or PREFIX*), "
                            "repeatable, e.g. --exclude app.result --exclude 'retry.*'")
    stats.add_argument("--no-default-excludes", action="store_true",
                       help="do not ignore the default outcome attributes: "
                            + ", ".join(OUTCOME_ATTRIBUTES))
    stats.add_argument("--format", choices=("table", "json", "csv"), default="table",
                       help="table: fitted to the terminal (default); json: one object with "
                            "every finding; csv: one finding a row; e.g. --format json")
    stats.add_argument("--limit", type=positive_count, default=20, metavar="N",
                       help="findings shown in the table (default: 20), e.g. --limit 50")
    slice_parser.set_defaults(handler=run_slice)

    affected_parser = subparsers.add_parser(
        "affected", help="list the customers who saw at least one failed request",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="List the customers with at least one failed request: customer, "
        "failures, requests,\nfirst and last failure (ISO 8601 UTC), the operations that "
        "failed and their cohort values.\nA request is a trace: 'failures' and 'requests' "
        "count a customer's traces, so one failure\nthat crossed three services counts "
        "once. A request failed when one of its units failed (--failure).",
        epilog="examples:\n"
        "  prodlens affected prodlens-spans/ > customers.csv\n"
        "  prodlens affected prodlens-spans/ --where prodlens.cohort.region=eu-west "
        "--since 2h\n"
        "  prodlens affected prodlens-spans/ --format table\n"
        "  prodlens affected --clickhouse http://clickhouse:8123/?database=otel --format json",
    )
    _add_input_arguments(affected_parser)
    affected_parser.add_argument("--format", choices=("csv", "json", "table"), default="csv",
                                 help="csv: one customer a row (default); json: one object; "
                                      "table: fitted to the terminal; e.g. --format table")
    affected_parser.set_defaults(handler=run_affected)


def _options(args: argparse.Namespace) -> SliceOptions:
    exclude = () if getattr(args, "no_default_excludes", False) else OUTCOME_ATTRIBUTES
    exclude = (*exclude, *getattr(args, "exclude", []))
    return SliceOptions(
        unit=args.unit,
        failure=args.failure,
        filters=Filters(where=tuple(args.where), since_ns=args.since, until_ns=args.until),
        min_units=getattr(args, "min_units", 20),
        min_failures=getattr(args, "min_failures", 3),
        alpha=getattr(args, "alpha", 0.01),
        max_values=getattr(args, "max_values", 50),
        top_pairs=max(0, getattr(args, "top_pairs", 8)),
        exclude=exclude,
        customer_attributes=tuple(args.customer_attribute or CUSTOMER_ATTRIBUTES),
        max_open_groups=args.max_open_groups,
    )


def _check_input(args: argparse.Namespace) -> str | None:
    if args.clickhouse and args.files:
        return "give FILES or --clickhouse, not both"
    if not args.clickhouse and not args.files:
        return "no input: give FILES (or - for stdin) or --clickhouse URL"
    return None


def _report_input(malformed: int, examples: tuple[str, ...], notes: tuple[str, ...]) -> None:
    if malformed:
        print(f"prodlens: skipped {malformed:,} malformed line(s):", file=sys.stderr)
        for example in examples:
            print(f"  {example}", file=sys.stderr)
        if malformed > len(examples):
            print(f"  … and {malformed - len(examples):,} more", file=sys.stderr)
    for note in notes:
        print(f"prodlens: {note}", file=sys.stderr)


#: Exit status when the input held no readable span at all (the report is still printed).
NO_SPANS_STATUS = 1


def _no_spans(args: argparse.Namespace, spans: int, notes: tuple[str, ...]) -> int:
    """:data:`NO_SPANS_STATUS` when files were given and one with lines held no readable span
    (its note, printed already, says which and why) or the input held no span at all."""
    if args.clickhouse:
        return 0
    if any(NO_SPAN_NOTE in note for note in notes):
        return NO_SPANS_STATUS
    if spans:
        return 0
    print("prodlens: no span was read: the input is empty. prodlens reads OTLP/JSON lines "
          "as OTEL_TRACES_EXPORTER=prodlens_file writes them (PRODLENS_FILE_PATH)",
          file=sys.stderr)
    return NO_SPANS_STATUS


def _run(args: argparse.Namespace, affected: bool) -> int:
    problem = _check_input(args)
    if problem:
        print(f"prodlens {args.command}: {problem}", file=sys.stderr)
        return 2
    try:
        from prodlens import analysis
        from prodlens.analysis import _output
    except ImportError as error:  # pragma: no cover - the analysis package itself is core
        print(f"prodlens: {error}", file=sys.stderr)
        return 2
    options = _options(args)
    try:
        if affected:
            result = (analysis.affected_clickhouse(args.clickhouse, options, table=args.table)
                      if args.clickhouse else
                      analysis.affected_customers(args.files, options,
                                                  show_progress=not args.no_progress))
        else:
            report = (analysis.slice_clickhouse(args.clickhouse, options, table=args.table)
                      if args.clickhouse else
                      analysis.slice_failures(args.files, options,
                                              show_progress=not args.no_progress))
    except ImportError as error:
        print(f"prodlens: {error} ({_EXTRA_HINT})" if _EXTRA_HINT not in str(error)
              else f"prodlens: {error}", file=sys.stderr)
        return 2
    except (analysis.InputError, analysis.ClickHouseError, ValueError) as error:
        print(f"prodlens {args.command}: {error}", file=sys.stderr)
        return 2
    if affected:
        _report_input(result.input.malformed, result.input.malformed_examples, result.input.notes)
        if result.pseudonymised:
            print("prodlens: customers are pseudonyms (enduser.pseudo.id); map them back by "
                  "computing prodlens.pseudonym(customer_id) over your customer list with the "
                  "same PRODLENS_PSEUDONYM_KEY", file=sys.stderr)
        render = {"csv": _output.render_affected_csv, "json": _output.render_affected_json,
                  "table": _output.render_affected_table}[args.format]
        sys.stdout.write(render(result).rstrip("\n") + "\n")
        return _no_spans(args, result.input.spans, result.input.notes)
    _report_input(report.input.malformed, report.input.malformed_examples, report.input.notes)
    if args.format == "json":
        text = _output.render_json(report)
    elif args.format == "csv":
        text = _output.render_csv(report)
    else:
        text = _output.render_table(report, args.limit)
    sys.stdout.write(text.rstrip("\n") + "\n")
    return _no_spans(args, report.input.spans, report.input.notes)


def run_slice(args: argparse.Namespace) -> int:
    """Handler of ``prodlens slice``; returns the exit status (2 on bad input, 1 when the
    input held no readable span)."""
    return _run(args, affected=False)


def run_affected(args: argparse.Namespace) -> int:
    """Handler of ``prodlens affected``; returns the exit status (2 on bad input, 1 when the
    input held no readable span)."""
    return _run(args, affected=True)
