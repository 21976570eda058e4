"""The embedded engine: stream OTLP/JSON requests and aggregate units as they complete.

Three parts, each in its own place: reading and decoding lines (:mod:`._reader`), turning a
span into a :class:`Unit` (here), and counting units in a table by their signature
(:mod:`._table`). ``--failure any-span`` also groups spans until a unit's outcome is known
(:mod:`._grouping`). Anything that hands :meth:`EmbeddedAggregates.consume` decoded requests
(files, or a live window) gets the same report from :func:`._slicing.build_report`.

Memory stays bounded as the input grows:

* Only local root spans (and, under ``any-span``, spans with an ERROR status) are looked at
  closely; other spans are counted and dropped.
* Units are counted in a table keyed by their *signature*, the sorted tuple of their candidate
  ``(attribute, value)`` pairs, each pair interned as a small int; units with equal signatures
  share one row. Attributes with more than ``max_values`` distinct values (ids in disguise) are
  projected out, which merges rows: in ``slice`` as soon as a unit's own span attributes show
  that many, and in any case when the table outgrows its budget (50,000 rows to start).

Speed: decoding each line is the floor, so the work past it is kept small. The reader decodes
into msgspec Structs (:mod:`._otlp`) that hold only the fields read here, with attributes left
as raw JSON: a span that is not a local root costs three attribute reads and no parsing of its
attributes. A root's attributes are decoded (a second, typed decode of just them) and turned
into text only when they are candidates (or the customer, or needed by ``--where``); a
resource's attributes are converted once per distinct resource, not once per span; a unit is
counted in its row when it is made; per-value statistics are computed at the end over the
aggregated table.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from prodlens import attributes
from prodlens.analysis._grouping import OpenGroups
from prodlens.analysis._model import (
    HTTP_STATUS_ATTRIBUTES,
    MAX_VALUE_CHARS,
    PSEUDONYM_KEYS,
    ROUTE_ATTRIBUTE,
    SPAN_NAME_ATTRIBUTE,
    AffectedCustomer,
    SliceOptions,
    is_candidate_key,
)
from prodlens.analysis._reader import ReadProgress, load_otlp
from prodlens.analysis._records import CustomerFailures, ResourceInfo, Unit
from prodlens.analysis._table import Row, Signature, SignatureTable

if TYPE_CHECKING:  # msgspec is imported through load_otlp, when files are read
    from prodlens.analysis._otlp import ExportRequest, Resource, Span

_ROOT_KINDS: Final = frozenset({2, 5, "SPAN_KIND_SERVER", "SPAN_KIND_CONSUMER"})
_ERROR_CODES: Final = frozenset({2, "STATUS_CODE_ERROR"})
_REMOTE_PARENT: Final = 0x300
_TABLE_BUDGET: Final = 50_000
_RESOURCE_CACHE: Final = 4_096
_SIGNATURE_CACHE: Final = 16_384
_NO_SPAN: Final = object()
# Roles of an attribute name that is not a candidate (compared by identity, never filled):
_IGNORED: Final[dict[str, int]] = {}  # not needed at all
_WANTED: Final[dict[str, int]] = {}  # its text is needed: a customer attribute, the route...
_STATUS: Final[dict[str, int]] = {}  # an HTTP status: a 5xx fails the unit (failure=root)


def _position(spans: Any, span: Any) -> int:
    """How many spans of a scope were looked at when ``span`` raised (1-based)."""
    if span is _NO_SPAN:
        return 0
    for index, other in enumerate(spans):
        if other is span:
            return index + 1
    return 0


def _is_5xx(text: str) -> bool:
    return len(text) == 3 and text[0] == "5" and text.isdigit()


class EmbeddedAggregates(SignatureTable):
    """Streams requests in, keeps aggregate counts; answers the questions the report asks."""

    # Slots: the hot paths read a dozen attributes per root span, and a slot is the quickest
    # read (an instance dict with more than 30 keys stops sharing them, and every read slows).
    __slots__ = ("_attributes", "_by_root", "_cohort_prefix", "_customer_attributes",
                 "_customers", "_decode_list", "_eager", "_fresh", "_groups", "_missing",
                 "_requests", "_resources", "_roles", "_rows_by_order", "_since", "_sorted",
                 "_span_attributes", "_status_items", "_text", "_track", "_until", "_where",
                 "pseudonymised")

    def __init__(self, options: SliceOptions, *, track_customers: bool = False) -> None:
        super().__init__(options, _TABLE_BUDGET)
        self.pseudonymised = False
        self._track = track_customers
        self._by_root = options.failure == "root"
        otlp = load_otlp()
        self._attributes = otlp.Attributes()
        self._span_attributes = self._attributes.span
        self._text = otlp.attribute_text
        self._decode_list = self._attributes.decode_list
        # absent traceId (not null): msgspec fills in this sentinel, and a unit needs the id
        self._missing: object = otlp.MISSING
        # attribute -> its value -> item id table if it is a candidate, else a role above
        self._roles: dict[str, dict[str, int]] = {}
        self._customer_attributes = options.customer_attributes
        self._since = options.filters.since_ns
        self._until = options.filters.until_ns
        self._where = options.filters.where
        # resource attributes (their raw JSON) -> converted once; cleared when keys are dropped
        self._resources: dict[bytes, ResourceInfo] = {}
        # a unit's items in attribute order -> its signature (sorted); see _record
        self._sorted: dict[tuple[int, ...], Signature] = {}
        # ... and -> (its signature, its row) while no attribute is dropped (rows are merged).
        # Two caches, not one: the sorted signature outlives a drop, and at 20k traces, where
        # the table's drop comes late, one cache cleared at each drop made slice 6% slower.
        self._rows_by_order: dict[tuple[int, ...], tuple[Signature, Row]] = {}
        # slice only (affected lists cohort values of every attribute): values first seen on a
        # unit's own span attributes, per attribute; past max_values it is id-like for sure
        self._eager = not track_customers
        self._fresh: dict[str, int] = {}
        # items of an HTTP status attribute made a candidate (--no-default-excludes) with a
        # 5xx value: they fail a root under failure=root as the _STATUS role does
        self._status_items: set[int] = set()
        self._groups: OpenGroups[Unit] = OpenGroups(options.max_open_groups, self._add_unit)
        # customer -> hashes of their units' traces (a compact array: a set of int objects
        # cost 10x the memory at 5M spans), and what affected lists of their failures
        self._requests: dict[str, array[int]] = {}
        self._customers: dict[str, CustomerFailures] = {}
        self._cohort_prefix = attributes.DEFAULT_COHORT_PREFIX

    @property
    def orphan_groups(self) -> int:
        """Groups with ERROR spans but no root that passed the filters (``any-span`` only)."""
        return self._groups.orphans

    # -- streaming -------------------------------------------------------------------------

    def consume(self, request: ExportRequest, progress: ReadProgress) -> None:
        """Add one ``ExportTraceServiceRequest``. Raises on a structurally broken request."""
        unit = self.options.unit
        for resource_spans in request.resourceSpans:
            resource = self._resource(resource_spans.resource)
            for scope_spans in resource_spans.scopeSpans or ():
                spans = scope_spans.spans or ()
                if unit == "root" and self._by_root:
                    self._consume_roots(spans, resource, progress)
                else:
                    self._consume_other(spans, resource, progress)
        self._groups.trim()

    def _consume_roots(self, spans: Sequence[Span], resource: ResourceInfo,
                       progress: ReadProgress) -> None:
        # The hot loop (--unit root, --failure root): a unit is its local root span alone, so
        # every other span leaves after three attribute reads.
        missing = self._missing
        span: Any = _NO_SPAN
        try:
            for span in spans:
                if (span.parentSpanId and span.kind not in _ROOT_KINDS
                        and (span.flags & _REMOTE_PARENT) != _REMOTE_PARENT):
                    continue
                if span.traceId is missing:
                    raise KeyError("traceId")
                status = span.status
                unit = self._record(resource, span,
                                    status.get("code") in _ERROR_CODES if status else False)
                if unit is not None:
                    self._add_unit(unit, unit.error)
        except BaseException:
            progress.spans += _position(spans, span)
            raise
        progress.spans += len(spans)

    def _consume_other(self, spans: Sequence[Span], resource: ResourceInfo,
                       progress: ReadProgress) -> None:
        unit_kind = self.options.unit
        by_root = self._by_root
        groups = self._groups
        span: Any = _NO_SPAN
        try:
            for span in spans:
                status = span.status
                error = status.get("code") in _ERROR_CODES if status else False
                if unit_kind == "span":
                    unit = self._record(resource, span, error)
                    if unit is not None:
                        self._add_unit(unit, unit.error)
                    continue
                if unit_kind == "root":
                    is_root = not (span.parentSpanId and span.kind not in _ROOT_KINDS
                                   and (span.flags & _REMOTE_PARENT) != _REMOTE_PARENT)
                else:
                    is_root = not span.parentSpanId
                if by_root:  # --unit trace: the trace's root span decides
                    if is_root:
                        if span.traceId is self._missing:
                            raise KeyError("traceId")
                        unit = self._record(resource, span, error)
                        if unit is not None:
                            self._add_unit(unit, unit.error)
                    continue
                if not is_root and not error:
                    continue
                trace = span.traceId
                if trace is self._missing:
                    raise KeyError("traceId")
                if not is_root and not self._in_window(span):
                    continue  # an ERROR outside --since/--until fails no unit that is counted
                group = groups.get((trace, resource.service) if unit_kind == "root" else trace,
                                   error)
                if is_root:
                    unit = self._record(resource, span, error)
                    if unit is None:
                        group.filtered = True
                    else:
                        group.units.append(unit)
        except BaseException:
            progress.spans += _position(spans, span)
            raise
        progress.spans += len(spans)

    def _in_window(self, span: Span) -> bool:
        start = int(span.startTimeUnixNano or 0)
        return not ((self._since is not None and start < self._since)
                    or (self._until is not None and start >= self._until))

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
        if self._by_root and key in HTTP_STATUS_ATTRIBUTES:
            return _STATUS
        if (self._track and key.startswith(self._cohort_prefix)
                and is_candidate_key(key, self.options.exclude, self._customer_attributes)):
            return _WANTED  # a cohort dropped from the table: affected still lists it
        return _IGNORED

    def _count_fresh(self, key: str) -> None:
        # This value is in a unit's signature (filters passed, span attributes win), so the
        # attribute's final count of distinct values is at least this: dropping it now gives
        # the answer a later _shrink would, with a smaller table meanwhile.
        fresh = self._fresh[key] = self._fresh.get(key, 0) + 1
        if fresh > self.options.max_values:
            self._drop({key})

    def _resource(self, resource: Resource | None) -> ResourceInfo:
        """A resource's converted attributes, cached by their JSON text: many spans and lines
        share a resource."""
        cache_key = bytes(resource.attributes) if resource is not None else b""
        found = self._resources.get(cache_key)
        if found is not None:
            return found
        texts = self._attributes.resource(cache_key)
        candidates: dict[str, int] = {}
        cohorts: dict[str, str] = {}
        roles = self._roles
        for key, text in texts.items():
            values = roles.get(key)
            if values is None:
                values = self._role(key)
            candidate = values is not _IGNORED and values is not _WANTED and values is not _STATUS
            if (self._track and key.startswith(self._cohort_prefix)
                    and key not in self._customer_attributes
                    and (candidate or values is _WANTED)):
                cohorts[key] = text
            if not candidate:
                continue
            if len(text) <= MAX_VALUE_CHARS:
                item = values.get(text)
                candidates[key] = item if item is not None else self._intern(key, values, text)
        if len(self._resources) >= _RESOURCE_CACHE:
            self._resources.clear()
        found = self._resources[cache_key] = ResourceInfo(texts, candidates, cohorts)
        return found

    def _answered_5xx(self, value: Any) -> bool:
        """An HTTP status value is 5xx, as its text ``5dd`` would say."""
        code = getattr(value, "intValue", None)  # OTLP/JSON writes int64 as a string
        if code.__class__ is str:
            return _is_5xx(code)
        if isinstance(code, int):
            return 500 <= code <= 599
        text = value.stringValue
        return _is_5xx(text if text.__class__ is str else str(self._text(value)))

    def _intern_status(self, key: str, values: dict[str, int], text: str) -> int:
        item = self._intern(key, values, text)
        if key in HTTP_STATUS_ATTRIBUTES and _is_5xx(text):
            self._status_items.add(item)
        return item

    def _record(self, resource: ResourceInfo, span: Span, error: bool) -> Unit | None:
        # The hot path past decoding: only candidate and wanted attributes are turned into text,
        # and the signature is built from interned ints on a copy of the resource's items.
        track = self._track
        start = 0  # read only where it is used: a time window, or affected's first/last failure
        if track or self._since is not None or self._until is not None:
            start = int(span.startTimeUnixNano or 0)
            if self._since is not None and start < self._since:
                return None
            if self._until is not None and start >= self._until:
                return None
        resource_attributes = resource.texts
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
        # span attributes override resource attributes of the same name, as ClickHouse's
        # mapUpdate(ResourceAttributes, SpanAttributes) does; span.name overrides both
        items = resource.items.copy()
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
            if values is _STATUS:  # a 5xx fails the unit; read as OTLP/JSON writes int64
                if not error and value is not None:
                    code = getattr(value, "intValue", None)
                    error = (len(code) == 3 and code[0] == "5" and code.isdigit()
                             if code.__class__ is str else self._answered_5xx(value))
                continue
            text = value.stringValue if value is not None else None
            if text.__class__ is not str:
                text = self._text(value)
            if values is _WANTED:
                wanted[key] = text
                continue
            if track:
                wanted[key] = text
            try:
                item = values[text]
            except KeyError:  # long values are never interned, so only a miss needs the check
                if len(text) > MAX_VALUE_CHARS:
                    items.pop(key, None)
                    continue
                item = self._intern_status(key, values, text)
                if self._eager and key != SPAN_NAME_ATTRIBUTE:
                    self._count_fresh(key)
            items[key] = item
        if self._status_items and self._by_root and not error:
            error = not self._status_items.isdisjoint(items.values())
        customer = ""
        for attribute_name in self._customer_attributes:
            found = wanted.get(attribute_name) or resource_attributes.get(attribute_name)
            if found:
                customer = found
                if attribute_name in PSEUDONYM_KEYS:
                    self.pseudonymised = True
                break
        # what affected lists of a failure, worked out only if the unit fails (_add_failure)
        listed = (resource, wanted, name) if track else None
        try:
            values = roles[SPAN_NAME_ATTRIBUTE]
        except KeyError:
            values = self._role(SPAN_NAME_ATTRIBUTE)
        if values is not _IGNORED and values is not _WANTED and values is not _STATUS:
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
        # failed is settled when it closes (_add_unit). A new signature gets a row that stays
        # provisional until one of its units closes, so the table grows and is shrunk exactly
        # as if every unit were counted at its close (see SignatureTable._open_row).
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
            row = table.get(signature) or table.setdefault(signature, Row())
            if not dropped:  # (its items in order still hold the dropped attribute's item)
                if len(self._rows_by_order) >= _SIGNATURE_CACHE:
                    self._rows_by_order.clear()
                self._rows_by_order[in_order] = (signature, row)
        self.units += 1
        row.units += 1
        if track and customer:
            seen = self._requests.get(customer)
            if seen is None:
                seen = self._requests[customer] = array("q")
            # 8 bytes a unit; distinct traces are counted at the end
            seen.append(self._trace_hash(trace))
        return Unit(signature, error, epoch, row, trace, customer, start, listed)

    def _trace_hash(self, trace: Any) -> int:
        # what failed traces and a customer's requests are counted by: only failed units (and
        # affected's units) need it, so it is not computed for every unit
        return hash("" if trace is self._missing else str(trace))

    def _cohorts(self, resource: ResourceInfo, wanted: dict[str, str]) -> dict[str, str]:
        """A unit's cohort values as ClickHouse sees them: span attributes over the resource's,
        then values too long to be a subgroup value left out."""
        prefix = self._cohort_prefix
        merged = dict(resource.cohorts)
        for key, text in wanted.items():
            if key.startswith(prefix) and key not in self._customer_attributes:
                merged[key] = text
        return {key: text for key, text in merged.items() if len(text) <= MAX_VALUE_CHARS}

    def finish(self) -> None:
        """Close every open group (call at the end of input)."""
        self._groups.finish()

    def _add_unit(self, unit: Unit, failed: bool) -> None:
        """Close a unit counted by ``_record``: settle its row, and add its failure if any."""
        row = unit.row
        if not failed and row.closed and unit.epoch == self._epoch:
            return  # the usual unit: counted in a row that has closed, and it did not fail
        signature = unit.signature
        if unit.epoch != self._epoch:  # made before attributes were projected out: its row
            signature = self._project(signature)  # has been merged into the projected one
            row = self._table[signature]
        if not row.closed:
            signature, row = self._open_row(signature)
        if not failed:
            return
        customer = unit.customer
        trace = self._trace_hash(unit.trace)
        self.failures += 1
        self._failed_traces.add(trace)
        row.failures += 1
        if row.traces is None:
            row.traces = set()
        row.traces.add(trace)
        if customer:
            if row.customers is None:
                row.customers = set()
            row.customers.add(customer)
            if self._track:
                self._add_failure(customer, unit, trace)

    def _add_failure(self, customer: str, unit: Unit, trace: int) -> None:
        detail = self._customers.get(customer)
        if detail is None:
            detail = self._customers[customer] = CustomerFailures(unit.start)
        detail.failed_traces.add(trace)
        detail.first = min(detail.first, unit.start)
        detail.last = max(detail.last, unit.start)
        if unit.listed is None:
            return
        resource, wanted, name = unit.listed
        detail.operations.add(wanted.get(ROUTE_ATTRIBUTE)
                              or resource.texts.get(ROUTE_ATTRIBUTE) or name)
        for key, value in self._cohorts(resource, wanted).items():
            detail.cohorts.setdefault(key, set()).add(value)

    def _drop(self, too_many: set[str]) -> None:
        """Project id-like attributes out of the table and of every unit still to come."""
        for key in too_many:
            self._roles[key] = self._non_candidate(key)
        self._resources.clear()
        self._rows_by_order.clear()
        super()._drop(too_many)

    def affected(self) -> list[AffectedCustomer]:
        """Customers with at least one failed request (trace), most failures first."""
        rows = [
            AffectedCustomer(
                customer=customer,
                failures=len(detail.failed_traces),
                requests=len(set(self._requests.get(customer, detail.failed_traces))),
                first_failure_ns=detail.first,
                last_failure_ns=detail.last,
                operations=tuple(sorted(detail.operations)),
                cohorts={key: tuple(sorted(values))
                         for key, values in sorted(detail.cohorts.items())},
            )
            for customer, detail in self._customers.items()
        ]
        rows.sort(key=lambda row: (-row.failures, row.customer))
        return rows
