"""The window keeps customers of failed units only: memory follows failures, not traffic."""

from __future__ import annotations

from pathlib import Path

from span_writer import SpanWriter

from prodlens.incidents import IncidentManager, Ledger, NotifyOptions
from prodlens.live import Watcher, WatchOptions


def test_many_distinct_customers_leave_only_the_failed_ones_in_the_window(
        tmp_path: Path) -> None:
    writer = SpanWriter(tmp_path / "spans", seed=31, customers=20_000, base_rate=0.01)
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        watcher = Watcher([str(tmp_path / "spans")],
                          WatchOptions(window=60, every=5, from_start=True),
                          IncidentManager(ledger, NotifyOptions()))
        try:
            writer.write(0, 90, 150, lambda c, p, r, route: 0.01)
            watcher.step()
        finally:
            writer.close()
    window = watcher.window
    kept = set()
    for bucket in window.buckets:
        for _, failures, customers, _ in bucket.rows.values():
            assert len(customers) <= failures
            kept |= customers
    # a unit goes to the bucket of its export line's first span: allow a second at the edges
    start, end = window.buckets[0].start, window.buckets[-1].start + 5
    surely = {f.customer for f in writer.failures if start + 1 <= f.at < end - 1}
    maybe = {f.customer for f in writer.failures if start - 1 <= f.at < end + 1}
    assert surely <= kept <= maybe
    assert 0 < len(kept) < 200 and window.totals()[0] > 8_000  # thousands of customers seen
