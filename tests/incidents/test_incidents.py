"""Incidents and notification against a real HTTP receiver on 127.0.0.1 and a real SQLite file."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from webhook_receiver import Receiver

from prodlens.config import ConfigError
from prodlens.incidents import (
    CustomerTemplate,
    Deliverer,
    IncidentManager,
    Ledger,
    LedgerError,
    NotifyOptions,
    SubgroupStats,
    format_status,
)

STATS = SubgroupStats(rate=0.2, rest_rate=0.005, units=500, failures=100)
SUBGROUP = {"region": "ap-south", "plan": "enterprise"}
T0 = 1_765_000_000.0


def _options(receiver: Receiver, **extra: object) -> NotifyOptions:
    return NotifyOptions(operator_urls=(receiver.url + "/ops",),
                         customers_url=receiver.url + "/customers",
                         retry_initial=0.05, retry_max=0.2, **extra)  # type: ignore[arg-type]


def _sent_customers(receiver: Receiver, status: str) -> list[str]:
    return [customer for body in receiver.bodies("/customers") if body["status"] == status
            for customer in body["customers"]]


def test_open_notifies_operators_with_the_documented_payload(tmp_path: Path,
                                                              receiver: Receiver) -> None:
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        options = _options(receiver)
        manager = IncidentManager(ledger, options)
        incident = manager.open_or_update(SUBGROUP, STATS, ["acme", "globex"], at=T0)
        Deliverer(ledger, options).deliver_due()
    [ops] = receiver.bodies("/ops")
    assert ops == {
        "status": "firing", "incident": incident.id,
        "subgroup": {"plan": "enterprise", "region": "ap-south"},
        "rate": 0.2, "rest_rate": 0.005, "units": 500, "failures": 100,
        "affected_customers": 2, "started_at": "2025-12-06T05:46:40Z", "resolved_at": None,
        "text": ops["text"],
    }
    assert ops["text"].startswith("[FIRING] plan=enterprise ∧ region=ap-south: 20.0% failing")
    [batch] = receiver.bodies("/customers")
    assert batch["customers"] == ["acme", "globex"]
    assert batch["status"] == "firing" and batch["incident"] == incident.id
    assert "plan=enterprise ∧ region=ap-south" in batch["text"]
    assert "2025-12-06T05:46:40Z" in batch["text"]


def test_customers_go_in_batches_of_100_each_once_and_joiners_later(
        tmp_path: Path, receiver: Receiver) -> None:
    first = [f"c{i:04d}" for i in range(250)]
    later = [f"c{i:04d}" for i in range(200, 330)]  # 50 known, 80 new
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        options = _options(receiver)
        manager = IncidentManager(ledger, options)
        deliverer = Deliverer(ledger, options)
        manager.open_or_update(SUBGROUP, STATS, first, at=T0)
        deliverer.deliver_due()
        assert [len(b["customers"]) for b in receiver.bodies("/customers")] == [100, 100, 50]
        manager.open_or_update(SUBGROUP, STATS, later, at=T0 + 10)
        manager.open_or_update(SUBGROUP, STATS, later, at=T0 + 20)  # nothing new
        deliverer.deliver_due()
        batches = receiver.bodies("/customers")
        assert batches[3]["customers"] == [f"c{i:04d}" for i in range(250, 330)]
        assert len(batches) == 4
        manager.resolve(SUBGROUP, at=T0 + 600)
        deliverer.deliver_due()
    firing = _sent_customers(receiver, "firing")
    resolved = _sent_customers(receiver, "resolved")
    assert sorted(firing) == sorted(set(first) | set(later))
    assert Counter(firing).most_common(1)[0][1] == 1
    assert sorted(resolved) == sorted(firing)
    assert Counter(resolved).most_common(1)[0][1] == 1
    assert all(len(b["customers"]) <= 100 for b in receiver.bodies("/customers"))
    statuses = [b["status"] for b in receiver.bodies("/ops")]
    assert statuses == ["firing", "resolved"]


def test_operators_hear_of_growth_when_affected_customers_double(
        tmp_path: Path, receiver: Receiver) -> None:
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        options = _options(receiver)
        manager = IncidentManager(ledger, options)
        manager.open_or_update(SUBGROUP, STATS, ["a", "b", "c"], at=T0)
        manager.open_or_update(SUBGROUP, STATS, ["d", "e"], at=T0 + 10)  # 5: not doubled
        manager.open_or_update(SUBGROUP, STATS, ["f"], at=T0 + 20)  # 6: doubled
        manager.open_or_update(SUBGROUP, STATS, ["g"], at=T0 + 30)  # 7
        Deliverer(ledger, options).deliver_due()
    ops = receiver.bodies("/ops")
    assert [(b["status"], b["affected_customers"]) for b in ops] == [("firing", 3),
                                                                    ("firing", 6)]


def test_a_failing_receiver_is_retried_and_stays_pending_until_it_answers(
        tmp_path: Path, receiver: Receiver) -> None:
    receiver.failing = True
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        options = _options(receiver)
        deliverer = Deliverer(ledger, options)
        manager = IncidentManager(ledger, options, deliverer=deliverer)
        deliverer.start()
        try:
            manager.open_or_update(SUBGROUP, STATS, ["acme"], at=T0)
            deadline = time.monotonic() + 20
            while deliverer.counts.failed_attempts < 4:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            status = format_status(ledger)
            assert "pending deliveries: 2" in status and "HTTP 503" in status
            receiver.failing = False
            receiver.wait_for(lambda: len(receiver.arrivals) == 2)
            deadline = time.monotonic() + 20
            while ledger.pending():
                assert time.monotonic() < deadline
                time.sleep(0.02)
        finally:
            deliverer.stop()
    assert len(receiver.bodies("/ops")) == 1 and len(receiver.bodies("/customers")) == 1


def test_a_receiver_down_then_up_gets_everything_once(tmp_path: Path) -> None:
    receiver = Receiver().start()
    receiver.stop()  # down: connection refused on its port
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        options = _options(receiver)
        deliverer = Deliverer(ledger, options)
        manager = IncidentManager(ledger, options, deliverer=deliverer)
        deliverer.start()
        try:
            manager.open_or_update(SUBGROUP, STATS, [f"c{i}" for i in range(150)], at=T0)
            manager.resolve(SUBGROUP, at=T0 + 300)
            deadline = time.monotonic() + 20
            while deliverer.counts.failed_attempts < 3:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            receiver.start()  # up again, same port
            try:
                receiver.wait_for(lambda: len(receiver.arrivals) == 6)
                deadline = time.monotonic() + 20
                while ledger.pending():
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
            finally:
                receiver.stop()
        finally:
            deliverer.stop()
    assert len(receiver.arrivals) == 6
    firing = _sent_customers(receiver, "firing")
    assert sorted(firing) == sorted(f"c{i}" for i in range(150))
    assert sorted(_sent_customers(receiver, "resolved")) == sorted(firing)
    # firing reaches each destination before resolved
    order = [(a["path"], a["body"]["status"]) for a in receiver.arrivals]
    assert order.index(("/ops", "firing")) < order.index(("/ops", "resolved"))
    assert order.index(("/customers", "firing")) < order.index(("/customers", "resolved"))


def test_a_slow_receiver_does_not_stall_the_caller(tmp_path: Path, receiver: Receiver) -> None:
    receiver.hold = threading.Event()  # every request hangs until released
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        options = _options(receiver)
        deliverer = Deliverer(ledger, options)
        manager = IncidentManager(ledger, options, deliverer=deliverer)
        deliverer.start()
        try:
            manager.open_or_update(SUBGROUP, STATS, ["a"], at=T0)
            deadline = time.monotonic() + 20
            while not any(d.state == "claimed" for d in ledger.pending()):
                assert time.monotonic() < deadline
                time.sleep(0.02)
            # both workers are stuck in the receiver; evaluation goes on regardless
            for step in range(1, 20):
                manager.open_or_update(SUBGROUP, STATS, [f"n{step}"], at=T0 + step)
            assert manager.firing()[0].affected_customers == 20
            assert receiver.arrivals == []
            receiver.hold.set()
            receiver.wait_for(lambda: len(_sent_customers(receiver, "firing")) == 20)
        finally:
            deliverer.stop()


def test_a_new_process_delivers_what_a_crashed_one_left_pending(tmp_path: Path,
                                                                 receiver: Receiver) -> None:
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path) as ledger:  # the first process writes, then dies before sending
        manager = IncidentManager(ledger, _options(receiver))
        manager.open_or_update(SUBGROUP, STATS, ["a", "b"], at=T0)
        # a claim held by a process that died: reclaimed once its lease ran out
        ledger.claim("dead-worker", time.time() - 100, lease=1.0)
    with Ledger(path) as ledger:
        manager = IncidentManager(ledger, _options(receiver))
        assert [i.id for i in manager.firing()] == [i.id for i in ledger.incidents()]
        manager.open_or_update(SUBGROUP, STATS, ["a", "b"], at=T0 + 10)  # a restart re-reports
        Deliverer(ledger, _options(receiver)).deliver_due()
        assert ledger.pending() == []
    assert len(receiver.bodies("/ops")) == 1
    assert _sent_customers(receiver, "firing") == ["a", "b"]


_WORKER = r"""
import sys
from prodlens.incidents import Deliverer, IncidentManager, Ledger, NotifyOptions, SubgroupStats
path, url, which = sys.argv[1], sys.argv[2], sys.argv[3]
options = NotifyOptions(operator_urls=(url + "/ops",), customers_url=url + "/customers")
with Ledger(path) as ledger:
    manager = IncidentManager(ledger, options)
    for step in range(40):
        manager.open_or_update({"plan": "pro"}, SubgroupStats(0.2, 0.01, 100, 20),
                               [f"{which}{step}", f"shared{step}"], at=1000.0 + step)
    Deliverer(ledger, options).deliver_due()
