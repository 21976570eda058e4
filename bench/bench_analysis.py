"""Benchmark ``prodlens slice`` against the parse floor and two engines' plain GROUP BY.

Contenders, each measured in its own subprocess so that peak memory (ru_maxrss) is honest:

* ``read floor``: read every line as the engine does and do nothing else (on gzipped files: the
  cost of inflating them with ISA-L's igzip, on the reading thread, as the reader does);
* ``GzipFile read``: the same through the standard library's :class:`gzip.GzipFile` on the
  reading thread, as the reader did before (gzipped files only);
* ``orjson floor``: parse every line with orjson and do nothing else (the issue's floor);
* ``msgspec floor``: decode every line into the Structs the embedded engine reads
  (``prodlens.analysis._otlp``) and do nothing else: the floor of the engine as built;
* ``prodlens slice``: the embedded engine, the full analysis (units, singles, pairs, test);
* ``prodlens affected``: the embedded engine listing affected customers;
* ``duckdb group-by``: DuckDB reading the same files, failures GROUP BY one span attribute;
* ``chdb group-by``: chdb (ClickHouse in-process), the same plain GROUP BY;
* ``chdb load+slice``: load the files into chdb, then run the ClickHouse SQL;
* ``slice (baseline)``, with ``--baseline SRC``: ``prodlens slice`` from another source tree
  (``SRC/prodlens``), e.g. a copy taken before a change, for a before/after in one run.

The floors read lines the way the engine does (``prodlens.analysis._reader._open``: a 1 MiB
buffer, as one line is one export request of hundreds of KB; gzip inflated by ISA-L's igzip), so
a ratio to a floor measures the work past reading and parsing.

Data: synthetic exports written through the real SDK by ``prodlens.analysis.synthetic``
(cached under ``--data-dir``). Run::

    /work/venv/bin/python bench/bench_analysis.py                       # 20k traces, ~30 s
    /work/venv/bin/python bench/bench_analysis.py --sizes 20000,200000  # + 1.1M spans, ~4 min
    /work/venv/bin/python bench/bench_analysis.py --baseline /tmp/before  # + a copy of src/

The first run of a size generates its data through the SDK (20k traces ~10 s, 200k ~95 s).
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ATTRIBUTE = "prodlens.cohort.region"
READ_FLOORS = ("read floor", "GzipFile read")
CONTENDERS = ("read floor", "GzipFile read", "orjson floor", "msgspec floor", "prodlens slice",
              "prodlens affected", "duckdb group-by", "chdb group-by", "chdb load+slice")
BASELINE = "slice (baseline)"
_CH_VALUE = (
    "multiIf(JSONHas(v, 'stringValue'), JSONExtractString(v, 'stringValue'), "
    "JSONHas(v, 'intValue'), JSONExtractString(v, 'intValue'), "
    "JSONHas(v, 'boolValue'), if(JSONExtractBool(v, 'boolValue'), 'true', 'false'), "
    "JSONHas(v, 'doubleValue'), toString(JSONExtractFloat(v, 'doubleValue')), "
    "JSONExtractRaw(v))"
)
_CH_MAP = (
    "CAST((arrayMap(a -> JSONExtractString(a, 'key'), {0}), "
    "arrayMap(a -> (arrayMap(v -> " + _CH_VALUE + ", [JSONExtractRaw(a, 'value')])[1]), {0})), "
    "'Map(String, String)')"
)
_DUCKDB_ATTRS = "STRUCT(key VARCHAR, value STRUCT(stringValue VARCHAR))[]"
_DUCKDB_COLUMNS = (
    "{resourceSpans: 'STRUCT(resource STRUCT(attributes " + _DUCKDB_ATTRS + "), "
    "scopeSpans STRUCT(spans STRUCT(traceId VARCHAR, status STRUCT(code INTEGER), "
    "attributes " + _DUCKDB_ATTRS + ")[])[])[]'}"
)


def _pattern(directory: str) -> str:
    """``*.jsonl``, or ``*.jsonl.gz`` in a gzipped copy (see ``ensure_gzip``)."""
    return "*.jsonl.gz" if directory.endswith("-gz") else "*.jsonl"


def _files(directory: str) -> list[str]:
    return sorted(glob.glob(os.path.join(directory, _pattern(directory))))


def run_contender(name: str, directory: str) -> dict[str, Any]:
    """Run one contender in this process; return seconds and its result summary."""
    if name in ("orjson floor", "msgspec floor", *READ_FLOORS):
        return parse_floor(name, directory)
    if name == "prodlens slice":
        from prodlens.analysis import slice_failures

        start = time.perf_counter()
        report = slice_failures([directory])
        return {"seconds": time.perf_counter() - start, "result": report.verdict()}
    if name == "prodlens affected":
        from prodlens.analysis import affected_customers

        start = time.perf_counter()
        affected = affected_customers([directory])
        return {"seconds": time.perf_counter() - start,
                "result": f"{len(affected.customers)} customers"}
    if name == "duckdb group-by":
        import duckdb

        start = time.perf_counter()
        rows = duckdb.sql(
            "WITH r AS (SELECT unnest(resourceSpans) AS rs FROM read_json("
            f"'{directory}/{_pattern(directory)}', format='newline_delimited', "
            f"columns={_DUCKDB_COLUMNS})), "
            "s AS (SELECT unnest(sc.spans) AS span FROM "
            "(SELECT unnest(rs.scopeSpans) AS sc FROM r)) "
            f"SELECT list_filter(span.attributes, lambda a: a.key = '{ATTRIBUTE}')[1]"
            ".value.stringValue AS v, count(*) AS n, count(*) FILTER (WHERE span.status.code = 2)"
            " AS f FROM s GROUP BY v ORDER BY v"
        ).fetchall()
        return {"seconds": time.perf_counter() - start, "result": str(rows)}
    if name == "chdb group-by":
        import chdb

        start = time.perf_counter()
        result = chdb.query(
            "SELECT JSONExtractString(arrayFirst(a -> JSONExtractString(a, 'key') = "
            f"'{ATTRIBUTE}', JSONExtractArrayRaw(span, 'attributes')), 'value', 'stringValue') "
            "AS v, count() AS n, countIf(JSONExtractInt(span, 'status', 'code') = 2) AS f "
            "FROM (SELECT arrayJoin(JSONExtractArrayRaw(sc, 'spans')) AS span FROM "
            "(SELECT arrayJoin(JSONExtractArrayRaw(rs, 'scopeSpans')) AS sc FROM "
            "(SELECT arrayJoin(JSONExtractArrayRaw(json, 'resourceSpans')) AS rs FROM "
            f"file('{directory}/{_pattern(directory)}', 'JSONAsString')))) GROUP BY v ORDER BY v",
            "CSV",
        )
        return {"seconds": time.perf_counter() - start,
                "result": result.bytes().decode().strip().replace("\n", " ")}
    if name == "chdb load+slice":
        return chdb_load_and_slice(directory)
    raise SystemExit(f"unknown contender {name!r}")


def parse_floor(name: str, directory: str) -> dict[str, Any]:
    """Read every line as the engine does, and parse it (orjson into dicts, or msgspec into the
    engine's Structs) or not (the read floors)."""
    from prodlens.analysis._reader import MAX_LINE_BYTES, READ_BUFFER, _open  # no orjson, msgspec

    def parse(line: bytes) -> object:
        return line

    if name == "orjson floor":
        import orjson

        parse = orjson.loads
    elif name == "msgspec floor":
        from prodlens.analysis._otlp import decoder

        parse = decoder().decode
    start = time.perf_counter()
    lines = 0
    for path in _files(directory):
        if name == "GzipFile read":
            raw = open(path, "rb", buffering=READ_BUFFER)  # noqa: SIM115 - closed below
            stream: Any = gzip.GzipFile(fileobj=raw, mode="rb")
        else:
            stream, raw = _open(path)
        with raw, stream:
            while line := stream.readline(MAX_LINE_BYTES + 1):
                parse(line)
                lines += 1
    return {"seconds": time.perf_counter() - start, "result": f"{lines} lines"}


def chdb_load_and_slice(directory: str) -> dict[str, Any]:
    """The alternative embedded engine: load the files into chdb, then run the ClickHouse SQL."""
    import tempfile

    from chdb import session as chdb_session

    from prodlens.analysis import chdb_query, slice_clickhouse

    start = time.perf_counter()
    session = chdb_session.Session(tempfile.mkdtemp(prefix="prodlens-bench-chdb-"))
    session.query(
        "CREATE TABLE spans (Timestamp DateTime64(9), TraceId String, SpanId String, "
        "ParentSpanId String, SpanName LowCardinality(String), SpanKind LowCardinality(String), "
        "ServiceName LowCardinality(String), ResourceAttributes Map(LowCardinality(String), "
        "String), SpanAttributes Map(LowCardinality(String), String), "
        "StatusCode LowCardinality(String)) ENGINE = MergeTree ORDER BY tuple()"
    )
    resource_map = _CH_MAP.format("JSONExtractArrayRaw(rs, 'resource', 'attributes')")
    span_map = _CH_MAP.format("JSONExtractArrayRaw(span, 'attributes')")
    session.query(
        "INSERT INTO spans SELECT fromUnixTimestamp64Nano(toInt64(JSONExtractString(span, "
        "'startTimeUnixNano'))), JSONExtractString(span, 'traceId'), "
        "JSONExtractString(span, 'spanId'), JSONExtractString(span, 'parentSpanId'), "
        "JSONExtractString(span, 'name'), ['Unspecified', 'Internal', 'Server', 'Client', "
        "'Producer', 'Consumer'][JSONExtractInt(span, 'kind') + 1], res['service.name'], res, "
        f"{span_map}, ['Unset', 'Ok', 'Error'][JSONExtractInt(span, 'status', 'code') + 1] "
        f"FROM (SELECT {resource_map} AS res, arrayJoin(JSONExtractArrayRaw(sc, 'spans')) "
        "AS span FROM (SELECT rs, arrayJoin(JSONExtractArrayRaw(rs, 'scopeSpans')) AS sc FROM "
        "(SELECT arrayJoin(JSONExtractArrayRaw(json, 'resourceSpans')) AS rs FROM "
        f"file('{directory}/{_pattern(directory)}', 'JSONAsString'))))"
    )
    loaded = time.perf_counter() - start
    report = slice_clickhouse(chdb_query(session), table="spans")
    return {"seconds": time.perf_counter() - start,
            "result": f"(load {loaded:.2f} s) {report.verdict()}"}


def run_once(name: str, directory: str, baseline: str | None = None) -> dict[str, Any]:
    """Run a contender once in a fresh interpreter (its own peak RSS)."""
    env = None
    if name == BASELINE:
        assert baseline is not None
        name = "prodlens slice"
        env = {**os.environ, "PYTHONPATH": os.path.abspath(baseline)}
    output = subprocess.run(
        [sys.executable, __file__, "--contender", name, "--dir", directory],
        capture_output=True, text=True, check=True, env=env,
    ).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def measure_all(names: list[str], directory: str, repeat: int, baseline: str | None = None
                ) -> dict[str, dict[str, Any]]:
    """Every contender ``repeat`` times, interleaved (round 1 of each, then round 2...), so a
    busy spell of the machine hits them alike; the median time and the largest RSS are kept."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for _ in range(repeat):
        for name in names:
            runs[name].append(run_once(name, directory, baseline))
    out = {}
    for name, outcomes in runs.items():
        ordered = sorted(outcomes, key=lambda run: float(run["seconds"]))
        median = dict(ordered[len(ordered) // 2])
        median["peak_rss_mb"] = max(float(run["peak_rss_mb"]) for run in outcomes)
        out[name] = median
    return out


def ensure_data(data_dir: Path, traces: int) -> tuple[str, int]:
    """Generate (once) a synthetic export of ``traces`` requests; return (directory, spans)."""
    directory = data_dir / f"traces-{traces}"
    marker = directory / ".done.json"
    if marker.exists():
        return str(directory), int(json.loads(marker.read_text())["spans"])
    from prodlens.analysis.synthetic import generate

    start = time.perf_counter()
    truth = generate(directory, traces=traces, seed=42, customers=max(500, traces // 20))
    marker.write_text(json.dumps({"spans": truth.spans}))
    print(f"generated {traces:,} traces, {truth.spans:,} spans through the SDK in "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    return str(directory), truth.spans


def ensure_gzip(directory: str) -> str:
    """A copy of ``directory`` with every file gzipped (level 6, gzip's default), made once."""
    target = directory + "-gz"
    marker = os.path.join(target, ".done")
    if not os.path.exists(marker):
        os.makedirs(target, exist_ok=True)
        for path in _files(directory):
            with open(path, "rb") as source, gzip.open(
                    os.path.join(target, os.path.basename(path) + ".gz"), "wb") as sink:
                while chunk := source.read(1 << 20):
                    sink.write(chunk)
        Path(marker).write_text("")
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20000",
                        help="comma-separated numbers of request traces (default: 20000)")
    parser.add_argument("--data-dir", default="/tmp/prodlens-bench")
    parser.add_argument("--only", help="comma-separated contenders to run")
    parser.add_argument("--repeat", type=int, default=1,
                        help="interleaved runs per contender; the median is reported "
                             "(default: 1)")
    parser.add_argument("--gzip", action="store_true",
                        help="also run every contender on a gzipped copy of the data")
    parser.add_argument("--baseline", metavar="SRC",
                        help=f"also time {BASELINE!r}: prodlens slice from SRC/prodlens")
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.contender:
        outcome = run_contender(args.contender, args.dir)
        outcome["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(outcome))
        return 0
    contenders = args.only.split(",") if args.only else list(CONTENDERS)
    if args.baseline:
        if not os.path.isdir(os.path.join(args.baseline, "prodlens")):
            parser.error(f"--baseline {args.baseline}: no prodlens/ directory in it")
        contenders.insert(contenders.index("prodlens slice") + 1
                          if "prodlens slice" in contenders else len(contenders), BASELINE)
    plain_contenders = [name for name in contenders if name != "GzipFile read"]
    header = (f"{'traces':>11} {'spans':>10} {'contender':<18} {'seconds':>8} {'spans/s':>10} "
              f"{'peak RSS':>9} {'vs floor':>8} {'vs duckdb':>9} {'vs chdb':>8}")
    rows: list[str] = []
    runs = []
    for size in (int(s) for s in args.sizes.split(",")):
        directory, spans = ensure_data(Path(args.data_dir), size)
        runs.append((size, directory, spans, ""))
        if args.gzip:
            runs.append((size, ensure_gzip(directory), spans, " gz"))
    for size, directory, spans, label in runs:
        size_mb = sum(os.path.getsize(p) for p in _files(directory)) / 1e6
        names = contenders if label else plain_contenders
        results = measure_all(names, directory, args.repeat, args.baseline)
        for name, outcome in results.items():
            seconds = outcome["seconds"]

            def ratio(other: str, seconds: float = seconds,
                      results: dict[str, dict[str, Any]] = results) -> str:
                if other not in results:
                    return "-"
                return f"{seconds / results[other]['seconds']:.2f}x"

            rows.append(
                f"{size:>8,}{label:<3} {spans:>10,} {name:<18} {seconds:>8.2f} {spans / seconds:>10,.0f} "
                f"{outcome['peak_rss_mb']:>7.0f}MB {ratio('orjson floor'):>8} "
                f"{ratio('duckdb group-by'):>9} {ratio('chdb group-by'):>8}"
            )
            print(f"{size:,}{label} traces ({size_mb:.0f} MB) {name}: {outcome['result'][:110]}",
                  file=sys.stderr)
    print(header)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
