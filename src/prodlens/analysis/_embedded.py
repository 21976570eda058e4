"""The embedded engine: stream OTLP/JSON lines and aggregate units as they complete.

Memory stays bounded as the input grows:

* Only local root spans and spans with an ERROR status are looked at closely; other spans are
  counted and dropped.
* A unit is finalised when its (trace, service) group leaves a window of ``max_open_groups``
  open groups (oldest first) or at the end of input. One service's spans of one trace are
  exported together by its process (the SDK exports children before the root ends), so the
  window only needs to span a few seconds of traffic, not the whole input.
* Finalised units are counted in a table keyed by their *signature*, the sorted tuple of their
  candidate ``(attribute, value)`` pairs; units with equal signatures share one row. If the table
  outgrows its budget (50,000 rows), attributes with more than ``max_values`` distinct values
  (ids in disguise) are projected out, which merges rows.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

from prodlens import attributes
from prodlens.analysis._model import (
    MAX_VALUE_CHARS,
    PSEUDONYM_KEYS,
    ROUTE_ATTRIBUTE,
    SPAN_NAME_ATTRIBUTE,
    AffectedCustomer,
    SliceOptions,
    is_candidate_key,
)
from prodlens.analysis._reader import ReadProgress

Signature = tuple[tuple[str, str], ...]
Item = tuple[str, str]

_ROOT_KINDS: Final = frozenset({2, 5, "SPAN_KIND_SERVER", "SPAN_KIND_CONSUMER"})
_ERROR_CODES: Final = frozenset({2, "STATUS_CODE_ERROR"})
_REMOTE_PARENT: Final = 0x300
_TABLE_BUDGET: Final = 50_000


def format_double(value: float) -> str:
    """A double as the Collector's ClickHouse exporter writes it (Go ``'f'``, shortest).

    Example::

        >>> format_double(1.0), format_double(0.25), format_double(1e-7)
        ('1', '0.25', '0.0000001')
    """
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return format(Decimal(repr(value)).normalize(), "f")


def _plain(value: Mapping[str, Any]) -> Any:
    """An ``AnyValue`` as a plain JSON-able value (for arrays and maps)."""
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "doubleValue" in value:
        raw = value["doubleValue"]
        return raw if isinstance(raw, (int, float)) else float(raw)
    if "arrayValue" in value:
        return [_plain(v) for v in (value["arrayValue"] or {}).get("values") or ()]
    if "kvlistValue" in value:
        return {kv["key"]: _plain(kv.get("value") or {})
                for kv in (value["kvlistValue"] or {}).get("values") or ()}
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def value_text(value: Mapping[str, Any] | None) -> str:
    """An ``AnyValue`` as text, the way the Collector's ClickHouse exporter stores it."""
    if not value:
        return ""
    if "stringValue" in value:
        return str(value["stringValue"])
    if "intValue" in value:
        return str(int(value["intValue"]))
    if "boolValue" in value:
        return "true" if value["boolValue"] else "false"
    if "doubleValue" in value:
        raw = value["doubleValue"]
        return format_double(float(raw))
    if "bytesValue" in value:
        return base64.b64encode(base64.b64decode(value["bytesValue"])).decode("ascii")
    return json.dumps(_plain(value), separators=(",", ":"), ensure_ascii=False)


