"""The ClickHouse SQL and the embedded engine give the same report on the same data.

The SQL runs in chdb (ClickHouse's engine in-process) over the Collector exporter's exact
``otel_traces`` DDL; the HTTP transport is exercised through a 127.0.0.1 server that hands the
request body to chdb, as ClickHouse's HTTP interface would run it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from chdb import session as chdb_session
from otel_traces import load_into_chdb
from otlp_lines import line, span, write

from prodlens.analysis import (
    ABSENT,
    ClickHouseError,
    Filters,
    SliceOptions,
    affected_clickhouse,
    affected_customers,
    chdb_query,
    slice_clickhouse,
    slice_failures,
)
from prodlens.analysis.synthetic import MeshTraces, SyntheticTraces

TABLE = "otel.otel_traces"


@pytest.fixture(scope="module")
def loaded(planted: SyntheticTraces, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A chdb session holding the planted export (``SPAN_KIND_SERVER`` enum spelling)."""
    scratch = tmp_path_factory.mktemp("chdb")
    session = chdb_session.Session(str(scratch / "db"))
    rows = load_into_chdb(session, list(planted.paths), scratch, style="proto")
    assert rows == planted.spans
    yield session
    session.close()


OPTIONS = [
    SliceOptions(),
    SliceOptions(unit="span"),
    SliceOptions(unit="trace"),
    SliceOptions(filters=Filters(where=(("service.name", "api", True),))),
    SliceOptions(filters=Filters(where=(("prodlens.cohort.plan", "free", False),),
                                 since_ns=1_790_000_030_000_000_000)),
]


@pytest.mark.parametrize("options", OPTIONS, ids=["root", "span", "trace", "where", "not+since"])
def test_same_report(loaded: Any, planted_dir: Path, options: SliceOptions) -> None:
    embedded = slice_failures([planted_dir], options)
    sql = slice_clickhouse(chdb_query(loaded), options, table=TABLE)
    assert (sql.units, sql.failures, sql.tested) == (embedded.units, embedded.failures,
                                                     embedded.tested)
    assert sql.design_effect == pytest.approx(embedded.design_effect)
    assert sql.findings == embedded.findings
    assert sql.skipped_attributes == embedded.skipped_attributes
    assert sql.verdict() == embedded.verdict()


@pytest.mark.parametrize("options", OPTIONS[:1] + OPTIONS[3:], ids=["root", "where", "not+since"])
def test_same_affected_customers(loaded: Any, planted_dir: Path, options: SliceOptions) -> None:
    embedded = affected_customers([planted_dir], options)
    sql = affected_clickhouse(chdb_query(loaded), options, table=TABLE)
    assert sql.customers == embedded.customers
    assert sql.customers


class _ChdbHTTP(BaseHTTPRequestHandler):
    session: Any = None

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        sql, _, fmt = body.rpartition("\nFORMAT ")
        try:
            data = self.session.query(sql, fmt.strip()).bytes()
        except Exception as error:  # answered as ClickHouse does: HTTP 500 with the message
            payload = f"Code: 62. DB::Exception: {error}".encode()
            self.send_response(500)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def http_url(loaded: Any) -> Iterator[str]:
    handler = type("Handler", (_ChdbHTTP,), {"session": loaded})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://default:@127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_http_transport_gives_the_same_report(http_url: str, planted_dir: Path) -> None:
    assert slice_clickhouse(http_url, table=TABLE).findings == \
        slice_failures([planted_dir]).findings


def test_cli_clickhouse_json(http_url: str, planted_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "prodlens", "slice", "--clickhouse", http_url, "--table", TABLE,
         "--format", "json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    local = subprocess.run(
        [sys.executable, "-m", "prodlens", "slice", str(planted_dir), "--format", "json"],
        capture_output=True, text=True, timeout=120)
    import json

    remote_report, local_report = json.loads(result.stdout), json.loads(local.stdout)
    assert remote_report["findings"] == local_report["findings"]
    assert remote_report["verdict"] == local_report["verdict"]


