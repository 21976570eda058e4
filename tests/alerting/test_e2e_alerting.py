"""End to end with the real servers: a partial failure, alerted by Prometheus, routed by
Alertmanager, turned by ``prodlens notify`` into operator and customer messages.

* the app (tests/alerting/alerting_app.py: Flask, no prodlens code) runs under OpenTelemetry's
  auto-instrumentation with prodlens: spans to OTLP/JSON files, cohort metrics through
  opentelemetry-exporter-prometheus on 127.0.0.1;
* Prometheus scrapes it every second and evaluates ``prodlens rules`` with the documented short
  windows (10s and 40s); Alertmanager (group_wait 1s, group_interval 2s, the inhibit rules of
  ``prodlens rules --inhibit-rules``) posts to ``prodlens notify``;
* ``prodlens notify`` (a subprocess, the real command) reads the spans and delivers to a local
  receiver.

Customers call the app steadily; the fault (500s for plan=enterprise in region=eu) is switched on
after clean traffic, left on for a while after the alert, then fixed. Expected: one incident, for
exactly the planted pair; the customers messaged are exactly the customers who saw a failure
(the ground truth, from the traffic's own record), each once per status; then the resolve. The
detection delay (onset to the operator payload) is printed (docs/alerting.md quotes it).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from alerting_servers import (
    ALERTMANAGER,
    MISSING,
    PROMETHEUS,
    Process,
    Recorder,
    Stack,
    Traffic,
    answers,
    clean_env,
    free_port,
    poll,
    processes,
    python,
)

pytestmark = pytest.mark.skipif(PROMETHEUS is None or ALERTMANAGER is None, reason=MISSING)

PLANTED = {"prodlens.cohort.plan": "enterprise", "prodlens.cohort.region": "eu"}


def _customers(recorder: Recorder, status: str) -> list[str]:
    return [customer for _, body in recorder.bodies("/customers") if body["status"] == status
            for customer in body["customers"]]


@pytest.mark.slow
def test_planted_failure_alerts_and_messages_exactly_the_affected_customers(
        tmp_path: Path) -> None:
    recorder = Recorder()
    notify_port = free_port()
    try:
        with processes() as started:
            stack = Stack(tmp_path, started, f"http://127.0.0.1:{notify_port}/alertmanager")
            notify = Process("notify", python(
                "-m", "prodlens", "notify", "--listen", f"127.0.0.1:{notify_port}",
                "--spans", str(stack.spans), "--ledger", str(tmp_path / "ledger.sqlite3"),
                "--notify", f"{recorder.url}/operator",
                "--notify-customers", f"{recorder.url}/customers"), tmp_path, env=clean_env())
            started.append(notify)

            def notify_ready() -> bool:
                notify.check_alive()
                return answers(f"http://127.0.0.1:{notify_port}/healthz")

            poll("prodlens notify", notify_ready, 30)
            traffic = Traffic(stack.app_port)
            begun = time.monotonic()
            try:
                poll("Prometheus to scrape the cohort metrics", lambda: stack.query(
                    'job:prodlens_requests:rate10s{job="shop"} > 0'), 30)
                poll("15 s of clean traffic in the long window",
                     lambda: time.monotonic() > begun + 15, 30)
                assert traffic.failed() == []

                stack.fault_file.touch()
                firing = poll("the operator payload", lambda: recorder.bodies("/operator"), 60)
                onset = min(at for at, _ in traffic.failed())
                detection = firing[0][0] - onset
                # Failures go on for a while after the alert: those customers come later.
                poll("10 s more of the fault", lambda: time.time() > firing[0][0] + 10, 30)
                stack.fault_file.unlink()
                fixed = time.time()
                resolved = poll("the resolve", lambda: [
                    body for _, body in recorder.bodies("/operator")
                    if body["status"] == "resolved"], 60)
            finally:
                traffic.stop()
            truth = sorted({customer for _, customer in traffic.failed()})
            # Every customer's batch for both statuses (the deliverer sends them one by one).
            poll("the resolved batches", lambda: sorted(_customers(recorder, "resolved"))
                 == truth, 30)
            notify.check_alive()
    finally:
        recorder.close()

    operator = [body for _, body in recorder.bodies("/operator")]
    assert [body["status"] for body in operator] == ["firing", "resolved"], operator
    assert {json.dumps(body["subgroup"], sort_keys=True) for body in operator} == {
        json.dumps(PLANTED, sort_keys=True)}
    incident = operator[0]["incident"]
    assert resolved[0]["incident"] == incident
    assert operator[0]["rate"] > 0.02 and operator[0]["rest_rate"] == 0
    planted = sorted(c for c, (plan, region) in traffic.customers.items()
                     if (plan, region) == ("enterprise", "eu"))
    assert truth and set(truth) <= set(planted)
    assert sorted(_customers(recorder, "firing")) == truth  # each once, nobody else
    assert sorted(_customers(recorder, "resolved")) == truth
    assert {body["incident"] for _, body in recorder.bodies("/customers")} == {incident}
    print(f"\ndetection delay (onset to operator payload): {detection:.1f} s; "
          f"resolve {resolved and recorder.bodies('/operator')[-1][0] - fixed:.1f} s after the "
          f"fix; {len(truth)} customers; {traffic.count()} requests", file=sys.stderr)

