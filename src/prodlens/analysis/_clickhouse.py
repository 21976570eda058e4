"""The ClickHouse engine: the same analysis as SQL over the Collector's ``otel_traces`` table.

The table is the one the OpenTelemetry Collector's ClickHouse exporter creates
(``exporter/clickhouseexporter/internal/sqltemplates/traces_table.sql``): ``SpanAttributes`` and
``ResourceAttributes`` maps, ``StatusCode``, ``ParentSpanId``, ``SpanKind``, ``ServiceName``,
``Timestamp``. Only aggregates leave the server. Queries go through a :data:`QueryFunction`, so
the same SQL runs over ClickHouse's HTTP interface (:func:`http_query`, stdlib ``urllib``) and
in-process through chdb (:func:`chdb_query`, used by the tests).

Both spellings of the enums are accepted: ``Server``/``Error`` (current exporter) and
``SPAN_KIND_SERVER``/``STATUS_CODE_ERROR`` (older versions).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from prodlens.analysis._model import (
    ABSENT,
    HTTP_STATUS_ATTRIBUTES,
    MAX_VALUE_CHARS,
    PSEUDONYM_KEYS,
    ROUTE_ATTRIBUTE,
    SPAN_NAME_ATTRIBUTE,
    AffectedCustomer,
    SliceOptions,
    is_candidate_key,
)
from prodlens.analysis._table import Counts

#: Runs one SQL statement and returns its rows (JSONEachRow, parsed).
QueryFunction = Callable[[str], list[dict[str, Any]]]
Item = tuple[str, str]

_TABLE_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_ERROR: Final = "StatusCode IN ('Error', 'STATUS_CODE_ERROR')"
_ROOT_KIND: Final = (
    "SpanKind IN ('Server', 'SPAN_KIND_SERVER', 'Consumer', 'SPAN_KIND_CONSUMER')"
)


class ClickHouseError(Exception):
    """ClickHouse refused a query or could not be reached."""


def quote(text: str) -> str:
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _rows(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def http_query(url: str, *, timeout: float = 300.0) -> QueryFunction:
    """A :data:`QueryFunction` over ClickHouse's HTTP interface.

    Args:
        url: e.g. ``http://user:password@clickhouse:8123/?database=otel``; credentials in the
            URL are sent as ``X-ClickHouse-User``/``X-ClickHouse-Key`` headers.
        timeout: Seconds to wait for each query.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--clickhouse {url!r}: expected http(s)://[user:password@]host:port/")
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    if parts.username:
        headers["X-ClickHouse-User"] = urllib.parse.unquote(parts.username)
    if parts.password:
        headers["X-ClickHouse-Key"] = urllib.parse.unquote(parts.password)
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    endpoint = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))

    def run(sql: str) -> list[dict[str, Any]]:
        request = urllib.request.Request(
            endpoint, data=(sql + "\nFORMAT JSONEachRow").encode("utf-8"), headers=headers,
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return _rows(response.read().decode("utf-8"))
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace").strip()
            raise ClickHouseError(f"ClickHouse answered {error.code}: {detail[:500]}") from None
        except (urllib.error.URLError, OSError) as error:
            raise ClickHouseError(f"cannot reach ClickHouse at {netloc}: {error}") from None

    return run


def chdb_query(session: Any) -> QueryFunction:
    """A :data:`QueryFunction` over an in-process ``chdb.session.Session``."""

    def run(sql: str) -> list[dict[str, Any]]:
        try:
            result = session.query(sql, "JSONEachRow")
        except Exception as error:
            raise ClickHouseError(str(error)) from None
        return _rows(result.bytes().decode("utf-8") if hasattr(result, "bytes") else str(result))

    return run


class ClickHouseAggregates:
    """Answers the report's questions with SQL; nothing but aggregates is fetched."""

    def __init__(self, query: QueryFunction, options: SliceOptions,
                 table: str = "otel_traces") -> None:
        if not _TABLE_RE.match(table):
            raise ValueError(f"table {table!r}: expected [database.]table")
        self._query = query
        self.options = options
        self._table = table
        self.pseudonymised = False
        self._units_sql = self._build_units()

    def _build_units(self) -> str:
        options = self.options
        table = self._table
        attrs = (
            "mapUpdate(mapUpdate(ResourceAttributes, SpanAttributes), "
            f"CAST(map({quote(SPAN_NAME_ATTRIBUTE)}, toString(SpanName)), "
            "'Map(LowCardinality(String), String)'))"
        )
        since = options.filters.since_ns
        errors_since = (f" AND toUnixTimestamp64Nano(Timestamp) >= {int(since)}"
                        if since is not None else "")
        # a span answered 5xx: what failure=root counts besides ERROR
        answered_5xx = " OR ".join(
            f"match(SpanAttributes[{quote(key)}], '^5[0-9][0-9]$')"
            for key in HTTP_STATUS_ATTRIBUTES
        )
        own = f"({_ERROR} OR {answered_5xx})" if options.failure == "root" else f"({_ERROR})"
        if options.unit == "root":
            where = f"(ParentSpanId = '' OR {_ROOT_KIND})"
            failed = own if options.failure == "root" else (
                f"({_ERROR} OR (TraceId, ServiceName) IN (SELECT TraceId, ServiceName "
                f"FROM {table} WHERE {_ERROR}{errors_since}))")
        elif options.unit == "trace":
            where = "ParentSpanId = ''"
            failed = own if options.failure == "root" else (
                f"({_ERROR} OR TraceId IN (SELECT TraceId FROM {table} WHERE {_ERROR}))")
        else:
            where = "1"
            failed = own
        conditions = [where]
        if since is not None:
            conditions.append(f"toUnixTimestamp64Nano(Timestamp) >= {int(since)}")
        if options.filters.until_ns is not None:
            conditions.append(f"toUnixTimestamp64Nano(Timestamp) < {int(options.filters.until_ns)}")
        customer_cases: list[str] = []
        pseudo_cases: list[str] = []
        for name in options.customer_attributes:
            customer_cases += [f"a[{quote(name)}] != ''", f"a[{quote(name)}]"]
            pseudo_cases += [f"a[{quote(name)}] != ''", "1" if name in PSEUDONYM_KEYS else "0"]
        customer = f"multiIf({', '.join(customer_cases)}, '')" if customer_cases else "''"
        pseudo = f"multiIf({', '.join(pseudo_cases)}, 0)" if pseudo_cases else "0"
        where_attrs = []
        for key, value, equal in options.filters.where:
            test = f"(mapContains(a, {quote(key)}) AND a[{quote(key)}] = {quote(value)})"
            where_attrs.append(test if equal else f"NOT {test}")
        outer = " AND ".join(where_attrs) or "1"
        return (
            f"SELECT a AS attrs, start_ns, failed, trace_id, {customer} AS customer, "
            f"{pseudo} AS pseudo, "
            f"if(a[{quote(ROUTE_ATTRIBUTE)}] != '', a[{quote(ROUTE_ATTRIBUTE)}], "
            f"a[{quote(SPAN_NAME_ATTRIBUTE)}]) AS operation "
            f"FROM (SELECT {attrs} AS a, toUnixTimestamp64Nano(Timestamp) AS start_ns, "
            f"{failed} AS failed, TraceId AS trace_id FROM {table} "
            f"WHERE {' AND '.join(conditions)}) WHERE {outer}"
        )

    def _run(self, select: str) -> list[dict[str, Any]]:
        return self._query(f"WITH units AS ({self._units_sql}) {select}")

    def totals(self) -> tuple[int, int, int]:
        """(units, failed units, distinct failed traces); learns if customers are pseudonyms."""
        row = self._run("SELECT count() AS n, countIf(failed) AS f, max(pseudo) AS p, "
                        "uniqExactIf(trace_id, failed) AS t FROM units")
        if not row:
            return 0, 0, 0
        self.pseudonymised = bool(int(row[0]["p"] or 0))
        return int(row[0]["n"]), int(row[0]["f"]), int(row[0]["t"])

    def key_cardinality(self) -> dict[str, int]:
        """Distinct values (of at most MAX_VALUE_CHARS characters) per candidate attribute."""
        rows = self._run(
            "SELECT k, uniqExact(v) AS n FROM units ARRAY JOIN mapKeys(attrs) AS k, "
            f"mapValues(attrs) AS v WHERE lengthUTF8(v) <= {MAX_VALUE_CHARS} GROUP BY k"
        )
        return {
            str(row["k"]): int(row["n"]) for row in rows
            if is_candidate_key(str(row["k"]), self.options.exclude,
                                self.options.customer_attributes)
        }

    def singles(self, keys: Iterable[str]) -> dict[Item, Counts]:
        """Counts per value of the given attributes."""
        wanted = sorted(keys)
        if not wanted:
            return {}
        rows = self._run(
            "SELECT k, v, count() AS n, countIf(failed) AS f, "
            "uniqExactIf(trace_id, failed) AS t FROM units ARRAY JOIN "
            "mapKeys(attrs) AS k, mapValues(attrs) AS v WHERE k IN "
            f"({', '.join(quote(k) for k in wanted)}) AND lengthUTF8(v) <= {MAX_VALUE_CHARS} "
            "GROUP BY k, v"
        )
        return {(str(r["k"]), str(r["v"])): Counts(int(r["n"]), int(r["f"]), int(r["t"]))
                for r in rows}

    def subgroups(self, subgroups: Sequence[tuple[Item, ...]]) -> list[Counts]:
        """Counts (with customers among failures) per subgroup, in one query; a value
        :data:`ABSENT` means units without the attribute (as long values count as absent in
        the embedded engine, so they do here)."""
        if not subgroups:
            return []
        columns = []
        for index, items in enumerate(subgroups):
            cond = " AND ".join(
                f"NOT (mapContains(attrs, {quote(k)}) AND lengthUTF8(attrs[{quote(k)}]) <= "
                f"{MAX_VALUE_CHARS})" if v == ABSENT else
                f"(mapContains(attrs, {quote(k)}) AND attrs[{quote(k)}] = {quote(v)})"
                for k, v in items
            )
            columns.append(
                f"countIf({cond}) AS n{index}, countIf(failed AND {cond}) AS f{index}, "
                f"uniqExactIf(trace_id, failed AND {cond}) AS t{index}, "
                f"uniqExactIf(customer, failed AND customer != '' AND {cond}) AS c{index}"
            )
        row = self._run(f"SELECT {', '.join(columns)} FROM units")[0]
        return [Counts(int(row[f"n{i}"]), int(row[f"f{i}"]), int(row[f"t{i}"]),
                       int(row[f"c{i}"]))
                for i in range(len(subgroups))]

    def affected(self) -> list[AffectedCustomer]:
        """Customers with at least one failed request (trace), most failures first."""
        from prodlens import attributes

        prefix = quote(attributes.DEFAULT_COHORT_PREFIX)
        rows = self._run(
            "SELECT customer, uniqExact(trace_id) AS requests, "
            "uniqExactIf(trace_id, failed) AS failures, "
            "minIf(start_ns, failed) AS first_ns, maxIf(start_ns, failed) AS last_ns, "
            "groupUniqArrayIf(operation, failed) AS operations, "
            "groupUniqArrayArrayIf(arrayFilter(kv -> startsWith(kv.1, "
            f"{prefix}) AND lengthUTF8(kv.2) <= {MAX_VALUE_CHARS}, "
            "CAST(attrs, 'Array(Tuple(String, String))')), failed) AS cohorts "
            "FROM units WHERE customer != '' GROUP BY customer HAVING failures > 0"
        )
        out = []
        for row in rows:
            cohorts: dict[str, set[str]] = {}
            for pair in row["cohorts"]:
                key, value = (pair["1"], pair["2"]) if isinstance(pair, dict) else pair
                if is_candidate_key(key, self.options.exclude, self.options.customer_attributes):
                    cohorts.setdefault(key, set()).add(value)
            out.append(AffectedCustomer(
                customer=str(row["customer"]),
                failures=int(row["failures"]),
                requests=int(row["requests"]),
                first_failure_ns=int(row["first_ns"]),
                last_failure_ns=int(row["last_ns"]),
                operations=tuple(sorted(str(op) for op in row["operations"])),
                cohorts={key: tuple(sorted(values)) for key, values in sorted(cohorts.items())},
            ))
        out.sort(key=lambda row: (-row.failures, row.customer))
        return out

