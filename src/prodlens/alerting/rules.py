"""Prometheus recording and alerting rules for failures concentrated in one subgroup.

prodlens counts every request on ``prodlens.requests`` by cohort and outcome (see
:mod:`prodlens.signals.metrics`). Exported by the OpenTelemetry Prometheus exporter, or by the
Collector's ``prometheus``/``prometheusremotewrite`` exporters, that counter is the series
``prodlens_requests_total`` with the labels ``prodlens_cohort_<name>`` (one per cohort, ``.``
becomes ``_``), ``error`` (``"true"``/``"false"``), ``http_route``, ``service_name`` and the
scrape's ``job`` and ``instance``.

Over a short and a long window (multiwindow, as the SRE workbook's burn-rate alerts) the rules
record one ``rate()`` of the raw counter by ``job``, ``error`` and the cohort labels used (the
only rule that reads raw samples), the request and failure rates of each ``job``, and for each
cohort (``plan``) and each pair (``plan,region``):

* the request rate of each subgroup;
* the failure ratio of the subgroup, and of the rest of its ``job`` (every other request);

and one alert, ``ProdlensSubgroupFailing``, fires while in both windows the subgroup's failure
ratio is at least ``factor`` times the rest's and at least ``min_ratio``, with at least
``min_rate`` requests per second in the subgroup.

Example::

    prodlens rules --cohort plan --cohort region --pair plan,region > prodlens-rules.yml
    promtool check rules prodlens-rules.yml
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from prodlens import attributes
from prodlens.alerting._yaml import dump

__all__ = [
    "ALERT_NAME",
    "COHORTS_LABEL",
    "FAILED_VALUE",
    "REQUESTS_METRIC",
    "RuleOptions",
    "RulesError",
    "Subgroup",
    "build_rule_group",
    "cohort_label",
    "parse_duration",
    "render_rules",
]

#: The alert every generated rule raises.
ALERT_NAME: Final = "ProdlensSubgroupFailing"
#: ``prodlens.requests`` as the OpenTelemetry Prometheus exporters name it (a monotonic counter
#: gets ``_total``; the curly-brace unit ``{request}`` adds no suffix).
REQUESTS_METRIC: Final = "prodlens_requests_total"
#: The ``error`` label of a failed request.
ERROR_LABEL: Final = "error"
FAILED_VALUE: Final = "true"
#: Label naming the alert's cohorts (``plan`` or ``plan,region``).
COHORTS_LABEL: Final = "prodlens_cohorts"
#: Annotation carrying the long window, so the receiver knows how far back to look.
WINDOW_ANNOTATION: Final = "window"
#: Annotation naming the subgroup as span attributes (``prodlens.cohort.plan=enterprise``).
SUBGROUP_ANNOTATION: Final = "subgroup"
#: Between the members of a pair, as in ``prodlens slice``'s findings.
PAIR_SEPARATOR: Final = " ∧ "
GROUP_NAME: Final = "prodlens-subgroups"

_DURATION_RE: Final = re.compile(r"^([1-9][0-9]*)(ms|s|m|h|d|w|y)$")
_SECONDS: Final = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800,
                   "y": 31536000}
_LABEL_UNSAFE: Final = re.compile(r"[^a-zA-Z0-9_]")
_COHORT_NAME_RE: Final = re.compile(r"^[a-z0-9_][a-z0-9_.]*$")


class RulesError(ValueError):
    """An option the rules cannot be built from; the message names it and what is accepted."""


def parse_duration(text: str, option: str = "window") -> float:
    """A Prometheus duration of one unit (``30s``, ``5m``, ``1h``) in seconds.

    Raises:
        RulesError: not such a duration.

    Example::

        >>> parse_duration("5m")
        300
    """
    match = _DURATION_RE.match(text.strip())
    if not match:
        raise RulesError(f"{option} {text!r} is not a Prometheus duration: expected a whole "
                         "number and one unit of ms, s, m, h, d, w, y (e.g. 30s, 5m, 1h)")
    return int(match.group(1)) * _SECONDS[match.group(2)]


def cohort_label(name: str, prefix: str = attributes.DEFAULT_COHORT_PREFIX) -> str:
    """The Prometheus label of cohort ``name``: its span attribute with ``.`` (and any other
    character a label cannot hold) replaced by ``_``, as the OpenTelemetry exporters do.

    Example::

        >>> cohort_label("app.version")
        'prodlens_cohort_app_version'
    """
    label = _LABEL_UNSAFE.sub("_", prefix + name)
    return f"_{label}" if label[:1].isdigit() else label


@dataclass(frozen=True)
class Subgroup:
    """The cohorts one rule slices by: one cohort, or a pair.

    Attributes:
        cohorts: Cohort names (``("plan",)`` or ``("plan", "region")``).
        prefix: The cohort attribute prefix (``PRODLENS_COHORT_PREFIX``).
    """

    cohorts: tuple[str, ...]
    prefix: str = attributes.DEFAULT_COHORT_PREFIX

    @property
    def labels(self) -> tuple[str, ...]:
        """The Prometheus labels of the cohorts."""
        return tuple(cohort_label(name, self.prefix) for name in self.cohorts)

    @property
    def level(self) -> str:
        """The level part of the recording rules' names (``job_prodlens_cohort_plan``)."""
        return "_".join(("job", *self.labels))

    def subgroup_template(self) -> str:
        """The ``subgroup`` annotation: span attributes and templated values."""
        return PAIR_SEPARATOR.join(
            f"{self.prefix}{name}={{{{ $labels.{label} }}}}"
            for name, label in zip(self.cohorts, self.labels, strict=True))