def attribute_map(items: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    """OTLP/JSON ``KeyValue`` list → ``{key: text}``."""
    out: dict[str, str] = {}
    if items:
        for item in items:
            value = item.get("value")
            text = value.get("stringValue") if value else None
            out[item["key"]] = text if text is not None else value_text(value)
    return out


class _RootRecord:
    """A unit waiting for its group to close."""

    __slots__ = ("customer", "epoch", "error", "operation", "pseudo", "signature", "start",
                 "trace")

    def __init__(self, signature: Signature, start: int, customer: str, operation: str,
                 error: bool, pseudo: bool, trace: str, epoch: int) -> None:
        self.trace = trace
        self.epoch = epoch
        self.signature = signature
        self.start = start
        self.customer = customer
        self.operation = operation
        self.error = error
        self.pseudo = pseudo


class EmbeddedAggregates:
    """Streams requests in, keeps aggregate counts; answers the questions the report asks."""

    def __init__(self, options: SliceOptions, *, track_customers: bool = False) -> None:
        self.options = options
        self.units = 0
        self.failures = 0
        self.pseudonymised = False
        self.orphan_groups = 0
        self._failed_traces: set[int] = set()
        self._track = track_customers
        # signature -> [units, failures, customers among failed units]
        self._table: dict[Signature, list[Any]] = {}
        self._budget = _TABLE_BUDGET
        self._dropped_keys: set[str] = set()
        self._epoch = 0
        self._key_ok: dict[str, bool] = {}
        self._groups: dict[Any, list[Any]] = {}
        self._requests: dict[str, int] = {}
        self._detail: dict[str, list[Any]] = {}
        self._index: dict[Item, list[list[Any]]] | None = None
        self._cohort_prefix = attributes.DEFAULT_COHORT_PREFIX

    # -- streaming -------------------------------------------------------------------------

    def consume(self, request: Mapping[str, Any], progress: ReadProgress) -> None:
        """Add one ``ExportTraceServiceRequest``. Raises on a structurally broken request."""
        unit = self.options.unit
        groups = self._groups
        for resource_spans in request["resourceSpans"]:
            resource = resource_spans.get("resource") or {}
            resource_attributes = attribute_map(resource.get("attributes"))
            service = resource_attributes.get("service.name", "")
            resource_pair = (resource_attributes, self._candidates(resource_attributes))
            for scope_spans in resource_spans.get("scopeSpans") or ():
                for span in scope_spans.get("spans") or ():
                    progress.spans += 1
                    status = span.get("status")
                    error = bool(status) and status.get("code") in _ERROR_CODES
                    parent = span.get("parentSpanId")
                    if unit == "root":
                        is_root = (not parent or span.get("kind") in _ROOT_KINDS
                                   or (span.get("flags", 0) & _REMOTE_PARENT) == _REMOTE_PARENT)
                        if not is_root and not error:
                            continue
                        key = (span["traceId"], service)
                    elif unit == "trace":
                        is_root = not parent
                        if not is_root and not error:
                            continue
                        key = span["traceId"]
                    else:
                        record = self._record(resource_pair, span, error)
                        if record is not None:
                            self._add_unit(record, error)
                        continue
                    group = groups.get(key)
                    if group is None:
                        group = groups[key] = [False, []]
                    if error:
                        group[0] = True
                    if is_root:
                        record = self._record(resource_pair, span, error)
                        if record is not None:
                            group[1].append(record)
        if len(groups) > self.options.max_open_groups:
            self._flush_oldest(len(groups) // 2)

    def _candidates(self, attributes: Mapping[str, str]) -> list[Item]:
        """The candidate ``(attribute, value)`` items of a mapping (cached key decisions)."""
        ok = self._key_ok
        items: list[Item] = []
        for item in attributes.items():
            allowed = ok.get(item[0])
            if allowed is None:
                allowed = ok[item[0]] = item[0] not in self._dropped_keys and is_candidate_key(
                    item[0], self.options.exclude, self.options.customer_attributes)
            if allowed and len(item[1]) <= MAX_VALUE_CHARS:
                items.append(item)
        return items

    def _allowed(self, key: str) -> bool:
        allowed = self._key_ok[key] = key not in self._dropped_keys and is_candidate_key(
            key, self.options.exclude, self.options.customer_attributes)
        return allowed

    def _record(self, resource: tuple[dict[str, str], list[Item]], span: Mapping[str, Any],
                error: bool) -> _RootRecord | None:
        # The hot path: one pass over the span's attributes builds both the lookup dict and
        # the candidate items (this function is most of the run time past parsing).
        start = int(span.get("startTimeUnixNano") or 0)
        filters = self.options.filters
        if filters.since_ns is not None and start < filters.since_ns:
            return None
        if filters.until_ns is not None and start >= filters.until_ns:
            return None
        resource_attributes, resource_items = resource
        name = str(span.get("name", ""))
        ok = self._key_ok
        own: dict[str, str] = {}
        items: list[Item] = []
        for attribute in span.get("attributes") or ():
            key = attribute["key"]
            value = attribute.get("value")
            text = value.get("stringValue") if value else None
            if text is None:
                text = value_text(value)
            own[key] = text
            allowed = ok.get(key)
            if allowed is None:
                allowed = self._allowed(key)
            if allowed and len(text) <= MAX_VALUE_CHARS:
                items.append((key, text))
        if filters.where:
            merged = {**resource_attributes, **own, SPAN_NAME_ATTRIBUTE: name}
            for key, wanted, equal in filters.where:
                if (merged.get(key) == wanted) != equal:
                    return None
        customer = ""
        pseudo = False
        for attribute_name in self.options.customer_attributes:
            found = own.get(attribute_name) or resource_attributes.get(attribute_name)
            if found:
                customer = found
                pseudo = attribute_name in PSEUDONYM_KEYS
                break
        operation = own.get(ROUTE_ATTRIBUTE) or resource_attributes.get(ROUTE_ATTRIBUTE) or name
        # span attributes override resource attributes of the same name, as ClickHouse's
        # mapUpdate(ResourceAttributes, SpanAttributes) does; span.name overrides both
        if own.keys() & resource_attributes.keys():
            items += [item for item in resource_items if item[0] not in own]
        else:
            items += resource_items
        if SPAN_NAME_ATTRIBUTE in own or SPAN_NAME_ATTRIBUTE in resource_attributes:
            items = [item for item in items if item[0] != SPAN_NAME_ATTRIBUTE]
        allowed = ok.get(SPAN_NAME_ATTRIBUTE)
        if allowed is None:
            allowed = self._allowed(SPAN_NAME_ATTRIBUTE)
        if allowed and len(name) <= MAX_VALUE_CHARS:
            items.append((SPAN_NAME_ATTRIBUTE, name))
        items.sort()
        return _RootRecord(tuple(items), start, customer, operation, error, pseudo,
                           str(span.get("traceId", "")), self._epoch)

    def _flush_oldest(self, count: int) -> None:
        groups = self._groups
        keys = list(groups)
        for key in keys[:count]:
            self._close_group(groups.pop(key))

    def finish(self) -> None:
        """Finalise every open group (call at the end of input)."""
        for group in self._groups.values():
            self._close_group(group)
        self._groups = {}

    def _close_group(self, group: list[Any]) -> None:
        roots: list[_RootRecord] = group[1]
        if not roots:
            if group[0]:
                self.orphan_groups += 1
            return
        for record in roots:
            self._add_unit(record, record.error or group[0])

    def _add_unit(self, record: _RootRecord, failed: bool) -> None:
        self.units += 1
        signature = record.signature
        if record.epoch != self._epoch:  # made before attributes were projected out
            signature = self._project(signature)
        row = self._table.get(signature)
        if row is None:
            if len(self._table) >= self._budget:
                self._shrink()
                signature = self._project(signature)
            row = self._table.setdefault(signature, [0, 0, None])
        row[0] += 1
        customer = record.customer
        if record.pseudo:
            self.pseudonymised = True
        if failed:
            self.failures += 1
            self._failed_traces.add(hash(record.trace))  # ints: ~3x smaller than the ids
            row[1] += 1
            if customer:
                if row[2] is None:
                    row[2] = set()
                row[2].add(customer)
        if self._track and customer:
            self._requests[customer] = self._requests.get(customer, 0) + 1
            if failed:
                detail = self._detail.get(customer)
                if detail is None:
                    detail = self._detail[customer] = [0, record.start, record.start, set(), {}]
                detail[0] += 1
                detail[1] = min(detail[1], record.start)
                detail[2] = max(detail[2], record.start)
                detail[3].add(record.operation)
                for key, value in signature:
                    if key.startswith(self._cohort_prefix):
                        detail[4].setdefault(key, set()).add(value)

    def _project(self, signature: Signature) -> Signature:
        return tuple(item for item in signature if item[0] not in self._dropped_keys)

    def _shrink(self) -> None:
        """Project id-like attributes out of the table when it outgrows its budget."""
        too_many = {key for key, count in self.key_cardinality().items()
                    if count > self.options.max_values}
        if not too_many:
            self._budget *= 2
            return
        self._dropped_keys |= too_many
        self._epoch += 1
        for key in too_many:
            self._key_ok[key] = False
        table: dict[Signature, list[Any]] = {}
        for signature, row in self._table.items():
            merged = table.get(self._project(signature))
            if merged is None:
                table[self._project(signature)] = row
                continue
            merged[0] += row[0]
            merged[1] += row[1]
            if row[2]:
                merged[2] = (merged[2] or set()) | row[2]
        self._table = table

    # -- questions ---------------------------------------------------------------------------

    def totals(self) -> tuple[int, int, int]:
        """(units, failed units, distinct traces among failed units)."""
        return self.units, self.failures, len(self._failed_traces)

    def key_cardinality(self) -> dict[str, int]:
        """Distinct values per candidate attribute (dropped id-like ones count as huge)."""
        values: dict[str, set[str]] = {}
        for signature in self._table:
            for key, value in signature:
                values.setdefault(key, set()).add(value)
        counts = {key: len(found) for key, found in values.items()}
        for key in self._dropped_keys:
            counts[key] = max(counts.get(key, 0), self.options.max_values + 1)
        return counts

    def singles(self, keys: Iterable[str]) -> dict[Item, tuple[int, int]]:
        """(units, failures) for every value of the given attributes."""
        wanted = set(keys)
        counts: dict[Item, list[int]] = {}
        for signature, row in self._table.items():
            for item in signature:
                if item[0] in wanted:
                    found = counts.get(item)
                    if found is None:
                        counts[item] = [row[0], row[1]]
                    else:
                        found[0] += row[0]
                        found[1] += row[1]
        return {item: (found[0], found[1]) for item, found in counts.items()}

    def subgroups(self, subgroups: Sequence[tuple[Item, ...]]) -> list[tuple[int, int, int]]:
        """(units, failures, customers among failures) for each subgroup (AND of its items)."""
        if self._index is None:
            self._index = {}
            for signature, row in self._table.items():
                for item in signature:
                    self._index.setdefault(item, []).append(row)
        out: list[tuple[int, int, int]] = []
        for items in subgroups:
            rows = self._index.get(items[0], [])
            for item in items[1:]:
                other = {id(row) for row in self._index.get(item, [])}
                rows = [row for row in rows if id(row) in other]
            customers: set[str] = set()
            for row in rows:
                if row[2]:
                    customers |= row[2]
            out.append((sum(row[0] for row in rows), sum(row[1] for row in rows), len(customers)))
        return out

    def affected(self) -> list[AffectedCustomer]:
        """Customers with at least one failed unit, most failures first."""
        rows = [
            AffectedCustomer(
                customer=customer,
                failures=detail[0],
                requests=self._requests.get(customer, detail[0]),
                first_failure_ns=detail[1],
                last_failure_ns=detail[2],
                operations=tuple(sorted(detail[3])),
                cohorts={key: tuple(sorted(values)) for key, values in sorted(detail[4].items())},
            )
            for customer, detail in self._detail.items()
        ]
        rows.sort(key=lambda row: (-row.failures, row.customer))
        return rows