def test_server_errors_are_reported(http_url: str) -> None:
    with pytest.raises(ClickHouseError, match="500"):
        slice_clickhouse(http_url, table="otel.no_such_table")
    result = subprocess.run(
        [sys.executable, "-m", "prodlens", "affected", "--clickhouse", "http://127.0.0.1:9/",
         "--table", TABLE], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "cannot reach ClickHouse" in result.stderr


def test_newer_enum_spelling(loaded: Any, planted_dir: Path) -> None:
    """Newer exporters write ``Server``/``Error``: same answer."""
    loaded.query("CREATE DATABASE IF NOT EXISTS short")
    loaded.query("CREATE TABLE short.otel_traces AS otel.otel_traces")
    loaded.query(
        "INSERT INTO short.otel_traces SELECT * REPLACE ("
        "multiIf(SpanKind = 'SPAN_KIND_SERVER', 'Server', SpanKind = 'SPAN_KIND_CLIENT', "
        "'Client', SpanKind = 'SPAN_KIND_INTERNAL', 'Internal', SpanKind) AS SpanKind, "
        "multiIf(StatusCode = 'STATUS_CODE_ERROR', 'Error', StatusCode = 'STATUS_CODE_UNSET', "
        "'Unset', StatusCode) AS StatusCode) FROM otel.otel_traces")
    assert loaded.query("SELECT count() FROM short.otel_traces WHERE SpanKind = 'Server'",
                        "CSV").bytes() != b"0\n"
    sql = slice_clickhouse(chdb_query(loaded), table="short.otel_traces")
    assert sql.findings == slice_failures([planted_dir]).findings


# -- realistic traces: every behaviour of the embedded engine, the same in SQL ----------------


@pytest.fixture(scope="module")
def mesh_table(loaded: Any, mesh: MeshTraces, tmp_path_factory: pytest.TempPathFactory) -> str:
    rows = load_into_chdb(loaded, list(mesh.paths), tmp_path_factory.mktemp("chdb-mesh"),
                          table="mesh.otel_traces")
    assert rows == mesh.spans
    return "mesh.otel_traces"


MESH_OPTIONS = [
    SliceOptions(),
    SliceOptions(failure="any-span"),
    SliceOptions(unit="trace"),
    SliceOptions(unit="trace", failure="any-span"),
    SliceOptions(unit="span", top_pairs=3),
    SliceOptions(filters=Filters(where=(("service.name", "search", False),))),
]


@pytest.mark.parametrize("options", MESH_OPTIONS,
                         ids=["root", "any-span", "trace", "trace-any", "span", "where"])
def test_same_report_on_real_traces(loaded: Any, mesh_table: str, mesh_dir: Path,
                                    options: SliceOptions) -> None:
    embedded = slice_failures([mesh_dir], options)
    sql = slice_clickhouse(chdb_query(loaded), options, table=mesh_table)
    assert (sql.units, sql.failures, sql.tested) == (embedded.units, embedded.failures,
                                                     embedded.tested)
    assert sql.findings == embedded.findings
    assert sql.skipped_attributes == embedded.skipped_attributes
    assert embedded.findings and any(f.aliases for f in embedded.findings)


def test_same_verdict_second_incident_and_aliases(loaded: Any, mesh_table: str) -> None:
    sql = slice_clickhouse(chdb_query(loaded), table=mesh_table)
    assert dict(sql.findings[0].subgroup) == {"service.version": "1.5.0"}
    assert any(f.interaction and f.subgroup.get("prodlens.cohort.plan") == "free"
               for f in sql.findings)


@pytest.mark.parametrize("failure", ["root", "any-span"])
def test_same_affected_requests_on_real_traces(loaded: Any, mesh_table: str, mesh: MeshTraces,
                                              mesh_dir: Path, failure: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from prodlens.analysis import _embedded

    options = SliceOptions(failure=failure)  # type: ignore[arg-type]
    sql = affected_clickhouse(chdb_query(loaded), options, table=mesh_table)
    monkeypatch.setattr(_embedded, "_TABLE_BUDGET", 100)  # the account cohort dropped midway
    embedded = affected_customers([mesh_dir], options)
    assert sql.customers == embedded.customers
    if failure == "root":
        assert {c.customer: c.failures for c in sql.customers} == mesh.failures


def test_same_answers_on_absence_and_5xx_roots(loaded: Any, tmp_path: Path) -> None:
    spans = []
    for n in range(600):
        attributes: dict[str, object] = {"plan": "pro" if n % 2 else "free"}
        if n < 100:
            attributes["feature.flag"] = "on"
        if n >= 200:
            attributes["cache.hit"] = "true"
        if 100 <= n < 110:
            attributes["cache.hit"] = "x" * 300  # too long: no value, as if absent
        failing = (n < 100 and n % 4 == 0) or (100 <= n < 200 and n % 3 == 0) or n % 50 == 0
        attributes["http.response.status_code"] = 503 if failing and n % 2 else 200
        spans.append(span(n, n + 1, attributes, error=failing and not n % 2))
    path = write(tmp_path / "spans.jsonl", [line("svc", spans)])
    load_into_chdb(loaded, [path], tmp_path, table="absent.otel_traces")
    embedded = slice_failures([path])
    sql = slice_clickhouse(chdb_query(loaded), table="absent.otel_traces")
    assert (sql.units, sql.failures) == (embedded.units, embedded.failures) == (600, 68)
    assert sql.findings == embedded.findings
    found = [dict(f.subgroup) for f in embedded.findings]
    assert {"feature.flag": "on"} in found and {"cache.hit": ABSENT} in found
