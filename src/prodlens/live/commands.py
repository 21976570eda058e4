"""The ``prodlens watch`` and ``prodlens incidents`` sub-commands.

Example::

    prodlens watch spans/ --notify https://chat.example/hook \\
        --notify-customers https://support.example/prodlens
    prodlens watch --clickhouse http://clickhouse:8123/?database=otel
    prodlens incidents --ledger prodlens-ledger.sqlite3

Importing this module needs only the core install; the engine is imported when ``watch`` runs.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
from typing import Any, Final

from prodlens._argtypes import fraction, positive_count, positive_number

__all__ = ["add_commands", "parse_duration"]

_DURATION_RE: Final = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)?$")
_SECONDS: Final = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
_EXTRA_HINT: Final = "pip install 'prodlens[analyze]'"


def parse_duration(text: str) -> float:
    """``5m``, ``10s``, ``250ms``, ``1h`` or plain seconds -> seconds.

    Example::

        >>> parse_duration("5m"), parse_duration("250ms"), parse_duration("12")
        (300.0, 0.25, 12.0)
    """
    match = _DURATION_RE.match(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a positive duration such as 250ms, 10s, 5m or 1h")
    return float(match.group(1)) * _SECONDS[match.group(2)]


def _add_ledger(parser: argparse.ArgumentParser) -> None:
    from prodlens.incidents import DEFAULT_LEDGER

    parser.add_argument("--ledger", default=DEFAULT_LEDGER, metavar="FILE",
                        help="SQLite ledger of incidents and deliveries, shared by restarts "
                             f"and replicas (default: ./{DEFAULT_LEDGER})")


def add_commands(subparsers: Any) -> None:
    """Add ``watch`` and ``incidents`` to the ``prodlens`` command's sub-parsers."""
    from prodlens.analysis.commands import parse_where

    parser = subparsers.add_parser(
        "watch", help="follow spans, open incidents for failing subgroups, notify customers",
        description="Follow OTLP/JSON span files as they are written (like tail -F) or poll "
        "ClickHouse, evaluate the last --window of span time every --every with the same "
        "engine as 'prodlens slice', open an incident when a subgroup keeps failing, and "
        "message operators and the affected customers. See docs/live.md.")
    source = parser.add_argument_group("input")
    source.add_argument("files", nargs="*", metavar="PATH",
                        help="files or directories of OTLP/JSON lines to follow")
    source.add_argument("--clickhouse", metavar="URL",
                        help="poll the Collector's traces table over ClickHouse's HTTP "
                             "interface instead, e.g. http://host:8123/?database=otel")
    source.add_argument("--table", default="otel_traces",
                        help="[database.]table for --clickhouse (default: otel_traces)")
    source.add_argument("--from-start", action="store_true",
                        help="read files that exist at start from their beginning (default: "
                             "follow them from their end, like tail -F)")
    source.add_argument("--where", action="append", type=parse_where, default=[],
                        metavar="ATTR=VALUE", help="keep units with this attribute value "
                        "(ATTR!=VALUE to drop them); repeatable")
    source.add_argument("--slower-than", type=parse_duration, metavar="DURATION",
                        help="also count a unit slower than this as failed (e.g. 2s)")
    rules = parser.add_argument_group("evaluation")
    rules.add_argument("--window", type=parse_duration, default=300.0, metavar="DURATION",
                       help="span time evaluated at once (default: 5m)")
    rules.add_argument("--every", type=parse_duration, default=10.0, metavar="DURATION",
                       help="span time between evaluations (default: 10s)")
    rules.add_argument("--recent", type=parse_duration, default=30.0, metavar="DURATION",
                       help="also rank the last DURATION of the window, where an onset shows "
                            "first (default: 30s; as long as --window turns it off)")
    rules.add_argument("--resolve-after", type=parse_duration, default=300.0,
                       metavar="DURATION", help="resolve an incident once its subgroup has "
                       "been healthy this long (default: 5m)")
    rules.add_argument("--confirm", type=positive_count, default=3, metavar="N",
                       help="consecutive evaluations a subgroup must fail before an incident "
                            "opens (default: 3)")
    rules.add_argument("--alpha", type=fraction, default=1e-5,
                       help="significance per evaluation, Bonferroni-adjusted (default: 1e-5)")
    rules.add_argument("--min-lift", type=positive_number, default=2.0, metavar="X",
                       help="failure rate at least X times the rest's (default: 2)")
    rules.add_argument("--min-delta", type=fraction, default=0.01, metavar="P",
                       help="failure rate at least P above the rest's (default: 0.01)")
    rules.add_argument("--min-units", type=positive_count, default=20, metavar="N",
                       help="units a subgroup needs in the window to be tested (default: 20)")
    rules.add_argument("--min-failures", type=positive_count, default=3, metavar="N",
                       help="failures a subgroup needs in the window (default: 3)")
    notify = parser.add_argument_group("notification")
    notify.add_argument("--notify", action="append", default=[], metavar="URL",
                        help="operator webhook (JSON POST on open, growth and resolve); "
                             "repeatable; also PRODLENS_NOTIFY_URL (comma list)")
    notify.add_argument("--notify-command", action="append", default=[], metavar="CMD",
                        help="command run with the operator JSON on stdin; repeatable")
    notify.add_argument("--notify-customers", metavar="URL",
                        help="customer-messaging webhook (batches of at most 100 customers); "
                             "also PRODLENS_NOTIFY_CUSTOMERS_URL")
    notify.add_argument("--customer-template", metavar="FILE",
                        help="customer message: firing text, a '---' line, resolved text; "
                             "placeholders $subgroup $started_at $resolved_at $incident "
                             "$status (default: see docs/live.md)")
    notify.add_argument("--dry-run", action="store_true",
                        help="print what would be sent; send nothing")
    _add_ledger(parser)
    parser.add_argument("--status", action="store_true",
                        help="list the ledger's incidents and pending deliveries, and exit")
    parser.add_argument("--poll", type=parse_duration, default=1.0, metavar="DURATION",
                        help="wall-clock time between looks at the input when nothing new "
                             "came (default: 1s)")
    parser.add_argument("--once", action="store_true",
                        help="read what is there, evaluate, deliver, and exit (no following)")
    parser.set_defaults(handler=_run_watch)

    incidents = subparsers.add_parser(
        "incidents", help="list incidents and pending deliveries from a watch ledger",
        description="List the ledger's incidents (newest first) and its undelivered "
        "deliveries with their attempts and last error.")
    _add_ledger(incidents)
    incidents.set_defaults(handler=_run_incidents)