"""


def test_two_processes_sharing_one_ledger_never_send_twice(tmp_path: Path,
                                                           receiver: Receiver) -> None:
    path = tmp_path / "ledger.sqlite3"
    Ledger(path).close()
    workers = [subprocess.Popen([sys.executable, "-c", _WORKER, str(path), receiver.url, name])
               for name in ("x", "y")]
    for worker in workers:
        assert worker.wait(120) == 0
    with Ledger(path) as ledger:  # whatever one left undelivered (claimed by the other)
        Deliverer(ledger, NotifyOptions(customers_url=receiver.url + "/customers",
                                        operator_urls=(receiver.url + "/ops",))).deliver_due()
        assert len(ledger.incidents()) == 1
    sent = _sent_customers(receiver, "firing")
    expected = {f"{w}{s}" for w in ("x", "y", "shared") for s in range(40)}
    assert sorted(sent) == sorted(expected)
    # one open, then one growth message per doubling, never one twice
    counts = [body["affected_customers"] for body in receiver.bodies("/ops")]
    assert sorted(counts) == counts and len(counts) == len(set(counts))
    assert all(later >= 2 * earlier for earlier, later in itertools.pairwise(counts))
    keys = [a["key"] for a in receiver.arrivals]
    assert len(keys) == len(set(keys))


def test_dry_run_prints_and_sends_nothing(tmp_path: Path, receiver: Receiver) -> None:
    out = io.StringIO()
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        options = _options(receiver, dry_run=True)
        IncidentManager(ledger, options).open_or_update(SUBGROUP, STATS, ["acme"], at=T0)
        Deliverer(ledger, options, out=out).deliver_due()
        assert ledger.pending() == []
    assert receiver.arrivals == []
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"dry run: would POST to {receiver.url}/ops: ")
    assert json.loads(lines[1].split(": ", 1)[1].split(": ", 1)[1])["customers"] == ["acme"]


def test_dry_run_without_destinations_still_prints(tmp_path: Path) -> None:
    out = io.StringIO()
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        options = NotifyOptions(dry_run=True)
        IncidentManager(ledger, options).open_or_update(SUBGROUP, STATS, ["acme"], at=T0)
        Deliverer(ledger, options, out=out).deliver_due()
    assert out.getvalue().count("dry run: would POST to stdout") == 2


def test_notify_command_gets_the_json_on_stdin(tmp_path: Path) -> None:
    target = tmp_path / "got.json"
    script = tmp_path / "save.py"
    script.write_text(f"import sys; open({str(target)!r}, 'ab').write(sys.stdin.buffer.read())")
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        options = NotifyOptions(commands=(f"{sys.executable} {script}",))
        IncidentManager(ledger, options).open_or_update(SUBGROUP, STATS, ["acme"], at=T0)
        Deliverer(ledger, options).deliver_due()
    payload = json.loads(target.read_text())
    assert payload["status"] == "firing" and payload["affected_customers"] == 1


def test_a_failing_command_is_retried(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        options = NotifyOptions(commands=(f"{sys.executable} -c 'import sys; sys.exit(3)'",))
        IncidentManager(ledger, options).open_or_update(SUBGROUP, STATS, ["acme"], at=T0)
        Deliverer(ledger, options).deliver_due()
        [pending] = ledger.pending()
    assert pending.attempts == 1 and "exit status 3" in (pending.last_error or "")


def test_customer_template_file(tmp_path: Path, receiver: Receiver) -> None:
    template = tmp_path / "message.txt"
    template.write_text("Hi! $subgroup is broken since $started_at.\n---\nFixed at $resolved_at.\n")
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        options = _options(receiver, template=CustomerTemplate.from_file(template))
        manager = IncidentManager(ledger, options)
        manager.open_or_update({"plan": "pro"}, STATS, ["acme"], at=T0)
        manager.resolve({"plan": "pro"}, at=T0 + 61)
        Deliverer(ledger, options).deliver_due()
    texts = [b["text"] for b in receiver.bodies("/customers")]
    assert texts == ["Hi! plan=pro is broken since 2025-12-06T05:46:40Z.",
                     "Fixed at 2025-12-06T05:47:41Z."]


def test_bad_settings_are_config_errors_naming_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\$nope"):
        CustomerTemplate.parse("hello $nope")
    with pytest.raises(ConfigError, match="--customer-template"):
        CustomerTemplate.from_file(tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match=r"PRODLENS_NOTIFY_URL=.ftp://x. .*http"):
        NotifyOptions.from_environment(environ={"PRODLENS_NOTIFY_URL": "ftp://x"})
    options = NotifyOptions.from_environment(
        operator_urls=["http://127.0.0.1:1/a"],
        environ={"PRODLENS_NOTIFY_URL": "http://127.0.0.1:1/b, http://127.0.0.1:1/a",
                 "PRODLENS_NOTIFY_CUSTOMERS_URL": "http://127.0.0.1:1/c"})
    assert options.operator_urls == ("http://127.0.0.1:1/a", "http://127.0.0.1:1/b")
    assert options.customers_url == "http://127.0.0.1:1/c"


def test_customers_stream_into_the_ledger_in_chunks(tmp_path: Path) -> None:
    def many() -> object:
        for number in range(30_000):
            yield f"customer-{number}"

    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        manager = IncidentManager(ledger, NotifyOptions())
        incident = manager.open_or_update(SUBGROUP, STATS, many(), at=T0)  # type: ignore[arg-type]
        assert incident.affected_customers == 30_000
        assert len(ledger.customers(incident.id)) == 30_000


def test_a_closed_ledger_refuses_use_instead_of_reopening(tmp_path: Path) -> None:
    # A connection reopened after close() would be closed by nobody (Python 3.13 warns).
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.close()
    with pytest.raises(LedgerError, match="closed"):
        ledger.incidents()
