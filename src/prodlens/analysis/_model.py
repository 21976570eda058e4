"""The analysis' options and results: frozen dataclasses shared by both engines."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from prodlens import attributes

Unit = Literal["root", "span", "trace"]
UNITS: Final[tuple[Unit, ...]] = ("root", "span", "trace")
#: ``root``: a unit failed when its root span (the request's entry in that service) is ERROR
#: or answered 5xx, what the caller saw; ``any-span``: when any span of it is ERROR.
FailureRule = Literal["root", "any-span"]
FAILURE_RULES: Final[tuple[FailureRule, ...]] = ("root", "any-span")
#: Attributes whose 5xx value fails a root span under the ``root`` rule.
HTTP_STATUS_ATTRIBUTES: Final[tuple[str, ...]] = ("http.response.status_code", "http.status_code")
#: The value of an attribute a unit does not have: ``key=ABSENT`` is the subgroup of units
#: without ``key`` (absence is a value). Shown as ``key (absent)``, ``null`` in JSON.
ABSENT: Final = "\x00absent"

#: Attributes that encode the outcome itself; never candidate subgroups. A trailing ``*``
#: matches a prefix. Change with ``--exclude`` / ``--no-default-excludes`` or
#: :attr:`SliceOptions.exclude`.
OUTCOME_ATTRIBUTES: Final[tuple[str, ...]] = (
    "http.response.status_code",
    "http.status_code",
    "rpc.grpc.status_code",
    "rpc.connect_rpc.error_code",
    "rpc.jsonrpc.error_code",
    "db.response.status_code",
    "error.type",
    "error.message",
    "error",
    "otel.status_code",
    "otel.status_description",
    "exception.*",
    "otel.scope.*",
    "status.*",
)
#: Attribute names that identify one thing (a request, a trace, a customer): never subgroups.
ID_NAME_RE: Final = re.compile(
    r"(^|[._-])(id|ids|uuid|guid|trace_?id|span_?id|request_?id|session_?id)$|"
    r"^(enduser\.pseudo\.id|user_agent\.original|url\.full|http\.url|http\.target|url\.query|"
    r"net\.sock\.peer\.port|client\.port|server\.port|net\.peer\.port|"
    r"network\.peer\.port|thread\.id|process\.pid|process\.command_line|"
    r"prodlens\.repeat_count)$"
)
#: A value longer than this is not a subgroup value (it is a payload, not a cohort).
MAX_VALUE_CHARS: Final = 256
#: Virtual attribute carrying the span name, so an operation can be a subgroup.
SPAN_NAME_ATTRIBUTE: Final = "span.name"
#: Attribute preferred as a unit's operation in ``affected``; the span name otherwise.
ROUTE_ATTRIBUTE: Final = "http.route"
#: Customer attributes that hold pseudonyms rather than ids.
PSEUDONYM_KEYS: Final = frozenset({attributes.PSEUDONYM_ATTRIBUTE})
CUSTOMER_ATTRIBUTES: Final[tuple[str, ...]] = (
    attributes.DEFAULT_CUSTOMER_ATTRIBUTE,
    attributes.PSEUDONYM_ATTRIBUTE,
)


def is_excluded(key: str, exclude: tuple[str, ...]) -> bool:
    """Whether an attribute name matches the exclusion list (``name`` or ``prefix*``)."""
    for pattern in exclude:
        if pattern.endswith("*"):
            if key.startswith(pattern[:-1]):
                return True
        elif key == pattern:
            return True
    return False


def is_candidate_key(key: str, exclude: tuple[str, ...], customer_attributes: tuple[str, ...]
                     ) -> bool:
    """Whether an attribute may define a subgroup: not an outcome, not an id, not the customer."""
    return not (
        key in customer_attributes or is_excluded(key, exclude) or ID_NAME_RE.search(key)
    )


@dataclass(frozen=True, slots=True)
class Filters:
    """Which units take part: attribute equalities (``--where``) and a start-time window.

    Attributes:
        where: ``(attribute, value, equal)`` triples, all of which must hold; ``equal=False``
            means ``attribute!=value`` (a unit without the attribute satisfies it).
        since_ns: Keep units that started at or after this time (Unix nanoseconds).
        until_ns: Keep units that started before this time (Unix nanoseconds).
    """

    where: tuple[tuple[str, str, bool], ...] = ()
    since_ns: int | None = None
    until_ns: int | None = None


@dataclass(frozen=True, slots=True)
class SliceOptions:
    """How units are formed and which subgroups count as findings.

    Attributes:
        unit: ``root`` (one per local root span), ``span`` or ``trace``.
        failure: ``root``: a unit failed when its root span is ERROR or answered 5xx;
            ``any-span``: when any of its spans is ERROR (handled errors below count too).
        filters: :class:`Filters` applied to units before anything is counted.
        min_units: A subgroup needs at least this many units to be tested.
        min_failures: ... and at least this many failed units.
        alpha: Family-wise significance level; Bonferroni-adjusted p-values must be below it.
        max_values: Attributes with more distinct values are skipped as id-like.
        top_pairs: Pairs are tested among distinct single findings, strongest first, up to
            ``top_pairs * (top_pairs - 1) / 2`` pairs (the pairs of this many singles).
        exclude: Outcome attributes that are never candidates (``name`` or ``prefix*``).
        customer_attributes: Attributes holding the customer, first present wins.
        max_open_groups: Open (trace, service) groups kept while streaming files; the oldest
            are finalised past it, which bounds memory.
    """

    unit: Unit = "root"
    filters: Filters = field(default_factory=Filters)
    min_units: int = 20
    min_failures: int = 3
    alpha: float = 0.01
    max_values: int = 50
    top_pairs: int = 8
    exclude: tuple[str, ...] = OUTCOME_ATTRIBUTES
    customer_attributes: tuple[str, ...] = CUSTOMER_ATTRIBUTES
    max_open_groups: int = 50_000
    failure: FailureRule = "root"


@dataclass(frozen=True, slots=True)
class Finding:
    """A subgroup where failures concentrate.

    Attributes:
        subgroup: Attribute → value; one entry, or two for an interaction.
        units: Units in the subgroup.
        failures: Failed units in the subgroup.
        rate: ``failures / units``.
        rest_rate: Failure rate of all other units.
        lift: ``rate / rest_rate`` (``inf`` when the rest never failed).
        p_value: One-sided Fisher exact p-value on the counts divided by the subgroup's own
            design effect, Bonferroni-adjusted for every subgroup tested.
        customers: Distinct customers among the subgroup's failed units.
        interaction: A pair whose failure rate a test shows above each of its parts' rates.
        aliases: Other descriptions of exactly the same units (``service.name=payments`` and
            ``host.name=payments-1`` when that host runs all of it), one finding for all.
        design_effect: The subgroup's failed units per failed trace (>= 1): its counts were
            divided by it before the test.
    """

    subgroup: Mapping[str, str]
    units: int
    failures: int
    rate: float
    rest_rate: float
    lift: float
    p_value: float
    customers: int
    interaction: bool = False
    aliases: tuple[Mapping[str, str], ...] = ()
    design_effect: float = 1.0

    def label(self, separator: str = " ∧ ") -> str:
        """``key=value ∧ key=value`` (``key (absent)`` for units without ``key``)."""
        return describe(self.subgroup, separator)

    def labels(self, separator: str = " ∧ ") -> tuple[str, ...]:
        """This finding's label, then its aliases' labels."""
        return (self.label(separator), *(describe(alias, separator) for alias in self.aliases))


def describe(subgroup: Mapping[str, str], separator: str = " ∧ ") -> str:
    """A subgroup as text: ``key=value``, ``key (absent)``, joined by ``separator``."""
    return separator.join(f"{key} (absent)" if value == ABSENT else f"{key}={value}"
                          for key, value in subgroup.items())


@dataclass(frozen=True, slots=True)
class InputSummary:
    """What was read: counts, malformed lines (``file:line: reason``) and notes."""

    spans: int = 0
    lines: int = 0
    malformed: int = 0
    malformed_examples: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Report:
    """The result of :func:`prodlens.analysis.slice_failures`.

    Attributes:
        units: Units analysed (after filters).
        failures: Failed units.
        findings: Significant subgroups, strongest (smallest adjusted p-value) first; ties by
            higher failure rate, then by label.
        tested: Number of distinct subgroups tested (the Bonferroni factor).
        skipped_attributes: Attributes skipped as id-like or excluded as outcomes.
        unit: The unit used.
        input: What was read.
        pseudonymised: Customers were on ``enduser.pseudo.id``.
        design_effect: Failed units per failed trace over all units (for information: each
            subgroup is tested with its own, see :attr:`Finding.design_effect`).
        failure: The failure rule used (see :attr:`SliceOptions.failure`).
    """

    units: int
    failures: int
    findings: tuple[Finding, ...]
    tested: int
    skipped_attributes: tuple[str, ...]
    unit: Unit
    input: InputSummary
    pseudonymised: bool = False
    design_effect: float = 1.0
    failure: FailureRule = "root"

    @property
    def rate(self) -> float:
        """Overall failure rate."""
        return self.failures / self.units if self.units else 0.0

    def verdict(self) -> str:
        """A one-line answer, e.g. ``failures concentrate in region=eu-west: 7.0% vs 0.3%, ...``."""
        if not self.units:
            return "no units to analyse: the input held no matching spans"
        if not self.failures:
            return f"no failures in {self.units:,} units"
        if not self.findings:
            return (f"no subgroup stands out: {self.failures:,} failures in {self.units:,} units "
                    f"({self.rate:.1%}) are spread evenly")
        top = self.findings[0]
        who = "pseudonymous customers" if self.pseudonymised else "customers"
        return (f"failures concentrate in {top.label()}: {top.rate:.1%} vs {top.rest_rate:.1%}, "
                f"{top.customers:,} {who} affected")


@dataclass(frozen=True, slots=True)
class AffectedCustomer:
    """One customer who saw at least one failed request.

    A request is a trace; it failed when one of its units failed (see
    :attr:`SliceOptions.failure`), so one failure that crossed three services counts once.

    Attributes:
        customer: The customer id, or its pseudonym.
        failures: Failed requests (traces) of this customer.
        requests: All requests (traces) of this customer.
        first_failure_ns: Start of the first failed unit (Unix nanoseconds).
        last_failure_ns: Start of the last failed unit.
        operations: Routes (``http.route``) or span names that failed, sorted.
        cohorts: Cohort attribute → the values seen on failed units, sorted.
    """

    customer: str
    failures: int
    requests: int
    first_failure_ns: int
    last_failure_ns: int
    operations: tuple[str, ...]
    cohorts: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class AffectedReport:
    """The result of :func:`prodlens.analysis.affected_customers`."""

    customers: tuple[AffectedCustomer, ...]
    pseudonymised: bool
    input: InputSummary