@dataclass(frozen=True)
class RuleOptions:
    """What ``prodlens rules`` generates.

    Attributes:
        cohorts: Cohort names alerted on one by one.
        pairs: Pairs of cohort names alerted on together.
        short_window: The short window (a Prometheus duration).
        long_window: The long window.
        factor: The subgroup's failure ratio must be at least this many times the rest's.
        min_ratio: ... and at least this ratio (0.02 is 2%).
        min_rate: ... with at least this many requests per second in the subgroup.
        severity: The alert's ``severity`` label.
        prefix: The cohort attribute prefix (``PRODLENS_COHORT_PREFIX``).
        interval: The rule group's evaluation interval; empty: Prometheus's global one.
    """

    cohorts: tuple[str, ...] = ()
    pairs: tuple[tuple[str, str], ...] = ()
    short_window: str = "5m"
    long_window: str = "1h"
    factor: float = 5.0
    min_ratio: float = 0.02
    min_rate: float = 0.05
    severity: str = "page"
    prefix: str = attributes.DEFAULT_COHORT_PREFIX
    interval: str = ""
    subgroups: tuple[Subgroup, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in {*self.cohorts, *(n for pair in self.pairs for n in pair)}:
            if not _COHORT_NAME_RE.match(name):
                raise RulesError(f"cohort {name!r} is not a cohort name: expected lowercase "
                                 "letters, digits, '_' and '.' (as in PRODLENS_COHORT_<NAME>_FROM)")
        for pair in self.pairs:
            if len(pair) != 2 or pair[0] == pair[1]:
                raise RulesError(f"pair {','.join(pair)!r}: expected two different cohorts, "
                                 "e.g. --pair plan,region")
        if not self.cohorts and not self.pairs:
            raise RulesError("no cohorts to alert on: give --cohort NAME (repeatable) or "
                             "--pair A,B, or set PRODLENS_COHORT_<NAME>_FROM")
        short = parse_duration(self.short_window, "--short-window")
        long = parse_duration(self.long_window, "--long-window")
        if short >= long:
            raise RulesError(f"--short-window {self.short_window} must be shorter than "
                             f"--long-window {self.long_window}")
        if self.interval:
            parse_duration(self.interval, "--interval")
        if not self.factor >= 1:
            raise RulesError(f"--factor {self.factor}: expected a number >= 1")
        if not 0 < self.min_ratio <= 1:
            raise RulesError(f"--min-ratio {self.min_ratio}: expected a ratio in (0, 1]")
        if not self.min_rate >= 0:
            raise RulesError(f"--min-rate {self.min_rate}: expected requests per second >= 0")
        subgroups: dict[tuple[str, ...], Subgroup] = {}
        for cohorts in (*((c,) for c in self.cohorts), *(tuple(sorted(p)) for p in self.pairs)):
            subgroups.setdefault(cohorts, Subgroup(cohorts, self.prefix))
        object.__setattr__(self, "subgroups", tuple(subgroups.values()))


def _base(window: str) -> str:
    """The one rate over the raw counter per window; every other rule sums it."""
    return f"job_error_cohorts:prodlens_requests:rate{window}"


def _window_rules(subgroup: Subgroup, window: str) -> list[dict[str, object]]:
    labels = subgroup.labels
    by = ", ".join(("job", *labels))
    present = ", ".join(f'{label}!=""' for label in labels)
    level = subgroup.level
    base = _base(window)
    requests = f"{level}:prodlens_requests:rate{window}"
    ratio = f"{level}:prodlens_failure_ratio:rate{window}"
    return [
        {"record": requests, "expr": f"sum by ({by}) ({base}{{{present}}})"},
        # A subgroup without failures has no error="true" series: its ratio is 0, not absent.
        {"record": ratio,
         "expr": f'(sum by ({by}) ({base}{{{ERROR_LABEL}="{FAILED_VALUE}", {present}}})'
                 f" or 0 * {requests})\n/ {requests}"},
        # Every other request of the same job: the job's totals minus the subgroup's. A
        # subgroup that is the whole job has no rest (0/0): its comparison is empty, no alert.
        {"record": f"{level}:prodlens_rest_failure_ratio:rate{window}",
         "expr": f"(job:prodlens_failures:rate{window} - on (job) group_right () "
                 f"({ratio} * {requests}))\n"
                 f"/\n(job:prodlens_requests:rate{window} - on (job) group_right {requests})"},
    ]


def _alert(subgroup: Subgroup, options: RuleOptions) -> dict[str, object]:
    level = subgroup.level
    clauses = []
    for window in (options.short_window, options.long_window):
        ratio = f"{level}:prodlens_failure_ratio:rate{window}"
        clauses += [
            f"{ratio} >= {options.min_ratio:g}",
            f"{ratio} >= {options.factor:g} * {level}:prodlens_rest_failure_ratio:rate{window}",
            f"{level}:prodlens_requests:rate{window} >= {options.min_rate:g}",
        ]
    # ``and`` keeps the left side's value: the alert's $value is the short-window ratio.
    expr = "\n".join(clauses[:1] + [f"and {clause}" for clause in clauses[1:]])
    # The rest's ratio is read back with a template query on the same labels.
    selector = ", ".join(f'{label}="%s"' for label in ("job", *subgroup.labels))
    arguments = " ".join(f"$labels.{label}" for label in ("job", *subgroup.labels))
    query = (f"printf `{level}:prodlens_rest_failure_ratio:rate{options.short_window}"
             f"{{{selector}}}` {arguments} | query")
    rest = f"{{{{ with {query} }}}}{{{{ . | first | value | humanizePercentage }}}}{{{{ end }}}}"
    rest_ratio = f'{{{{ with {query} }}}}{{{{ . | first | value | printf "%.6g" }}}}{{{{ end }}}}'
    description = subgroup.subgroup_template()
    summary = (f"{description} fails {{{{ $value | humanizePercentage }}}} of its requests "
               f"to {{{{ $labels.job }}}} over {options.short_window}, the rest of the "
               f"service {rest}")
    return {
        "alert": ALERT_NAME,
        "expr": expr,
        # The cohort names, exact (a label name loses their dots): what the receiver maps the
        # labels back with. It also tells the rules apart (same alert name, same severity).
        "labels": {"severity": options.severity, COHORTS_LABEL: ",".join(subgroup.cohorts)},
        "annotations": {
            "summary": summary,
            SUBGROUP_ANNOTATION: description,
            WINDOW_ANNOTATION: options.long_window,
            # The two ratios as numbers, for the receiver's operator payload.
            "ratio": '{{ $value | printf "%.6g" }}',
            "rest_ratio": rest_ratio,
        },
    }


def build_rule_group(options: RuleOptions) -> dict[str, object]:
    """The rule group (recording rules, then one alerting rule per subgroup) as a mapping."""
    rules: list[dict[str, object]] = []
    # Only the cohort labels the rules use are kept: route, status class, instance and any
    # other label are summed away once, in the one rule per window that reads raw samples.
    kept = ", ".join(dict.fromkeys(
        ("job", ERROR_LABEL, *(label for sub in options.subgroups for label in sub.labels))))
    for window in (options.short_window, options.long_window):
        base = _base(window)
        rules += [
            {"record": base,
             "expr": f"sum by ({kept}) (rate({REQUESTS_METRIC}[{window}]))"},
            {"record": f"job:prodlens_requests:rate{window}",
             "expr": f"sum by (job) ({base})"},
            {"record": f"job:prodlens_failures:rate{window}",
             "expr": f'sum by (job) ({base}{{{ERROR_LABEL}="{FAILED_VALUE}"}})\n'
                     f"or 0 * job:prodlens_requests:rate{window}"},
        ]
        for subgroup in options.subgroups:
            rules += _window_rules(subgroup, window)
    rules += [_alert(subgroup, options) for subgroup in options.subgroups]
    group: dict[str, object] = {"name": GROUP_NAME}
    if options.interval:
        group["interval"] = options.interval
    group["rules"] = rules
    return group


def render_rules(options: RuleOptions, output_format: str = "prometheus",
                 *, name: str = "prodlens-subgroups", namespace: str = "") -> str:
    """The rules as YAML: a rule file (``prometheus``) or a ``PrometheusRule`` resource
    (``prometheus-operator``).

    Example::

        >>> text = render_rules(RuleOptions(cohorts=("plan",)))
        >>> '- alert: "ProdlensSubgroupFailing"' in text
        True
    """
    group = build_rule_group(options)
    if output_format == "prometheus":
        return dump({"groups": [group]})
    if output_format == "prometheus-operator":
        metadata: dict[str, object] = {"name": name}
        if namespace:
            metadata["namespace"] = namespace
        metadata["labels"] = {"app.kubernetes.io/name": "prodlens"}
        return dump({"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
                     "metadata": metadata, "spec": {"groups": [group]}})
    raise RulesError(f"--format {output_format!r}: expected prometheus or prometheus-operator")


def inhibit_rules(options: RuleOptions) -> list[dict[str, object]]:
    """Alertmanager ``inhibit_rules``: while a pair's alert fires, its two cohorts' alerts for
    the same values (which the failing pair drags up) are muted.

    Example::

        >>> rules = inhibit_rules(RuleOptions(pairs=(("plan", "region"),)))
        >>> [rule["target_matchers"][1] for rule in rules]
        ['prodlens_cohorts="plan"', 'prodlens_cohorts="region"']
    """
    rules: list[dict[str, object]] = []
    for subgroup in options.subgroups:
        if len(subgroup.cohorts) < 2:
            continue
        for name, label in zip(subgroup.cohorts, subgroup.labels, strict=True):
            rules.append({
                "source_matchers": [f'alertname="{ALERT_NAME}"',
                                    f'{COHORTS_LABEL}="{",".join(subgroup.cohorts)}"'],
                "target_matchers": [f'alertname="{ALERT_NAME}"', f'{COHORTS_LABEL}="{name}"'],
                "equal": ["job", label],
            })
    return rules


def render_inhibit_rules(options: RuleOptions) -> str:
    """:func:`inhibit_rules` as the YAML block to paste into alertmanager.yml."""
    return dump({"inhibit_rules": inhibit_rules(options)})


def parse_pair(text: str) -> tuple[str, str]:
    """``--pair plan,region`` → ``("plan", "region")``."""
    parts = tuple(part.strip() for part in text.split(","))
    if len(parts) != 2 or not all(parts):
        raise RulesError(f"--pair {text!r}: expected two cohort names separated by a comma, "
                         "e.g. plan,region")
    return parts[0], parts[1]


def subgroup_of(labels: Mapping[str, str], cohorts: Iterable[str],
                prefix: str = attributes.DEFAULT_COHORT_PREFIX) -> dict[str, str]:
    """Map an alert's labels back to the subgroup as span attributes.

    Labels of the known ``cohorts`` map to their exact attribute; any other
    ``prodlens_cohort_<x>`` label maps to ``<prefix><x>`` (exact unless the cohort name had a
    ``.``; list such cohorts to the receiver).

    Example::

        >>> subgroup_of({"job": "shop", "prodlens_cohort_app_version": "2.1"}, ["app.version"])
        {'prodlens.cohort.app.version': '2.1'}
    """
    known = {cohort_label(name, prefix): prefix + name for name in cohorts}
    label_prefix = cohort_label("", prefix)
    found: dict[str, str] = {}
    for label, value in sorted(labels.items()):
        if label in known:
            found[known[label]] = value
        elif label.startswith(label_prefix) and len(label) > len(label_prefix):
            found[prefix + label[len(label_prefix):]] = value
    return found


def describe(subgroup: Mapping[str, str]) -> str:
    """``prodlens.cohort.plan=enterprise ∧ prodlens.cohort.region=eu``."""
    return PAIR_SEPARATOR.join(f"{key}={value}" for key, value in subgroup.items())


def cohorts_from(names: Sequence[str]) -> tuple[str, ...]:
    """Names in order, without repeats."""
    return tuple(dict.fromkeys(names))
