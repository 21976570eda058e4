"""The embedded engine: stream OTLP/JSON lines and aggregate units as they complete.

Memory stays bounded as the input grows:

* Only local root spans and spans with an ERROR status are looked at closely; other spans are
  counted and dropped.
* A unit is finalised when its (trace, service) group leaves a window of ``max_open_groups``
  open groups (oldest first) or at the end of input. One service's spans of one trace are
  exported together by its process (the SDK exports children before the root ends), so the
  window only needs to span a few seconds of traffic, not the whole input.
* Finalised units are counted in a table keyed by their *signature*, the sorted tuple of their
  candidate ``(attribute, value)`` pairs, each pair interned as a small int; units with equal
  signatures share one row. Attributes with more than ``max_values`` distinct values (ids in
  disguise) are projected out, which merges rows: in ``slice`` as soon as a unit's own span
  attributes show that many, and in any case when the table outgrows its budget (50,000 rows).

Speed: parsing each line (orjson) is the floor, so the per-span work past it is kept small. A
span that is neither a local root nor an ERROR costs four dict lookups; a root's attributes are
turned into text only when they are candidates (or the customer, or needed by ``--where``);
a resource's attributes are converted once per distinct resource, not once per span; per-value
statistics are computed at the end over the aggregated table.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
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
from prodlens.analysis._reader import ReadProgress, load_json_dumper
from prodlens.analysis._values import attribute_map, value_text

Item = tuple[str, str]
#: A unit's candidate items as sorted item ids (see ``EmbeddedAggregates._items``).
Signature = tuple[int, ...]
#: A unit waiting for its group to close: (signature, own ERROR, epoch, customer, pseudonymous,
#: start ns, operation, trace id).
_Record = tuple[Signature, bool, int, str, bool, int, str, str]
#: A resource's attributes as text, its candidate items (attribute -> item id), its service.
_Resource = tuple[dict[str, str], dict[str, int], str]

_ROOT_KINDS: Final = frozenset({2, 5, "SPAN_KIND_SERVER", "SPAN_KIND_CONSUMER"})
_ERROR_CODES: Final = frozenset({2, "STATUS_CODE_ERROR"})
_REMOTE_PARENT: Final = 0x300
_TABLE_BUDGET: Final = 50_000
_RESOURCE_CACHE: Final = 4_096
_NO_SPAN: Final = object()
# Roles of an attribute name that is not a candidate (compared by identity, never filled):
_IGNORED: Final[dict[str, int]] = {}  # not needed at all
_WANTED: Final[dict[str, int]] = {}  # its text is needed: a customer attribute, or the route


def _position(spans: Any, span: Any) -> int:
    """How many spans of a scope were looked at when ``span`` raised (1-based)."""
    if span is _NO_SPAN:
        return 0
    for index, other in enumerate(spans):
        if other is span:
            return index + 1
    return 0


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
        self._dumps = load_json_dumper()
        # item id -> (attribute, value) and -> attribute; signatures are sorted item ids
        self._items: list[Item] = []
        self._item_keys: list[str] = []
        # attribute -> its value -> item id table if it is a candidate, else _IGNORED/_WANTED
        self._roles: dict[str, dict[str, int]] = {}
        self._customer_attributes = options.customer_attributes
        self._since = options.filters.since_ns
        self._until = options.filters.until_ns
        self._where = options.filters.where
        # resource attributes (serialised) -> converted once; cleared when keys are dropped
        self._resources: dict[bytes, _Resource] = {}
        # signature -> [units, failures, customers among failed units]
        self._table: dict[Signature, list[Any]] = {}
        self._budget = _TABLE_BUDGET
        self._dropped_keys: set[str] = set()
        self._epoch = 0
        # slice only (affected lists cohort values of every attribute): values first seen on a
        # unit's own span attributes, per attribute; past max_values it is id-like for sure
        self._eager = not track_customers
        self._fresh: dict[str, int] = {}
        self._groups: dict[Any, list[Any]] = {}
        self._requests: dict[str, int] = {}
        self._detail: dict[str, list[Any]] = {}
        self._index: dict[int, list[list[Any]]] | None = None
        self._cohort_prefix = attributes.DEFAULT_COHORT_PREFIX

    # -- streaming -------------------------------------------------------------------------

    def consume(self, request: Mapping[str, Any], progress: ReadProgress) -> None:
        """Add one ``ExportTraceServiceRequest``. Raises on a structurally broken request."""
        roots = self.options.unit == "root"
        for resource_spans in request["resourceSpans"]:
            resource = self._resource(resource_spans.get("resource") or {})
            for scope_spans in resource_spans.get("scopeSpans") or ():
                spans = scope_spans.get("spans") or ()
                if roots:
                    self._consume_roots(spans, resource, progress)
                else:
                    self._consume_other(spans, resource, progress)
        if len(self._groups) > self.options.max_open_groups:
            self._flush_oldest(len(self._groups) // 2)

    def _consume_roots(self, spans: Any, resource: _Resource, progress: ReadProgress) -> None:
        # The hot loop (--unit root): most spans are neither local roots nor ERRORs and leave
        # after four lookups, in the order the cheap checks short-circuit.
        groups = self._groups
        service = resource[2]
        span: Any = _NO_SPAN
        try:
            for span in spans:
                status = span.get("status")
                error = bool(status) and status.get("code") in _ERROR_CODES
                if (span.get("parentSpanId") and span.get("kind") not in _ROOT_KINDS
                        and (span.get("flags", 0) & _REMOTE_PARENT) != _REMOTE_PARENT):
                    if not error:
                        continue
                    is_root = False
                else:
                    is_root = True
                key = (span["traceId"], service)
                group = groups.get(key)
                if group is None:
                    group = groups[key] = [error]
                elif error:
                    group[0] = True
                if is_root:
                    record = self._record(resource, span, error)
                    if record is not None:
                        group.append(record)
        except BaseException:
            progress.spans += _position(spans, span)
            raise
        progress.spans += len(spans)

    def _consume_other(self, spans: Any, resource: _Resource, progress: ReadProgress) -> None:
        groups = self._groups
        by_trace = self.options.unit == "trace"
        span: Any = _NO_SPAN
        try:
            for span in spans:
                status = span.get("status")
                error = bool(status) and status.get("code") in _ERROR_CODES
                parent = span.get("parentSpanId")
                if not by_trace:
                    record = self._record(resource, span, error)
                    if record is not None:
                        self._add_unit(record, error)
                    continue
                if parent and not error:
                    continue
                key = span["traceId"]
                group = groups.get(key)
                if group is None:
                    group = groups[key] = [error]
                elif error:
                    group[0] = True
                if not parent:
                    record = self._record(resource, span, error)
                    if record is not None:
                        group.append(record)
        except BaseException:
            progress.spans += _position(spans, span)
            raise
        progress.spans += len(spans)

    def _role(self, key: str) -> dict[str, int]:
        """Decide once per attribute name whether it is a candidate or otherwise wanted."""
        if key not in self._dropped_keys and is_candidate_key(
                key, self.options.exclude, self._customer_attributes):
            role: dict[str, int] = {}
        else:
            role = self._non_candidate(key)
        self._roles[key] = role
        return role

    def _non_candidate(self, key: str) -> dict[str, int]:
        if key in self._customer_attributes or (self._track and key == ROUTE_ATTRIBUTE):
            return _WANTED
        return _IGNORED

    def _count_fresh(self, key: str) -> None:
        # This value is in a unit's signature (filters passed, span attributes win), so the
        # attribute's final count of distinct values is at least this: dropping it now gives
        # the answer a later _shrink would, with a smaller table meanwhile.
        fresh = self._fresh[key] = self._fresh.get(key, 0) + 1
        if fresh > self.options.max_values:
            self._drop({key})

    def _intern(self, key: str, values: dict[str, int], text: str) -> int:
        item = values[text] = len(self._items)
        self._items.append((key, text))
        self._item_keys.append(key)
        return item

    def _resource(self, resource: Mapping[str, Any]) -> _Resource:
        """A resource's converted attributes, cached: many spans and lines share a resource."""
        raw = resource.get("attributes")
        cache_key = self._dumps(raw) if raw else b""
        found = self._resources.get(cache_key)
        if found is not None:
            return found
        texts = attribute_map(raw)
        candidates: dict[str, int] = {}
        roles = self._roles
        for key, text in texts.items():
            values = roles.get(key)
            if values is None:
                values = self._role(key)
            if values is not _IGNORED and values is not _WANTED and len(text) <= MAX_VALUE_CHARS:
                item = values.get(text)
                candidates[key] = item if item is not None else self._intern(key, values, text)
        if len(self._resources) >= _RESOURCE_CACHE:
            self._resources.clear()
        found = self._resources[cache_key] = (texts, candidates, texts.get("service.name", ""))
        return found

    def _record(self, resource: _Resource, span: Mapping[str, Any], error: bool
                ) -> _Record | None:
        # The hot path past parsing: only candidate and wanted attributes are turned into text,
        # and the signature is built from interned ints on a copy of the resource's items.
        start = int(span.get("startTimeUnixNano") or 0)
        if self._since is not None and start < self._since:
            return None
        if self._until is not None and start >= self._until:
            return None
        resource_attributes, resource_items, _ = resource
        name = str(span.get("name", ""))
        raw = span.get("attributes") or ()
        if self._where:
            merged = {**resource_attributes, **attribute_map(raw), SPAN_NAME_ATTRIBUTE: name}
            for key, expected, equal in self._where:
                if (merged.get(key) == expected) != equal:
                    return None
        epoch = self._epoch
        roles = self._roles
        track = self._track
        # span attributes override resource attributes of the same name, as ClickHouse's
        # mapUpdate(ResourceAttributes, SpanAttributes) does; span.name overrides both
        items = resource_items.copy()
        wanted: dict[str, str] = {}
        for attribute in raw:
            key = attribute["key"]
            values = roles.get(key)
            if values is None:
                values = self._role(key)
            if values is _IGNORED:
                continue
            try:
                text = attribute["value"]["stringValue"]
            except (KeyError, TypeError):
                text = None
            if text is None:
                value = attribute.get("value")
                text = value.get("stringValue") if value else None
                if text is None:
                    text = value_text(value)
            if values is _WANTED:
                wanted[key] = text
                continue
            if track and key == ROUTE_ATTRIBUTE:
                wanted[key] = text
            item = values.get(text)
            if item is None:  # long values are never interned, so only a miss needs the check
                if len(text) > MAX_VALUE_CHARS:
                    items.pop(key, None)
                    continue
                item = self._intern(key, values, text)
                if self._eager and key != SPAN_NAME_ATTRIBUTE:
                    self._count_fresh(key)
            items[key] = item
        customer = ""
        pseudo = False
        for attribute_name in self._customer_attributes:
            found = wanted.get(attribute_name) or resource_attributes.get(attribute_name)
            if found:
                customer = found
                pseudo = attribute_name in PSEUDONYM_KEYS
                break
        operation = ""
        if track:
            operation = (wanted.get(ROUTE_ATTRIBUTE) or resource_attributes.get(ROUTE_ATTRIBUTE)
                         or name)
        values = roles.get(SPAN_NAME_ATTRIBUTE)
        if values is None:
            values = self._role(SPAN_NAME_ATTRIBUTE)
        if values is not _IGNORED and values is not _WANTED:
            if len(name) <= MAX_VALUE_CHARS:
                item = values.get(name)
                items[SPAN_NAME_ATTRIBUTE] = (item if item is not None
                                              else self._intern(SPAN_NAME_ATTRIBUTE, values, name))
            else:
                items.pop(SPAN_NAME_ATTRIBUTE, None)
        return (tuple(sorted(items.values())), error, epoch, customer, pseudo, start,
                operation, str(span.get("traceId", "")))

    def _flush_oldest(self, count: int) -> None:
        groups = self._groups
        for key in list(itertools.islice(groups, count)):
            self._close_group(groups.pop(key))

    def finish(self) -> None:
        """Finalise every open group (call at the end of input)."""
        for group in self._groups.values():
            self._close_group(group)
        self._groups = {}

    def _close_group(self, group: list[Any]) -> None:
        # [group has an ERROR, record, record, ...]
        if len(group) == 1:
            if group[0]:
                self.orphan_groups += 1
            return
        failed = group[0]
        for index in range(1, len(group)):
            record = group[index]
            self._add_unit(record, record[1] or failed)

    def _add_unit(self, record: _Record, failed: bool) -> None:
        self.units += 1
        signature = record[0]
        if record[2] != self._epoch:  # made before attributes were projected out
            signature = self._project(signature)
        row = self._table.get(signature)
        if row is None:
            if len(self._table) >= self._budget:
                self._shrink()
                signature = self._project(signature)
            row = self._table.setdefault(signature, [0, 0, None])
        row[0] += 1
        customer = record[3]
        if record[4]:
            self.pseudonymised = True
        if failed:
            self.failures += 1
            self._failed_traces.add(hash(record[7]))  # ints: ~3x smaller than the ids
            row[1] += 1
            if customer:
                if row[2] is None:
                    row[2] = set()
                row[2].add(customer)
        if self._track and customer:
            self._requests[customer] = self._requests.get(customer, 0) + 1
            if failed:
                start = record[5]
                detail = self._detail.get(customer)
                if detail is None:
                    detail = self._detail[customer] = [0, start, start, set(), {}]
                detail[0] += 1
                detail[1] = min(detail[1], start)
                detail[2] = max(detail[2], start)
                detail[3].add(record[6])
                for item in signature:
                    key, value = self._items[item]
                    if key.startswith(self._cohort_prefix):
                        detail[4].setdefault(key, set()).add(value)

    def _project(self, signature: Signature) -> Signature:
        keys = self._item_keys
        dropped = self._dropped_keys
        return tuple(item for item in signature if keys[item] not in dropped)

    def _shrink(self) -> None:
        """Project id-like attributes out of the table when it outgrows its budget."""
        too_many = {key for key, count in self.key_cardinality().items()
                    if count > self.options.max_values}
        if not too_many:
            self._budget *= 2
            return
        self._drop(too_many)

    def _drop(self, too_many: set[str]) -> None:
        """Project id-like attributes out of the table and of every unit still to come."""
        self._dropped_keys |= too_many
        self._epoch += 1
        for key in too_many:
            self._roles[key] = self._non_candidate(key)
        self._resources.clear()
        table: dict[Signature, list[Any]] = {}
        for signature, row in self._table.items():
            projected = self._project(signature)
            merged = table.get(projected)
            if merged is None:
                table[projected] = row
                continue
            merged[0] += row[0]
            merged[1] += row[1]
            if row[2]:
                merged[2] = (merged[2] or set()) | row[2]
        self._table = table

    # -- questions: per-value statistics, computed once over the aggregated table ------------

    def totals(self) -> tuple[int, int, int]:
        """(units, failed units, distinct traces among failed units)."""
        return self.units, self.failures, len(self._failed_traces)

    def key_cardinality(self) -> dict[str, int]:
        """Distinct values per candidate attribute (dropped id-like ones count as huge)."""
        present: set[int] = set()
        for signature in self._table:
            present.update(signature)
        counts: dict[str, int] = {}
        keys = self._item_keys
        for item in present:
            key = keys[item]
            counts[key] = counts.get(key, 0) + 1
        for key in self._dropped_keys:
            counts[key] = max(counts.get(key, 0), self.options.max_values + 1)
        return counts

    def singles(self, keys: Iterable[str]) -> dict[Item, tuple[int, int]]:
        """(units, failures) for every value of the given attributes."""
        wanted = set(keys)
        units = [0] * len(self._items)
        failures = [0] * len(self._items)
        for signature, row in self._table.items():
            count, failed = row[0], row[1]
            for item in signature:
                units[item] += count
                failures[item] += failed
        return {
            self._items[item]: (units[item], failures[item])
            for item, key in enumerate(self._item_keys)
            if units[item] and key in wanted
        }

    def subgroups(self, subgroups: Sequence[tuple[Item, ...]]) -> list[tuple[int, int, int]]:
        """(units, failures, customers among failures) for each subgroup (AND of its items)."""
        index = self._index
        if index is None:
            index = self._index = {}
            for signature, row in self._table.items():
                for item_id in signature:
                    index.setdefault(item_id, []).append(row)
        ids = {item: number for number, item in enumerate(self._items)}
        out: list[tuple[int, int, int]] = []
        for items in subgroups:
            rows = index.get(ids.get(items[0], -1), [])
            for item in items[1:]:
                other = {id(row) for row in index.get(ids.get(item, -1), [])}
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
