"""The embedded engine: stream OTLP/JSON lines and aggregate units as they complete.

Memory stays bounded as the input grows:

* Only local root spans and spans with an ERROR status are looked at closely; other spans are
  counted and dropped.
* A unit is finalised when its (trace, service) group leaves a window of ``max_open_groups``
  open groups (oldest first) or at the end of input. One service's spans of one trace are
  exported together by its process (the SDK exports children before the root ends), so the
  window only needs to span a few seconds of traffic, not the whole input.
* Units are counted in a table keyed by their *signature*, the sorted tuple of their candidate
  ``(attribute, value)`` pairs, each pair interned as a small int (:mod:`._table`); units with
  equal signatures share one row. Attributes with more than ``max_values`` distinct values (ids
  in disguise) are projected out, which merges rows: in ``slice`` as soon as a unit's own span
  attributes show that many, and in any case when the table outgrows its budget (50,000 rows).

Speed: decoding each line is the floor, so the work past it is kept small. The reader decodes
into msgspec Structs (:mod:`._otlp`) that hold only the fields read here, with attributes left
as raw JSON: a span that is neither a local root nor an ERROR costs four attribute reads and no
parsing of its attributes. A root's attributes are decoded (a second, typed decode of just
them) and turned into text only when they are candidates (or the customer, or needed by
``--where``); a resource's attributes are converted once per distinct resource, not once per
span; a unit is counted in its row when it is made, so closing a group that did not fail costs
a check per unit; per-value statistics are computed at the end over the aggregated table.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

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
from prodlens.analysis._reader import ReadProgress, load_otlp
from prodlens.analysis._table import Signature, SignatureTable

if TYPE_CHECKING:  # msgspec is imported through load_otlp, when files are read
    from prodlens.analysis._otlp import ExportRequest, Resource, Span

#: A unit waiting for its group to close: (signature, own ERROR, epoch, customer, pseudonymous,
#: start ns, operation, trace id, the table row it was counted in).
_Record = tuple[Signature, bool, int, str, bool, int, str, str, list[Any]]
#: A resource's attributes as text, its candidate items (attribute -> item id), its service.
_Resource = tuple[dict[str, str], dict[str, int], str]

_ROOT_KINDS: Final = frozenset({2, 5, "SPAN_KIND_SERVER", "SPAN_KIND_CONSUMER"})
_ERROR_CODES: Final = frozenset({2, "STATUS_CODE_ERROR"})
_REMOTE_PARENT: Final = 0x300
_TABLE_BUDGET: Final = 50_000
_RESOURCE_CACHE: Final = 4_096
_SIGNATURE_CACHE: Final = 16_384
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


class EmbeddedAggregates(SignatureTable):
    """Streams requests in, keeps aggregate counts; answers the questions the report asks."""

    # Slots: the hot paths read a dozen attributes per root span, and a slot is the quickest
    # read (an instance dict with more than 30 keys stops sharing them, and every read slows).
    __slots__ = ("_attributes", "_cohort_prefix", "_customer_attributes", "_decode_list",
                 "_detail", "_eager", "_fresh", "_groups", "_missing", "_requests", "_resources",
                 "_roles", "_rows_by_order", "_since", "_sorted", "_span_attributes", "_text",
                 "_track", "_until", "_where", "orphan_groups", "pseudonymised")

    def __init__(self, options: SliceOptions, *, track_customers: bool = False) -> None:
        super().__init__(options, _TABLE_BUDGET)
        self.pseudonymised = False
        self.orphan_groups = 0
        self._track = track_customers
        otlp = load_otlp()
        self._attributes = otlp.Attributes()
        self._span_attributes = self._attributes.span
        self._text = otlp.attribute_text
        self._decode_list = self._attributes.decode_list
        # absent traceId (not null): msgspec fills in this sentinel, and a unit needs the id
        self._missing: object = otlp.MISSING
        # attribute -> its value -> item id table if it is a candidate, else _IGNORED/_WANTED
        self._roles: dict[str, dict[str, int]] = {}
        self._customer_attributes = options.customer_attributes
        self._since = options.filters.since_ns
        self._until = options.filters.until_ns
        self._where = options.filters.where
        # resource attributes (their raw JSON) -> converted once; cleared when keys are dropped
        self._resources: dict[bytes, _Resource] = {}
        # a unit's items in attribute order -> its signature (sorted); see _record
        self._sorted: dict[tuple[int, ...], Signature] = {}
        # ... and -> (its signature, its row) while no attribute is dropped (rows are merged).
        # Two caches, not one: the sorted signature outlives a drop, and at 20k traces, where
        # the table's drop comes late, one cache cleared at each drop made slice 6% slower.
        self._rows_by_order: dict[tuple[int, ...], tuple[Signature, list[Any]]] = {}
        # slice only (affected lists cohort values of every attribute): values first seen on a
        # unit's own span attributes, per attribute; past max_values it is id-like for sure
        self._eager = not track_customers
        self._fresh: dict[str, int] = {}
        self._groups: dict[Any, list[Any]] = {}
        self._requests: dict[str, int] = {}
        self._detail: dict[str, list[Any]] = {}
        self._cohort_prefix = attributes.DEFAULT_COHORT_PREFIX

    # -- streaming -------------------------------------------------------------------------

    def consume(self, request: ExportRequest, progress: ReadProgress) -> None:
        """Add one ``ExportTraceServiceRequest``. Raises on a structurally broken request."""
        roots = self.options.unit == "root"
        for resource_spans in request.resourceSpans:
            resource = self._resource(resource_spans.resource)
            for scope_spans in resource_spans.scopeSpans or ():
                spans = scope_spans.spans or ()
                if roots:
                    self._consume_roots(spans, resource, progress)
                else:
                    self._consume_other(spans, resource, progress)
        if len(self._groups) > self.options.max_open_groups:
            self._flush_oldest(len(self._groups) // 2)

    def _consume_roots(self, spans: Sequence[Span], resource: _Resource,
                       progress: ReadProgress) -> None:
        # The hot loop (--unit root): most spans are neither local roots nor ERRORs and leave
        # after four attribute reads, in the order the cheap checks short-circuit.
        groups = self._groups
        service = resource[2]
        missing = self._missing
        span: Any = _NO_SPAN
        try:
            for span in spans:
                status = span.status
                error = status.get("code") in _ERROR_CODES if status else False
                if (span.parentSpanId and span.kind not in _ROOT_KINDS
                        and (span.flags & _REMOTE_PARENT) != _REMOTE_PARENT):
                    if not error:
                        continue
                    is_root = False
                else:
                    is_root = True
                trace = span.traceId
                if trace is missing:
                    raise KeyError("traceId")
                key = (trace, service)
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

    def _consume_other(self, spans: Sequence[Span], resource: _Resource,
                       progress: ReadProgress) -> None:
        groups = self._groups
        by_trace = self.options.unit == "trace"
        span: Any = _NO_SPAN
        try:
            for span in spans:
                status = span.status
                error = status.get("code") in _ERROR_CODES if status else False
                parent = span.parentSpanId
                if not by_trace:
                    record = self._record(resource, span, error)
                    if record is not None:
                        self._add_unit(record, error)
                    continue
                if parent and not error:
                    continue
                key = span.traceId
                if key is self._missing:
                    raise KeyError("traceId")
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

    def _resource(self, resource: Resource | None) -> _Resource:
        """A resource's converted attributes, cached by their JSON text: many spans and lines
        share a resource."""
        cache_key = bytes(resource.attributes) if resource is not None else b""
        found = self._resources.get(cache_key)
        if found is not None:
            return found
        texts = self._attributes.resource(cache_key)
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

    def _record(self, resource: _Resource, span: Span, error: bool) -> _Record | None:
        # The hot path past decoding: only candidate and wanted attributes are turned into text,
        # and the signature is built from interned ints on a copy of the resource's items.
        start = int(span.startTimeUnixNano or 0)
        if self._since is not None and start < self._since:
            return None
        if self._until is not None and start >= self._until:
            return None
        resource_attributes, resource_items, _ = resource
        name = str(span.name)
        raw = span.attributes
        try:  # the typed decoder directly; Attributes.span reads other shapes the loose way
            span_attributes = (self._decode_list(raw) or ()) if raw else ()
        except (ValueError, RecursionError):
            span_attributes = self._span_attributes(raw)
        if self._where:
            merged = {**resource_attributes, **self._attributes.texts(span_attributes),
                      SPAN_NAME_ATTRIBUTE: name}
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
        # (subscripts in try blocks, not .get(): a miss is rare here, and a subscript is a
        # specialised instruction where .get() is a method call)
        for attribute in span_attributes:
            key = attribute.key
            try:
                values = roles[key]
            except KeyError:
                values = self._role(key)
            if values is _IGNORED:
                continue
            value = attribute.value
            text = value.stringValue if value is not None else None
            if text.__class__ is not str:
                text = self._text(value)
            if values is _WANTED:
                wanted[key] = text
                continue
            if track and key == ROUTE_ATTRIBUTE:
                wanted[key] = text
            try:
                item = values[text]
            except KeyError:  # long values are never interned, so only a miss needs the check
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
        try:
            values = roles[SPAN_NAME_ATTRIBUTE]
        except KeyError:
            values = self._role(SPAN_NAME_ATTRIBUTE)
        if values is not _IGNORED and values is not _WANTED:
            try:
                items[SPAN_NAME_ATTRIBUTE] = values[name]
            except KeyError:
                if len(name) <= MAX_VALUE_CHARS:
                    items[SPAN_NAME_ATTRIBUTE] = self._intern(SPAN_NAME_ATTRIBUTE, values, name)
                else:
                    items.pop(SPAN_NAME_ATTRIBUTE, None)
        trace = span.traceId
        # Units of one kind list their attributes in one order: the sorted signature is looked
        # up by the items in that order, so it is sorted once per order, and units with equal
        # signatures share one tuple (table lookups then match it by identity).
        in_order = tuple(items.values())
        # The unit is counted now, while its signature is fresh in the CPU cache; whether it
        # failed is settled when its group closes (_add_unit). A new signature gets a row that
        # stays provisional until one of its units closes, so the table grows and is shrunk
        # exactly as if every unit were counted at its group's close (see _open_row).
        known = self._rows_by_order.get(in_order)
        if known is not None and epoch == self._epoch:
            signature, row = known
        else:
            cached = self._sorted.get(in_order)
            if cached is None:
                if len(self._sorted) >= _SIGNATURE_CACHE:
                    self._sorted.clear()
                cached = self._sorted[in_order] = tuple(sorted(in_order))
            signature = cached
            dropped = epoch != self._epoch
            if dropped:  # this very unit had an attribute dropped (_count_fresh)
                signature = self._project(signature)
                epoch = self._epoch
            table = self._table
            row = table.get(signature) or table.setdefault(signature, [0, 0, None, False])
            if not dropped:  # (its items in order still hold the dropped attribute's item)
                if len(self._rows_by_order) >= _SIGNATURE_CACHE:
                    self._rows_by_order.clear()
                self._rows_by_order[in_order] = (signature, row)
        self.units += 1
        row[0] += 1
        if pseudo:
            self.pseudonymised = True
        if track and customer:
            self._requests[customer] = self._requests.get(customer, 0) + 1
        return (signature, error, epoch, customer, pseudo, start, operation,
                "" if trace is self._missing else str(trace), row)

    def _flush_oldest(self, count: int) -> None:
        groups = self._groups
        for key in list(itertools.islice(groups, count)):
            group = groups.pop(key)
            if len(group) == 2 and not group[0]:  # the usual group: one root, no ERROR
                record = group[1]
                if not record[1] and record[2] == self._epoch and record[8][3]:
                    continue  # as _close_group would: counted in a row that has closed
            self._close_group(group)

    def finish(self) -> None:
        """Finalise every open group (call at the end of input)."""
        for group in self._groups.values():
            self._close_group(group)
        self._groups = {}

    def _close_group(self, group: list[Any]) -> None:
        # [group has an ERROR, record, record, ...]
        failed = group[0]
        if len(group) == 1:
            if failed:
                self.orphan_groups += 1
            return
        for record in itertools.islice(group, 1, None):
            # else: counted in a row that a unit has closed into, and it did not fail
            if failed or record[1] or record[2] != self._epoch or not record[8][3]:
                self._add_unit(record, failed or record[1])

    def _add_unit(self, record: _Record, failed: bool) -> None:
        """Close a unit counted by ``_record``: settle its row, and add its failure if any."""
        signature = record[0]
        row = record[8]
        if record[2] != self._epoch:  # made before attributes were projected out: its row has
            signature = self._project(signature)  # been merged into the projected one
            row = self._table[signature]
        if not row[3]:
            signature, row = self._open_row(signature)
        if not failed:
            return
        customer = record[3]
        self.failures += 1
        self._failed_traces.add(hash(record[7]))  # ints: ~3x smaller than the ids
        row[1] += 1
        if customer:
            if row[2] is None:
                row[2] = set()
            row[2].add(customer)
        if self._track and customer:
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

    def _drop(self, too_many: set[str]) -> None:
        """Project id-like attributes out of the table and of every unit still to come."""
        for key in too_many:
            self._roles[key] = self._non_candidate(key)
        self._resources.clear()
        self._rows_by_order.clear()
        super()._drop(too_many)

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
