"""The ``prodlens rules`` and ``prodlens notify`` sub-commands.

Example::

    prodlens rules --cohort plan --cohort region --pair plan,region > prodlens-rules.yml
    prodlens rules --format prometheus-operator > prodlens-rules.yaml   # a PrometheusRule
    prodlens rules --dashboard > prodlens-dashboard.json                # Grafana
    prodlens notify --listen 127.0.0.1:9099 --spans spans/ \\
        --operator-webhook https://ops.example/hook --customer-webhook https://msg.example/send
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from prodlens._argtypes import number

if TYPE_CHECKING:
    from prodlens.alerting.rules import RuleOptions

__all__ = ["add_commands", "rule_options"]


def _ratio(text: str) -> float:
    """``0.02`` or ``2%``."""
    raw = text.strip()
    value = number(raw[:-1]) / 100 if raw.endswith("%") else number(raw)
    return value


def add_commands(subparsers: Any) -> None:
    """Add ``rules`` and ``notify`` to the ``prodlens`` command's sub-parsers."""
    rules = subparsers.add_parser(
        "rules", help="print Prometheus rules alerting on failing subgroups",
        description="Print Prometheus recording and alerting rules (one group) over prodlens's "
        "cohort metrics: ProdlensSubgroupFailing fires while a subgroup's failure ratio is at "
        "least --factor times the rest of its job's and at least --min-ratio, in both the short "
        "and the long window. Cohorts default to those of PRODLENS_COHORT_<NAME>_FROM.",
    )
    rules.add_argument("--cohort", action="append", default=[], metavar="NAME",
                       help="a cohort to alert on, repeatable (default: the configured cohorts)")
    rules.add_argument("--pair", action="append", default=[], metavar="A,B",
                       help="a pair of cohorts to alert on together, repeatable")
    rules.add_argument("--short-window", default="5m", metavar="DURATION",
                       help="the short window (default: 5m)")
    rules.add_argument("--long-window", default="1h", metavar="DURATION",
                       help="the long window (default: 1h)")
    rules.add_argument("--factor", type=number, default=5.0,
                       help="times the rest's failure ratio (default: 5)")
    rules.add_argument("--min-ratio", type=_ratio, default=0.02, metavar="RATIO",
                       help="least failure ratio, 0.02 or 2%% (default: 2%%)")
    rules.add_argument("--min-rate", type=number, default=0.05, metavar="REQ_PER_S",
                       help="least requests per second in the subgroup (default: 0.05)")
    rules.add_argument("--severity", default="page",
                       help="the alert's severity label (default: page)")
    rules.add_argument("--interval", default="", metavar="DURATION",
                       help="the group's evaluation interval (default: Prometheus's global)")
    rules.add_argument("--format", choices=("prometheus", "prometheus-operator"),
                       default="prometheus",
                       help="a rule file, or a PrometheusRule resource (default: prometheus)")
    rules.add_argument("--name", default="prodlens-subgroups",
                       help="the PrometheusRule's name (prometheus-operator format)")
    rules.add_argument("--namespace", default="",
                       help="the PrometheusRule's namespace (prometheus-operator format)")
    rules.add_argument("--dashboard", action="store_true",
                       help="print a Grafana dashboard (JSON) over these rules instead")
    rules.add_argument("--inhibit-rules", action="store_true",
                       help="print Alertmanager inhibit_rules instead: a firing pair mutes the "
                            "alerts of its two cohorts")
    rules.set_defaults(handler=run_rules)

    notify = subparsers.add_parser(
        "notify", help="receive Alertmanager's webhook and message the affected customers",
        description="An Alertmanager webhook receiver (POST /alertmanager, payload version 4). "
        "For each firing ProdlensSubgroupFailing alert it reads the subgroup's failed units over "
        "the alert's window from the span store and notifies operators and the customers "
        "inside it through the ledger prodlens watch uses; resolved alerts send the resolve. "
        "Replicas may share one ledger.",
    )
    notify.add_argument("--listen", default="127.0.0.1:9099", metavar="HOST:PORT",
                        help="where to listen (default: 127.0.0.1:9099); anything but loopback "
                             "needs --token")
    notify.add_argument("--token", default=None,
                        help="bearer token Alertmanager must send (default: "
                             "PRODLENS_NOTIFY_TOKEN)")
    store = notify.add_argument_group("span store")
    store.add_argument("--spans", action="append", default=[], metavar="PATH",
                       help="OTLP/JSON files or directories, repeatable")
    store.add_argument("--clickhouse", metavar="URL",
                       help="the Collector's ClickHouse instead, e.g. "
                            "http://user:pw@host:8123/?database=otel")
    store.add_argument("--table", default="otel_traces",
                       help="[database.]table in ClickHouse (default: otel_traces)")
    store.add_argument("--customer-attribute", action="append", metavar="ATTR",
                       help="attribute holding the customer, repeatable, first present wins")
    store.add_argument("--window", default="1h", metavar="DURATION",
                       help="spans read back from the alert's start when it has no window "
                            "annotation (default: 1h)")
    store.add_argument("--cohort", action="append", default=[], metavar="NAME",
                       help="cohort names, to map labels without prodlens_cohorts back "
                            "(default: the configured cohorts)")
    out = notify.add_argument_group("notifications (as prodlens watch)")
    out.add_argument("--notify", action="append", default=[], metavar="URL",
                     help="operator webhook, repeatable (also PRODLENS_NOTIFY_URL)")
    out.add_argument("--notify-command", action="append", default=[], metavar="CMD",
                     help="operator command, the JSON on stdin, repeatable")
    out.add_argument("--notify-customers", metavar="URL",
                     help="customer-messaging webhook (also PRODLENS_NOTIFY_CUSTOMERS_URL)")
    out.add_argument("--customer-template", metavar="FILE",
                     help="the customer message template")
    out.add_argument("--ledger", default=None, metavar="FILE",
                     help="the SQLite ledger, shareable by replicas "
                          "(default: ./prodlens-ledger.sqlite3)")
    out.add_argument("--dry-run", action="store_true",
                     help="print what would be sent; send nothing")
    notify.set_defaults(handler=run_notify)


