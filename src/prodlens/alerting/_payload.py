"""Alertmanager's webhook body (version 4), checked and turned into subgroup alerts.

Alertmanager POSTs (``notify/webhook`` and ``template.Data`` in prometheus/alertmanager)::

    {"version": "4", "groupKey": str, "truncatedAlerts": int, "status": "firing"|"resolved",
     "receiver": str, "groupLabels": {...}, "commonLabels": {...}, "commonAnnotations": {...},
     "externalURL": str,
     "alerts": [{"status": "firing"|"resolved", "labels": {...}, "annotations": {...},
                 "startsAt": RFC 3339, "endsAt": RFC 3339, "generatorURL": str,
                 "fingerprint": str}, ...]}

Anything else is rejected whole with a reason (the receiver answers 400 and sends nothing):
another version, a body that is not such an object, a ``ProdlensSubgroupFailing`` alert whose
labels lack ``job`` or a cohort label it names, or whose labels name no cohort. Alerts with
another ``alertname`` are counted as ignored (a route that sends more than prodlens's alert
here is not an attack).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from prodlens.alerting.rules import (
    ALERT_NAME,
    COHORTS_LABEL,
    WINDOW_ANNOTATION,
    RulesError,
    cohort_label,
    parse_duration,
)

__all__ = ["MAX_ALERTS", "MAX_BODY_BYTES", "PayloadError", "SubgroupAlert", "parse_webhook"]

#: Largest body accepted; Alertmanager's own batches of a few hundred alerts stay far below.
MAX_BODY_BYTES: Final = 1 << 20
#: Most alerts in one body.
MAX_ALERTS: Final = 1000
#: Longest label or annotation value kept (a cohort value is at most a few hundred characters).
MAX_VALUE_CHARS: Final = 4096
MAX_LABELS: Final = 64
_ZERO_TIME: Final = "0001-01-01T00:00:00Z"

AlertStatus = Literal["firing", "resolved"]


class PayloadError(ValueError):
    """The body is not an Alertmanager v4 webhook payload prodlens can act on."""


@dataclass(frozen=True, slots=True)
class SubgroupAlert:
    """One ``ProdlensSubgroupFailing`` alert, mapped back to its subgroup.

    Attributes:
        subgroup: Span attribute → value (``{"prodlens.cohort.plan": "enterprise"}``).
        job: The ``job`` label (the service).
        status: ``firing`` or ``resolved``.
        starts_at: When the alert started firing (Unix seconds); stable across Alertmanager's
            repeats and identical in every replica of the receiver.
        ends_at: When it resolved (Unix seconds), ``None`` while firing.
        window: Seconds of spans to read back from ``starts_at`` (the rules' long window).
        fingerprint: Alertmanager's fingerprint of the label set.
        ratio: The subgroup's failure ratio as Prometheus saw it, when annotated.
        rest_ratio: The rest of the job's, when annotated.
        summary: The ``summary`` annotation.
    """

    subgroup: Mapping[str, str]
    job: str
    status: AlertStatus
    starts_at: float
    ends_at: float | None
    window: float
    fingerprint: str
    ratio: float | None
    rest_ratio: float | None
    summary: str


def _time(text: object, where: str) -> float | None:
    if not isinstance(text, str) or len(text) > 64:
        raise PayloadError(f"{where}: expected an RFC 3339 time")
    if not text or text == _ZERO_TIME:
        return None
    raw = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
    # Go writes nanoseconds; Python 3.10's fromisoformat takes at most microseconds.
    head, dot, rest = raw.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        raw = f"{head}.{(rest[:digits] + '000000')[:6]}{rest[digits:]}"
    try:
        moment = datetime.datetime.fromisoformat(raw)
    except ValueError:
        raise PayloadError(f"{where}: {text[:64]!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise PayloadError(f"{where}: {text[:64]!r} has no time zone")
    return moment.timestamp()


def _strings(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise PayloadError(f"{where}: expected an object of strings")
    if len(value) > MAX_LABELS:
        raise PayloadError(f"{where}: more than {MAX_LABELS} entries")
    for key, item in value.items():
        if not isinstance(item, str) or len(key) > 256 or len(item) > MAX_VALUE_CHARS:
            raise PayloadError(f"{where}[{key[:64]!r}]: expected a string of at most "
                               f"{MAX_VALUE_CHARS} characters")
    return value


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and value not in (float("inf"), float("-inf")) else None


def _subgroup(labels: Mapping[str, str], cohorts: Iterable[str], prefix: str,
              where: str) -> dict[str, str]:
    """The alert's subgroup as span attributes, from ``prodlens_cohorts`` or the labels."""
    named = labels.get(COHORTS_LABEL)
    if named is not None:
        names = [name.strip() for name in named.split(",")]
        if not all(names) or len(names) > 2:
            raise PayloadError(f"{where}: label {COHORTS_LABEL}={named[:64]!r} names no "
                               "cohort (expected one name or two, comma-separated)")
        found = {}
        for name in names:
            label = cohort_label(name, prefix)
            if label not in labels or not labels[label]:
                raise PayloadError(f"{where}: label {label} is missing (named by "
                                   f"{COHORTS_LABEL}={named[:64]!r})")
            found[prefix + name] = labels[label]
        return found
    known = {cohort_label(name, prefix): prefix + name for name in cohorts}
    label_prefix = cohort_label("", prefix)
    found = {}
    for label, value in sorted(labels.items()):
        if label in known and value:
            found[known[label]] = value
        elif label.startswith(label_prefix) and len(label) > len(label_prefix) and value:
            found[prefix + label[len(label_prefix):]] = value
    if not found:
        raise PayloadError(f"{where}: the labels name no cohort (no {COHORTS_LABEL} and no "
                           f"{label_prefix}* label)")
    if len(found) > 2:
        raise PayloadError(f"{where}: the labels name {len(found)} cohorts; a subgroup is one "
                           "cohort or a pair")
    return found


def parse_webhook(body: bytes, *, cohorts: Iterable[str] = (), prefix: str,
                  default_window: float) -> tuple[list[SubgroupAlert], int]:
    """The subgroup alerts of one webhook body, and how many other alerts it held.

    Args:
        body: The request body.
        cohorts: Cohort names whose labels lost a ``.`` (for alerts without
            ``prodlens_cohorts``).
        prefix: The cohort attribute prefix (``PRODLENS_COHORT_PREFIX``).
        default_window: Seconds read back when an alert has no ``window`` annotation.

    Raises:
        PayloadError: the body is not one prodlens can act on; the message says why.
    """
    if len(body) > MAX_BODY_BYTES:
        raise PayloadError(f"the body is {len(body):,} bytes; at most {MAX_BODY_BYTES:,} "
                           "are accepted")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise PayloadError("the body is not JSON") from None
    if not isinstance(data, dict):
        raise PayloadError("the body is not a JSON object")
    if data.get("version") != "4":
        raise PayloadError(f"version {str(data.get('version'))[:32]!r}: only Alertmanager's "
                           "webhook version \"4\" is accepted")
    alerts = data.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise PayloadError("alerts: expected a non-empty list")
    if len(alerts) > MAX_ALERTS:
        raise PayloadError(f"alerts: {len(alerts):,} alerts; at most {MAX_ALERTS:,}")
    cohort_names = tuple(cohorts)
    found: list[SubgroupAlert] = []
    ignored = 0
    for index, alert in enumerate(alerts):
        where = f"alerts[{index}]"
        if not isinstance(alert, dict):
            raise PayloadError(f"{where}: expected an object")
        labels = _strings(alert.get("labels"), f"{where}.labels")
        annotations = _strings(alert.get("annotations", {}), f"{where}.annotations")
        status = alert.get("status")
        if status not in ("firing", "resolved"):
            raise PayloadError(f"{where}.status: expected firing or resolved")
        if labels.get("alertname") != ALERT_NAME:
            if "alertname" not in labels:
                raise PayloadError(f"{where}.labels: alertname is missing")
            ignored += 1
            continue
        job = labels.get("job")
        if not job:
            raise PayloadError(f"{where}.labels: job is missing")
        starts_at = _time(alert.get("startsAt"), f"{where}.startsAt")
        if starts_at is None:
            raise PayloadError(f"{where}.startsAt: missing")
        ends_at = _time(alert.get("endsAt", ""), f"{where}.endsAt")
        fingerprint = alert.get("fingerprint", "")
        if not isinstance(fingerprint, str) or len(fingerprint) > 64:
            raise PayloadError(f"{where}.fingerprint: expected a short string")
        window = default_window
        if WINDOW_ANNOTATION in annotations:
            try:
                window = parse_duration(annotations[WINDOW_ANNOTATION])
            except RulesError:
                raise PayloadError(f"{where}.annotations.{WINDOW_ANNOTATION}: "
                                   f"{annotations[WINDOW_ANNOTATION][:32]!r} is not a "
                                   "Prometheus duration") from None
        found.append(SubgroupAlert(
            subgroup=_subgroup(labels, cohort_names, prefix, f"{where}.labels"),
            job=job, status=status, starts_at=starts_at,
            ends_at=ends_at if status == "resolved" else None, window=window,
            fingerprint=fingerprint, ratio=_number(annotations.get("ratio")),
            rest_ratio=_number(annotations.get("rest_ratio")),
            summary=annotations.get("summary", "")[:1000],
        ))
    return found, ignored