def _run_incidents(args: argparse.Namespace) -> int:
    from prodlens.incidents import Ledger, LedgerError, format_status

    if not os.path.exists(args.ledger):
        print(f"prodlens incidents: {args.ledger}: no such ledger", file=sys.stderr)
        return 2
    try:
        with Ledger(args.ledger) as ledger:
            sys.stdout.write(format_status(ledger))
    except LedgerError as error:
        print(f"prodlens incidents: {error}", file=sys.stderr)
        return 2
    return 0


def _run_watch(args: argparse.Namespace) -> int:
    if args.status:
        return _run_incidents(args)
    try:
        from prodlens.analysis import Filters, SliceOptions
        from prodlens.analysis._reader import load_otlp
        from prodlens.config import ConfigError
        from prodlens.incidents import (
            DEFAULT_CUSTOMER_TEMPLATE,
            CustomerTemplate,
            Deliverer,
            IncidentManager,
            Ledger,
            LedgerError,
            NotifyOptions,
        )
        from prodlens.live._detect import DetectOptions
        from prodlens.live._watch import WatchOptions

        load_otlp()
    except ImportError:
        print(f"prodlens watch needs the analyze extra: {_EXTRA_HINT}", file=sys.stderr)
        return 2
    if bool(args.files) == bool(args.clickhouse):
        print("prodlens watch: give files/directories to follow, or --clickhouse URL "
              "(not both)", file=sys.stderr)
        return 2
    try:
        template = (CustomerTemplate.from_file(args.customer_template)
                    if args.customer_template else DEFAULT_CUSTOMER_TEMPLATE)
        notify = NotifyOptions.from_environment(
            operator_urls=args.notify, customers_url=args.notify_customers,
            commands=tuple(args.notify_command), template=template, dry_run=args.dry_run)
    except ConfigError as error:
        print(f"prodlens watch: {error}", file=sys.stderr)
        return 2
    if args.clickhouse and args.slower_than is not None:
        print("prodlens watch: --slower-than works on files only (the ClickHouse SQL reads "
              "span status, not durations)", file=sys.stderr)
        return 2
    if args.every > args.window:
        print("prodlens watch: --every must not be longer than --window", file=sys.stderr)
        return 2
    options = WatchOptions(
        window=args.window, every=args.every, recent=args.recent, from_start=args.from_start,
        poll=args.poll,
        slow_after=args.slower_than,
        slice=SliceOptions(filters=Filters(where=tuple(args.where)), min_units=args.min_units,
                           min_failures=args.min_failures, alpha=args.alpha),
        detect=DetectOptions(confirm=args.confirm, min_lift=args.min_lift,
                             min_delta=args.min_delta, resolve_after=args.resolve_after))
    try:
        ledger = Ledger(args.ledger)
    except LedgerError as error:
        print(f"prodlens watch: {error}", file=sys.stderr)
        return 2
    deliverer = Deliverer(ledger, notify)
    manager = IncidentManager(ledger, notify, deliverer=deliverer)
    stop = threading.Event()
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}

    def _stop(number: int, frame: object) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for number in previous:
            signal.signal(number, _stop)
    try:
        watcher = _make_watcher(args, options, manager)
        if args.once:
            watcher.step()
            deliverer.deliver_due()
        else:
            deliverer.start()
            print(f"prodlens watch: following {', '.join(args.files) or args.clickhouse}; "
                  f"window {args.window:g}s every {args.every:g}s; ledger {args.ledger}",
                  flush=True)
            watcher.run(stop)
        print(watcher.status_line(), flush=True)
    finally:
        deliverer.stop()
        ledger.close()
        if threading.current_thread() is threading.main_thread():
            for number, handler in previous.items():
                signal.signal(number, handler)
    return 0


def _make_watcher(args: argparse.Namespace, options: Any, manager: Any) -> Any:
    if args.clickhouse:
        from prodlens.live._clickhouse import ClickHouseWatcher

        return ClickHouseWatcher(args.clickhouse, options, manager, table=args.table)
    from prodlens.live._watch import Watcher

    return Watcher(args.files, options, manager)
