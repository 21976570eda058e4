"""watch in-process: a real SDK writer appends spans, the watcher follows them, a real receiver on
127.0.0.1 gets the notifications. Span time runs faster than real time."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

from span_writer import T0, SpanWriter, planted
from webhook_receiver import Receiver

from prodlens.incidents import Deliverer, IncidentManager, Ledger, NotifyOptions
from prodlens.live import DetectOptions, Evaluation, Watcher, WatchOptions

PLANTED = {"prodlens.cohort.plan": "enterprise", "prodlens.cohort.region": "ap-south"}
FAST = WatchOptions(window=60, every=5, from_start=True, detect=DetectOptions(resolve_after=30))


def _notify(receiver: Receiver) -> NotifyOptions:
    return NotifyOptions(operator_urls=(receiver.url + "/ops",),
                         customers_url=receiver.url + "/customers",
                         retry_initial=0.05, retry_max=0.2)


def _customers(receiver: Receiver, status: str) -> list[str]:
    return [customer for body in receiver.bodies("/customers") if body["status"] == status
            for customer in body["customers"]]


def _truth(writer: SpanWriter, start: float, stop: float) -> set[str]:
    return {f.customer for f in writer.failures
            if f.plan == "enterprise" and f.region == "ap-south"
            and T0 + start <= f.at < T0 + stop}


def test_planted_onset_opens_one_incident_and_messages_exactly_the_affected(
        tmp_path: Path, receiver: Receiver) -> None:
    writer = SpanWriter(tmp_path / "spans", seed=3)
    notify = _notify(receiver)
    out = io.StringIO()
    evaluations: list[Evaluation] = []
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        manager = IncidentManager(ledger, notify)
        watcher = Watcher([str(tmp_path / "spans")], FAST, manager, out=out,
                          on_evaluation=evaluations.append)
        try:
            # everything fails at 0.5% but the pair, which never fails before the onset (so
            # the ground truth is exact: whoever failed in it, failed in the outage)
            writer.write(0, 120, 100, planted("enterprise", "ap-south", 0.0))
            watcher.step()
            assert ledger.incidents() == []
            writer.write(120, 240, 100, planted("enterprise", "ap-south", 0.3))
            watcher.step()
            writer.write(240, 420, 100, planted("enterprise", "ap-south", 0.0))  # the fix
            watcher.step()
            Deliverer(ledger, notify).deliver_due()
        finally:
            writer.close()
        [incident] = ledger.incidents()
    assert dict(incident.subgroup) == PLANTED
    assert incident.status == "resolved"
    assert T0 + 120 <= incident.started_at <= T0 + 125  # the onset's bucket, or the next
    opened_at = next(e.at for e in evaluations if e.opened)
    assert opened_at - T0 - 120 <= 60  # found within a minute of span time
    assert incident.resolved_at is not None and incident.resolved_at >= T0 + 240 + 30
    ops = receiver.bodies("/ops")
    assert next(body["status"] for body in ops) == "firing"
    assert ops[-1]["status"] == "resolved" and ops[-1]["subgroup"] == PLANTED
    truth = _truth(writer, 120, 240)
    firing = _customers(receiver, "firing")
    assert sorted(firing) == sorted(truth)  # each once, nobody outside the subgroup
    assert Counter(firing).most_common(1)[0][1] == 1
    assert sorted(_customers(receiver, "resolved")) == sorted(truth)
    assert f"OPEN [FIRING] {incident.label()}" in out.getvalue()
    assert "RESOLVED [RESOLVED]" in out.getvalue()


def test_customers_who_fail_later_are_sent_later(tmp_path: Path, receiver: Receiver) -> None:
    writer = SpanWriter(tmp_path / "spans", seed=5)
    notify = _notify(receiver)
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        deliverer = Deliverer(ledger, notify)
        watcher = Watcher([str(tmp_path / "spans")], FAST, IncidentManager(ledger, notify))
        try:
            writer.write(0, 60, 100, planted("enterprise", "ap-south", 0.0))
            writer.write(60, 120, 100, planted("enterprise", "ap-south", 0.3))
            watcher.step()
            deliverer.deliver_due()
            first = set(_customers(receiver, "firing"))
            assert first and first <= _truth(writer, 60, 120)
            writer.write(120, 200, 100, planted("enterprise", "ap-south", 0.3))
            watcher.step()
            deliverer.deliver_due()
        finally:
            writer.close()
    batches = [set(b["customers"]) for b in receiver.bodies("/customers")]
    later = set().union(*batches) - first
    assert later  # customers who joined after the first batches
    assert all(not (batch & first) for batch in batches if batch & later)
    assert set().union(*batches) == _truth(writer, 60, 200)


def test_clean_traffic_opens_nothing(tmp_path: Path) -> None:
    for seed in (11,):
        writer = SpanWriter(tmp_path / f"spans-{seed}", seed=seed)
        with Ledger(tmp_path / f"ledger-{seed}.sqlite3") as ledger:
            watcher = Watcher([str(tmp_path / f"spans-{seed}")], FAST,
                              IncidentManager(ledger, NotifyOptions()))
            try:
                writer.write(0, 400, 40)
                evaluations = watcher.step()
            finally:
                writer.close()
            assert len(evaluations) > 70
            assert ledger.incidents() == []


def test_malformed_lines_are_counted_not_fatal(tmp_path: Path) -> None:
    spans = tmp_path / "spans"
    writer = SpanWriter(spans, seed=2)
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        watcher = Watcher([str(spans)], FAST, IncidentManager(ledger, NotifyOptions()))
        try:
            writer.write(0, 30, 20)
            with open(spans / "spans.jsonl", "ab") as stream:
                stream.write(b"not json at all\n{\"resourceSpans\": 3}\n")
            writer.write(30, 60, 20)
            watcher.step()
        finally:
            writer.close()
        status = watcher.status_line()  # reads the ledger: while it is open
    assert watcher.progress.malformed == 2
    first, second = watcher.progress.examples
    assert first.startswith(f"{spans / 'spans.jsonl'}: not JSON (")
    assert second == f"{spans / 'spans.jsonl'}: no resourceSpans list"
    assert watcher.evaluations > 5
    assert "(2 malformed)" in status


def test_slower_than_counts_slow_units_as_failed(tmp_path: Path) -> None:
    spans = tmp_path / "spans"
    writer = SpanWriter(spans, seed=4, base_rate=0.0)
    slow = WatchOptions(window=60, every=5, from_start=True, slow_after=0.025,
                        detect=DetectOptions(resolve_after=30))
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        without = Watcher([str(spans)], FAST, IncidentManager(ledger, NotifyOptions()))
        try:
            writer.write(0, 120, 100, lambda c, p, r, route: 0.005)
            writer.slow_route = "/api/search"  # 30 ms roots on one route; others take 10 ms
            writer.write(120, 240, 100, lambda c, p, r, route: 0.005)
        finally:
            writer.close()
        without.step()
        assert ledger.incidents() == []
    with Ledger(tmp_path / "ledger-slow.sqlite3") as ledger:
        watcher = Watcher([str(spans)], slow, IncidentManager(ledger, NotifyOptions()))
        watcher.step()
        [incident] = ledger.incidents()
    assert incident.label() in ("http.route=/api/search", "span.name=GET /api/search")
