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
from typing import Any

__all__ = ["add_commands", "rule_options"]


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number") from None


def _ratio(text: str) -> float:
    """``0.02`` or ``2%``."""
    raw = text.strip()
    value = _number(raw[:-1]) / 100 if raw.endswith("%") else _number(raw)
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
    rules.add_argument("--factor", type=_number, default=5.0,
                       help="times the rest's failure ratio (default: 5)")
    rules.add_argument("--min-ratio", type=_ratio, default=0.02, metavar="RATIO",
                       help="least failure ratio, 0.02 or 2%% (default: 2%%)")
    rules.add_argument("--min-rate", type=_number, default=0.05, metavar="REQ_PER_S",
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
    rules.set_defaults(handler=run_rules)


def rule_options(args: argparse.Namespace) -> Any:
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
    from prodlens.alerting.rules import RulesError, render_rules
    from prodlens.config import ConfigError

    try:
        options = rule_options(args)
        text = (render_dashboard(options) if args.dashboard else
                render_rules(options, args.format, name=args.name, namespace=args.namespace))
    except (RulesError, ConfigError) as error:
        print(f"prodlens rules: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0
