"""watch --clickhouse on chdb: the Collector's otel_traces table filling up over span time."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chdb import session as chdb_session
from span_writer import T0, SpanWriter, planted
from webhook_receiver import Receiver

from prodlens.analysis import ClickHouseError, chdb_query
from prodlens.incidents import Deliverer, IncidentManager, Ledger, NotifyOptions
from prodlens.live import DetectOptions, WatchOptions
from prodlens.live._clickhouse import ClickHouseWatcher

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "analysis"))
from otel_traces import load_into_chdb

TABLE = "otel.otel_traces"


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Any]:
    db = chdb_session.Session(str(tmp_path / "chdb"))
    yield db
    db.close()


def test_clickhouse_watch_opens_messages_and_resolves(tmp_path: Path, session: Any,
                                                      receiver: Receiver) -> None:
    writer = SpanWriter(tmp_path / "spans", seed=9)
    live = tmp_path / "spans" / "spans.jsonl"
    done = 0

    def load(phase: int) -> None:
        nonlocal done
        data = live.read_bytes()
        part = tmp_path / f"phase-{phase}.jsonl"
        part.write_bytes(data[done:])
        done = len(data)
        load_into_chdb(session, [part], tmp_path, table=TABLE)

    notify = NotifyOptions(operator_urls=(receiver.url + "/ops",),
                           customers_url=receiver.url + "/customers")
    options = WatchOptions(window=60, every=10, detect=DetectOptions(resolve_after=30))
    out = io.StringIO()
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        watcher = ClickHouseWatcher(chdb_query(session), options,
                                    IncidentManager(ledger, notify), table=TABLE, out=out)
        try:
            writer.write(0, 90, 50, planted("enterprise", "ap-south", 0.0))
            load(1)
            watcher.step()
            assert ledger.incidents() == []
            writer.write(90, 180, 50, planted("enterprise", "ap-south", 0.35))
            load(2)
            watcher.step()
            [incident] = ledger.incidents()
            assert incident.status == "firing"
            writer.write(180, 300, 50, planted("enterprise", "ap-south", 0.0))
            load(3)
            watcher.step()
        finally:
            writer.close()
        Deliverer(ledger, notify).deliver_due()
        [incident] = ledger.incidents()
    assert dict(incident.subgroup) == {"prodlens.cohort.plan": "enterprise",
                                       "prodlens.cohort.region": "ap-south"}
    assert incident.status == "resolved"
    truth = {f.customer for f in writer.failures
             if f.plan == "enterprise" and f.region == "ap-south" and f.at >= T0 + 90}
    firing = [c for b in receiver.bodies("/customers") if b["status"] == "firing"
              for c in b["customers"]]
    assert sorted(firing) == sorted(truth)
    assert "OPEN [FIRING]" in out.getvalue() and "RESOLVED" in out.getvalue()


def test_an_unreachable_clickhouse_is_reported_and_retried(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    calls = []

    def down(sql: str) -> list[dict[str, Any]]:
        calls.append(sql)
        raise ClickHouseError("connection refused")

    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        watcher = ClickHouseWatcher(down, WatchOptions(),
                                    IncidentManager(ledger, NotifyOptions()))
        assert watcher.step() == [] and watcher.step() == []
        assert "ClickHouse failing: connection refused" in watcher.status_line()
    assert len(calls) == 2 and watcher.errors == 2
    assert capsys.readouterr().err.count("ClickHouse unreachable (retrying)") == 1
