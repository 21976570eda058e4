"""``prodlens watch`` as a process: killed with SIGKILL mid-incident and restarted, with the
customer receiver down for a while. No customer is put in two batches, none is forgotten; a
batch the killed process sent but could not record as delivered is sent again under its
Idempotency-Key, which the receiver uses to drop the repeat."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from span_writer import T0, SpanWriter, planted
from webhook_receiver import Receiver

from prodlens.incidents import Ledger


def _watch(spans: Path, ledger: Path, receiver: Receiver, log: Path, *first: str
           ) -> subprocess.Popen[bytes]:
    with open(log, "ab") as output:  # the child keeps its own descriptor
        return _start(spans, ledger, receiver, output, first)


def _start(spans: Path, ledger: Path, receiver: Receiver, output: object,
           first: tuple[str, ...]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "prodlens", "watch", str(spans), *first,
         "--window", "60s", "--every", "5s", "--resolve-after", "30s", "--poll", "100ms",
         "--ledger", str(ledger), "--notify", receiver.url + "/ops",
         "--notify-customers", receiver.url + "/customers"],
        stdout=output, stderr=subprocess.STDOUT,
        env={**os.environ, "PRODLENS_NOTIFY_URL": ""})


def _until(condition: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _incidents(path: Path) -> list[str]:
    with Ledger(path) as ledger:
        return [incident.status for incident in ledger.incidents()]


def _pending(path: Path) -> int:
    with Ledger(path) as ledger:
        return len(ledger.pending())


@pytest.mark.slow
def test_kill_9_and_restart_and_receiver_down_deliver_everyone_once(
        tmp_path: Path, receiver: Receiver) -> None:
    spans, ledger, log = tmp_path / "spans", tmp_path / "ledger.sqlite3", tmp_path / "watch.log"
    writer = SpanWriter(spans, seed=7)
    outage = planted("enterprise", "ap-south", 0.3)
    fixed = planted("enterprise", "ap-south", 0.0)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        writer.write(0, 60, 60, fixed)
        processes.append(_watch(spans, ledger, receiver, log, "--from-start"))
        writer.write(60, 150, 60, outage)
        _until(lambda: ledger.exists() and _incidents(ledger) == ["firing"], "the incident")
        processes[0].send_signal(signal.SIGKILL)
        processes[0].wait(30)
        receiver.stop()  # the customer receiver goes down too
        writer.write(150, 200, 60, outage)  # customers keep failing while watch is down
        # without --from-start: only the ledger's checkpoint brings back what it missed
        processes.append(_watch(spans, ledger, receiver, log))
        writer.write(200, 330, 60, fixed)
        _until(lambda: _incidents(ledger) == ["resolved"], "the resolve")
        assert _pending(ledger) > 0  # the receiver is still down: deliveries wait
        receiver.start()  # up again on the same port
        _until(lambda: _pending(ledger) == 0, "every delivery")
        processes[1].send_signal(signal.SIGTERM)
        assert processes[1].wait(30) == 0
    finally:
        writer.close()
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(30)
    truth = {f.customer for f in writer.failures
             if f.plan == "enterprise" and f.region == "ap-south" and f.at >= T0 + 60}
    # A batch whose 2xx answer the killed process never recorded is sent again after the
    # restart, with the same Idempotency-Key and the same body: the receiver drops the repeat,
    # as docs/live.md asks. What must never happen is a customer in two different batches.
    batches: dict[str, dict[str, object]] = {}
    for arrival in receiver.arrivals:
        if arrival["path"] != "/customers":
            continue
        first = batches.setdefault(arrival["key"], arrival["body"])
        assert first == arrival["body"]
    firing = [c for b in batches.values() if b["status"] == "firing"
              for c in b["customers"]]  # type: ignore[attr-defined]
    resolved = [c for b in batches.values() if b["status"] == "resolved"
                for c in b["customers"]]  # type: ignore[attr-defined]
    assert sorted(firing) == sorted(truth), log.read_text()[-2000:]
    assert Counter(firing).most_common(1)[0][1] == 1
    assert sorted(resolved) == sorted(truth)
    ops = [(b["status"], b["affected_customers"]) for b in receiver.bodies("/ops")]
    assert ops[0][0] == "firing" and ops[-1] == ("resolved", len(truth))
    assert [status for status, _ in ops].count("firing") == len(ops) - 1  # open, growth
    assert "OPEN [FIRING] prodlens.cohort.plan=enterprise ∧ prodlens.cohort.region=ap-south" \
        in log.read_text()
