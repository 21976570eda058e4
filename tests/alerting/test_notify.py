"""``prodlens notify`` in process (the real command's wiring, ``serve``), over real span files.

Spans come from a real SDK TracerProvider tagged by prodlens and written by prodlens's OTLP/JSON
file exporter, with explicit start times. Deliveries go to a local receiver on 127.0.0.1.
Covered: the customers messaged are exactly those with a failed unit inside the subgroup and the
alert's window; Alertmanager's repeats and a second replica on the same ledger send nothing
twice; a customer failing later is sent later; the resolve reaches everyone notified; hostile
bodies are refused and send nothing; a resolve without an incident sends nothing.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alerting_servers import Recorder, free_port, poll
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

import prodlens
from prodlens.alerting._payload import MAX_BODY_BYTES
from prodlens.alerting.serve import NotifyError, serve
from prodlens.cli import build_parser
from prodlens.exporter import OTLPJsonFileSpanExporter
from prodlens.incidents import Ledger

NOW = time.time()
STARTS_AT = NOW - 60  # the alert started a minute ago; its window is 5m: spans since NOW - 360


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1e6):06d}Z"


class Spans:
    def __init__(self, folder: Path, name: str) -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
        self.provider.add_span_processor(SimpleSpanProcessor(
            OTLPJsonFileSpanExporter(folder / name, max_bytes=0, backups=0)))
        prodlens.configure(self.provider, environ={}, metrics=False)
        self.tracer = self.provider.get_tracer("tests")

    def request(self, customer: str, plan: str, region: str, failed: bool, at: float) -> None:
        with prodlens.tag(customer, plan=plan, region=region):
            span = self.tracer.start_span("GET /checkout", kind=SpanKind.SERVER,
                                          start_time=int(at * 1e9),
                                          attributes={"http.route": "/checkout"})
            if failed:
                span.set_status(Status(StatusCode.ERROR))
            span.end(end_time=int((at + 0.01) * 1e9))

    def close(self) -> None:
        self.provider.shutdown()


@pytest.fixture
def spans(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "spans"
    folder.mkdir()
    writer = Spans(folder, "spans.jsonl")
    for n in range(40):  # clean traffic everywhere
        for plan, region in (("free", "eu"), ("free", "us"), ("enterprise", "eu"),
                             ("enterprise", "us")):
            writer.request(f"{plan}-{region}-{n % 8}", plan, region, False, NOW - 300 + n)
    for customer in ("ent-a", "ent-b", "ent-c"):  # failing inside the subgroup
        writer.request(customer, "enterprise", "eu", True, NOW - 90)
        writer.request(customer, "enterprise", "eu", False, NOW - 80)
    writer.request("ent-quiet", "enterprise", "eu", False, NOW - 70)  # no failure: not told
    writer.request("free-unlucky", "free", "us", True, NOW - 85)  # fails outside: not told
    writer.request("ent-old", "enterprise", "eu", True, NOW - 3600)  # before the window
    writer.close()
    yield folder


class Notify:
    """``serve()`` on a thread, as ``prodlens notify`` runs it."""

    def __init__(self, argv: list[str]) -> None:
        self.port = free_port()
        args = build_parser().parse_args(["notify", "--listen", f"127.0.0.1:{self.port}",
                                          *argv])
        self.ready, self.stop = threading.Event(), threading.Event()
        self.errors: list[BaseException] = []

        def run() -> None:
            try:
                serve(args, ready=self.ready, stop=self.stop)
            except BaseException as error:
                self.errors.append(error)
                self.ready.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert self.ready.wait(30) and not self.errors, self.errors

    def post(self, body: object) -> tuple[int, dict[str, Any]]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("POST", "/alertmanager", body=data,
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    running = Recorder()
    yield running
    running.close()


def _argv(spans: Path, tmp_path: Path, recorder: Recorder) -> list[str]:
    return ["--spans", str(spans), "--ledger", str(tmp_path / "ledger.sqlite3"),
            "--notify", f"{recorder.url}/operator",
            "--notify-customers", f"{recorder.url}/customers"]


@pytest.fixture
def notify(spans: Path, tmp_path: Path, recorder: Recorder,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Notify]:
    for name in ("PRODLENS_NOTIFY_URL", "PRODLENS_NOTIFY_CUSTOMERS_URL", "PRODLENS_NOTIFY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    running = Notify(_argv(spans, tmp_path, recorder))
    yield running
    running.close()


def webhook(status: str = "firing", ends_at: float | None = None) -> dict[str, Any]:
    return {
        "version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": status,
        "receiver": "prodlens", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [{
            "status": status,
            "labels": {"alertname": "ProdlensSubgroupFailing", "job": "shop",
                       "severity": "page", "prodlens_cohorts": "plan,region",
                       "prodlens_cohort_plan": "enterprise", "prodlens_cohort_region": "eu"},
            "annotations": {"window": "5m", "ratio": "0.375", "rest_ratio": "0.0061",
                            "summary": "..."},
            "startsAt": _iso(STARTS_AT),
            "endsAt": _iso(ends_at) if ends_at else "0001-01-01T00:00:00Z",
            "generatorURL": "", "fingerprint": "0123456789abcdef",
        }],
    }


def _customers(recorder: Recorder, status: str) -> list[str]:
    return [c for _, body in recorder.bodies("/customers") if body["status"] == status
            for c in body["customers"]]


def _operator(recorder: Recorder) -> list[dict[str, Any]]:
    return [body for _, body in recorder.bodies("/operator")]


SUBGROUP = {"prodlens.cohort.plan": "enterprise", "prodlens.cohort.region": "eu"}


def test_firing_repeats_replicas_late_customers_and_the_resolve(
        notify: Notify, recorder: Recorder, spans: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    assert notify.post(webhook()) == (200, {"queued": 1, "ignored": 0})
    poll("the first customer batch", lambda: _customers(recorder, "firing"), 30)
    [opened] = poll("the operator payload", lambda: _operator(recorder), 30)
    assert opened["status"] == "firing" and opened["subgroup"] == SUBGROUP
    assert (opened["rate"], opened["rest_rate"]) == (0.375, 0.0061)  # Prometheus's ratios
    # Units in the subgroup over the window: 40 clean + 3 failed + 3 recovered + 1 quiet.
    assert (opened["units"], opened["failures"], opened["affected_customers"]) == (47, 3, 3)
    assert sorted(_customers(recorder, "firing")) == ["ent-a", "ent-b", "ent-c"]

    # Alertmanager repeats the group; a second replica shares the ledger and gets it too.
    replica = Notify(_argv(spans, tmp_path, recorder))
    try:
        for target in (notify, replica, notify, replica):
            assert target.post(webhook())[0] == 200
        # A customer fails later; the next repeat, on either replica, sends them alone.
        late = Spans(spans, "late.jsonl")
        late.request("ent-late", "enterprise", "eu", True, time.time() - 1)
        late.close()
        assert replica.post(webhook())[0] == 200
        assert notify.post(webhook())[0] == 200
        poll("the late customer", lambda: "ent-late" in _customers(recorder, "firing"), 30)
        assert replica.post(webhook("resolved", ends_at=time.time()))[0] == 200
        poll("the resolved batch", lambda: len(_customers(recorder, "resolved")) == 4, 30)
        poll("the resolve", lambda: len(_operator(recorder)) == 2, 30)
        # More repeats of both after the resolve send nothing.
        assert notify.post(webhook("resolved", ends_at=time.time()))[0] == 200
        assert notify.post(webhook())[0] == 200
        assert replica.post(webhook())[0] == 200
        with Ledger(tmp_path / "ledger.sqlite3") as ledger:
            poll("every delivery", lambda: not ledger.pending(), 30)
    finally:
        replica.close()
    notify.close()  # the repeats above are handled (or dropped) before this returns
    assert sorted(_customers(recorder, "firing")) == ["ent-a", "ent-b", "ent-c", "ent-late"]
    assert sorted(_customers(recorder, "resolved")) == ["ent-a", "ent-b", "ent-c", "ent-late"]
    assert [(b["status"], b["incident"]) for b in _operator(recorder)] == [
        ("firing", opened["incident"]), ("resolved", opened["incident"])]
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        assert [i.status for i in ledger.incidents()] == ["resolved"]
        assert ledger.pending() == []
    # Repeats after the resolve were recognised, not failed on the ledger's constraints.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_hostile_bodies_are_refused_and_send_nothing(notify: Notify, recorder: Recorder,
                                                     tmp_path: Path) -> None:
    wrong_version = webhook()
    wrong_version["version"] = "5"
    no_labels = webhook()
    no_labels["alerts"][0]["labels"] = {"alertname": "ProdlensSubgroupFailing", "job": "shop"}
    no_cohort = webhook()
    no_cohort["alerts"][0]["labels"] = {"alertname": "ProdlensSubgroupFailing", "job": "shop",
                                        "severity": "page", "team": "payments"}
    missing_member = webhook()
    del missing_member["alerts"][0]["labels"]["prodlens_cohort_region"]
    for body in (wrong_version, no_labels, no_cohort, missing_member, b"\x00\xff"):
        status, answer = notify.post(body)
        assert status == 400, answer
        assert answer["error"]
    # A huge body is refused from its Content-Length, before it is received: announce one byte
    # over the limit and send none of it (sending it races the refusal into a broken pipe).
    connection = http.client.HTTPConnection("127.0.0.1", notify.port, timeout=10)
    try:
        connection.putrequest("POST", "/alertmanager")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 400
        assert "at most" in json.loads(response.read())["error"]
    finally:
        connection.close()
    notify.close()
    assert recorder.received == []
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        assert ledger.incidents() == [] and ledger.deliveries() == []


def test_a_resolve_without_an_incident_sends_nothing(notify: Notify, recorder: Recorder,
                                                     tmp_path: Path) -> None:
    assert notify.post(webhook("resolved", ends_at=time.time()))[0] == 200
    notify.close()
    assert recorder.received == []
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        assert ledger.incidents() == []


@pytest.mark.parametrize(("argv", "message"), [
    (["--listen", "0.0.0.0:9099", "--spans", "x"], "not a loopback address: give a bearer token"),
    (["--spans", "x", "--clickhouse", "http://127.0.0.1:8123/"], "give the span store"),
    ([], "give the span store"),
    (["--spans", "x", "--window", "an hour"], "--window 'an hour' is not a Prometheus duration"),
    (["--spans", "x", "--notify", "ftp://x"], "--notify='ftp://x' (command line) is not valid"),
])
def test_bad_options_are_named(argv: list[str], message: str, tmp_path: Path) -> None:
    args = build_parser().parse_args(["notify", "--ledger", str(tmp_path / "l.sqlite3"), *argv])
    with pytest.raises(NotifyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        serve(args)


def _load_otel_traces() -> Any:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "analysis" / "otel_traces.py"
    spec = importlib.util.spec_from_file_location("alerting_otel_traces", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_clickhouse_store_reads_what_the_files_hold(spans: Path, tmp_path: Path) -> None:
    # --clickhouse: the Collector's otel_traces table (in chdb, ClickHouse's engine in process)
    # holding the same spans gives the same subgroup totals and customers as --spans.
    from chdb import session as chdb_session

    from prodlens.alerting._resolve import SpanStore
    from prodlens.analysis import Filters, chdb_query

    session = chdb_session.Session(str(tmp_path / "chdb"))
    try:
        files = sorted(spans.iterdir())
        assert _load_otel_traces().load_into_chdb(session, files, tmp_path) > 0
        filters = Filters(where=(("prodlens.cohort.plan", "enterprise", True),
                                 ("prodlens.cohort.region", "eu", True)),
                          since_ns=int((STARTS_AT - 300) * 1e9))
        on_files = SpanStore(paths=(str(spans),)).read(filters)
        in_clickhouse = SpanStore(clickhouse=chdb_query(session),
                                  table="otel.otel_traces").read(filters)
    finally:
        session.close()
    assert (on_files[0].units, on_files[0].failures) == (47, 3)
    assert (in_clickhouse[0].units, in_clickhouse[0].failures) == (47, 3)
    assert [c.customer for c in in_clickhouse[1].customers] == [
        c.customer for c in on_files[1].customers] == ["ent-a", "ent-b", "ent-c"]