def rule_options(args: argparse.Namespace) -> RuleOptions:
    """The :class:`RuleOptions` of ``prodlens rules``'s arguments and the configuration.

    Raises:
        RulesError: an option is invalid.
        ConfigError: the PRODLENS_* configuration is invalid.
    """
    from prodlens.alerting.rules import RuleOptions, cohorts_from, parse_pair
    from prodlens.config import load_settings

    settings = load_settings()
    pairs = tuple(parse_pair(text) for text in args.pair)
    cohorts = (cohorts_from(args.cohort) if args.cohort
               else tuple(sorted(settings.cohort_sources)))
    return RuleOptions(
        cohorts=cohorts, pairs=pairs, short_window=args.short_window,
        long_window=args.long_window, factor=args.factor, min_ratio=args.min_ratio,
        min_rate=args.min_rate, severity=args.severity, prefix=settings.cohort_prefix,
        interval=args.interval,
    )


def run_rules(args: argparse.Namespace) -> int:
    """Handler of ``prodlens rules``; returns the exit status (2 on bad options)."""
    from prodlens.alerting.dashboard import render_dashboard
    from prodlens.alerting.rules import RulesError, render_inhibit_rules, render_rules
    from prodlens.config import ConfigError

    try:
        options = rule_options(args)
        if args.dashboard:
            text = render_dashboard(options)
        elif args.inhibit_rules:
            text = render_inhibit_rules(options)
        else:
            text = render_rules(options, args.format, name=args.name, namespace=args.namespace)
    except (RulesError, ConfigError) as error:
        print(f"prodlens rules: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


def run_notify(args: argparse.Namespace) -> int:
    """Handler of ``prodlens notify``: serve until interrupted; 2 on bad options."""
    from prodlens.alerting.serve import NotifyError, serve

    try:
        return serve(args)
    except NotifyError as error:
        print(f"prodlens notify: {error}", file=sys.stderr)
        return 2
