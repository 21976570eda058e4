"""The incident value and the statistics that open or update one."""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

Status = Literal["firing", "resolved"]
STATUSES: Final[tuple[Status, ...]] = ("firing", "resolved")


def subgroup_key(subgroup: Mapping[str, str]) -> str:
    """A canonical text key of a subgroup: JSON with sorted keys (equal subgroups, equal keys).

    Example::

        >>> subgroup_key({"region": "eu", "plan": "pro"})
        '{"plan":"pro","region":"eu"}'
    """
    return json.dumps(dict(sorted(subgroup.items())), separators=(",", ":"), ensure_ascii=False)


def subgroup_label(subgroup: Mapping[str, str]) -> str:
    """``key=value ∧ key=value`` in key order, as the analysis prints findings.

    Example::

        >>> subgroup_label({"region": "eu", "plan": "pro"})
        'plan=pro ∧ region=eu'
    """
    return " ∧ ".join(f"{key}={value}" for key, value in sorted(subgroup.items()))


def incident_id(subgroup: Mapping[str, str], started_at: float) -> str:
    """A short, stable id: the same subgroup starting at the same time gets the same id, so two
    processes that open one incident concurrently agree on its name."""
    digest = hashlib.sha256(f"{subgroup_key(subgroup)}@{started_at:.3f}".encode()).hexdigest()
    return f"inc-{digest[:12]}"


def iso(seconds: float | None) -> str | None:
    """Unix seconds as ISO-8601 UTC (``2026-12-04T17:03:10Z``), ``None`` stays ``None``."""
    if seconds is None:
        return None
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    text = moment.isoformat(timespec="milliseconds" if seconds % 1 else "seconds")
    return text.replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class SubgroupStats:
    """How a subgroup is failing right now (from a window evaluation or an alert).

    Attributes:
        rate: Failure rate inside the subgroup.
        rest_rate: Failure rate of everything else.
        units: Units (requests) in the subgroup.
        failures: Failed units in the subgroup.
    """

    rate: float
    rest_rate: float
    units: int
    failures: int


@dataclass(frozen=True, slots=True)
class Incident:
    """One failing subgroup, from the moment it was found until it resolved.

    Times are Unix seconds of *span* time for ``watch`` (when the spans happened, not when they
    were read) and of the alert's times for the Alertmanager receiver.

    Attributes:
        id: ``inc-`` and 12 hex digits.
        subgroup: Attribute → value (one or two entries).
        rate: Failure rate in the subgroup at the last update.
        rest_rate: Failure rate elsewhere at the last update.
        units: Units in the subgroup at the last update.
        failures: Failed units in the subgroup at the last update.
        affected_customers: Distinct customers with a failed unit in the subgroup so far.
        started_at: When the subgroup started failing.
        resolved_at: When it was resolved, or ``None`` while firing.
        status: ``firing`` or ``resolved``.
        last_failing_at: The last time the subgroup was seen failing (resolve hold-down).
    """

    id: str
    subgroup: Mapping[str, str]
    rate: float
    rest_rate: float
    units: int
    failures: int
    affected_customers: int
    started_at: float
    resolved_at: float | None
    status: Status
    last_failing_at: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "subgroup", MappingProxyType(dict(self.subgroup)))

    def label(self) -> str:
        """The subgroup as ``key=value ∧ key=value``."""
        return subgroup_label(self.subgroup)

    def text(self) -> str:
        """A one-line summary for chat webhooks and the console."""
        head = "[RESOLVED]" if self.status == "resolved" else "[FIRING]"
        since = f"since {iso(self.started_at)}"
        if self.resolved_at is not None:
            since += f", resolved {iso(self.resolved_at)}"
        return (f"{head} {self.label()}: {self.rate:.1%} failing vs {self.rest_rate:.1%} "
                f"elsewhere ({self.failures:,} of {self.units:,} units, "
                f"{self.affected_customers:,} customers affected) {since} [{self.id}]")

    def payload(self) -> dict[str, object]:
        """The operator webhook's JSON body (see docs/live.md)."""
        return {
            "status": self.status,
            "incident": self.id,
            "subgroup": dict(sorted(self.subgroup.items())),
            "rate": self.rate,
            "rest_rate": self.rest_rate,
            "units": self.units,
            "failures": self.failures,
            "affected_customers": self.affected_customers,
            "started_at": iso(self.started_at),
            "resolved_at": iso(self.resolved_at),
            "text": self.text(),
        }
