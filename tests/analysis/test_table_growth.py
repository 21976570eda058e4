"""The embedded engine's work grows linearly with its input, whatever the attributes.

Units carry four id-like attributes (a distinct value each: dropped from the table early) and
four cohorts whose combinations make ~108,000 distinct signatures, past the table's 50,000-row
budget. Before, every new row past the budget rebuilt the whole table once an id-like
attribute had been dropped (the dropped keys kept being reported as new), and 215k such units
did not finish in 10 minutes. Work is counted, not timed: table rebuilds and the rows they went
through, at three input sizes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from prodlens.analysis import SliceOptions
from prodlens.analysis._embedded import EmbeddedAggregates
from prodlens.analysis._model import InputSummary
from prodlens.analysis._reader import ReadProgress, load_decoder
from prodlens.analysis._slicing import build_report

_SPANS_PER_LINE = 2_000


def _lines(units: int, seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    resource = (b'{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":'
                b'"svc"}}]},"scopeSpans":[{"spans":[')
    for first in range(0, units, _SPANS_PER_LINE):
        spans = []
        for n in range(first, min(units, first + _SPANS_PER_LINE)):
            values = (f"a{rng.randrange(45)}", f"b{rng.randrange(40)}", f"c{rng.randrange(30)}",
                      f"d{rng.randrange(2)}", f"10.0.{n >> 8 & 255}.{n & 255}-{n}",
                      f"/orders/{n}", f"k{n:x}", f"t{n * 7919}")
            keys = ("cohort.a", "cohort.b", "cohort.c", "cohort.d", "client.address", "url.path",
                    "request.key", "cart.token")
            attributes = ",".join(f'{{"key":"{k}","value":{{"stringValue":"{v}"}}}}'
                                  for k, v in zip(keys, values, strict=True))
            spans.append(f'{{"traceId":"{n:032x}","spanId":"{n:016x}","name":"GET /x",'
                         f'"kind":2,"startTimeUnixNano":"{1_790_000_000_000_000_000 + n}",'
                         f'"attributes":[{attributes}],'
                         f'"status":{{"code":{2 if n % 97 == 0 else 0}}}}}')
        yield resource + ",".join(spans).encode() + b"]}]}]}"


def _run(units: int) -> EmbeddedAggregates:
    decode = load_decoder()
    aggregates = EmbeddedAggregates(SliceOptions())
    progress = ReadProgress()
    for line in _lines(units, seed=units):
        aggregates.consume(decode(line), progress)
    aggregates.finish()
    return aggregates


def test_table_work_grows_linearly_with_many_id_like_attributes() -> None:
    growth = []
    for units in (125_000, 250_000, 500_000):
        aggregates = _run(units)
        assert aggregates.units == units
        growth.append((units, aggregates.rebuilds, aggregates.rebuilt_rows,
                       len(aggregates._table)))
    print("\nunits, table rebuilds, rows rebuilt, final rows:")
    for row in growth:
        print("  {:>9,} {:>4} {:>10,} {:>9,}".format(*row))
    for units, rebuilds, rebuilt_rows, rows in growth:
        # the four id-like attributes are dropped once each; the budget then doubles
        assert rebuilds == 4
        # linear: the rows rebuilt (and scanned) stay a bounded share of the units read,
        # (before: one 50,000-row rebuild per new row past the budget, ~10^9 at 250k)
        assert rebuilt_rows <= units // 2
        assert rows <= 45 * 40 * 30 * 2
    # the budget grew past the signatures (it doubled) instead of rebuilding at every row
    report = build_report(aggregates, SliceOptions(), InputSummary())
    assert report.skipped_attributes == ("cart.token", "client.address", "request.key",
                                         "url.path")
