"""The receiver's HTTP side: what it accepts, what it rejects (400, nothing handled), the token.

A real :class:`NotifyServer` on 127.0.0.1; its handler records what reaches the worker.
"""

from __future__ import annotations

import copy
import http.client
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from prodlens.alerting._payload import MAX_BODY_BYTES, SubgroupAlert
from prodlens.alerting.receiver import NotifyServer, ReceiverError, check_listen

PREFIX = "prodlens.cohort."


def alert(status: str = "firing", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "ProdlensSubgroupFailing", "job": "shop", "severity": "page",
                   "prodlens_cohorts": "plan,region", "prodlens_cohort_plan": "enterprise",
                   "prodlens_cohort_region": "eu", **labels},
        "annotations": {"subgroup": "prodlens.cohort.plan=enterprise ∧ prodlens.cohort.region=eu",
                        "window": "40s", "ratio": "0.5", "rest_ratio": "0.005",
                        "summary": "fails"},
        "startsAt": "2026-12-04T17:00:01.123456789Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-12-04T17:05:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph",
        "fingerprint": "5f1c1a9b6c2d3e4f",
    }


def payload(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "4", "groupKey": '{}:{alertname="ProdlensSubgroupFailing"}',
        "truncatedAlerts": 0, "status": "firing", "receiver": "prodlens",
        "groupLabels": {"alertname": "ProdlensSubgroupFailing"}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093",
        "alerts": list(alerts) or [alert()],
    }


class Recorder:
    def __init__(self) -> None:
        self.alerts: list[SubgroupAlert] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, item: SubgroupAlert) -> None:
        assert self.release.wait(30)
        self.alerts.append(item)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def server(recorder: Recorder) -> Iterator[NotifyServer]:
    running = NotifyServer("127.0.0.1", 0, recorder, prefix=PREFIX, cohorts=("app.version",),
                           default_window=3600.0).start()
    yield running
    recorder.release.set()
    running.stop()


def post(server: NotifyServer, body: bytes, headers: dict[str, str] | None = None,
         path: str = "/alertmanager") -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("POST", path, body=body,
                           headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def test_a_firing_alert_is_queued_and_mapped_to_its_subgroup(server: NotifyServer,
                                                             recorder: Recorder) -> None:
    other = alert()
    other["labels"] = {"alertname": "HighLatency", "job": "shop"}
    status, answer = post(server, json.dumps(payload(alert(), other)).encode())
    assert (status, answer) == (200, {"queued": 1, "ignored": 1})
    assert server.wait_idle(30)
    assert recorder.alerts == [SubgroupAlert(
        subgroup={"prodlens.cohort.plan": "enterprise", "prodlens.cohort.region": "eu"},
        job="shop", status="firing", starts_at=1796403601.123456, ends_at=None, window=40.0,
        fingerprint="5f1c1a9b6c2d3e4f", ratio=0.5, rest_ratio=0.005, summary="fails")]


def test_labels_without_prodlens_cohorts_map_through_the_cohort_names(
        server: NotifyServer, recorder: Recorder) -> None:
    item = alert()
    del item["labels"]["prodlens_cohorts"], item["labels"]["prodlens_cohort_region"]
    item["labels"]["prodlens_cohort_app_version"] = "2.4.1"
    del item["annotations"]["window"]
    assert post(server, json.dumps(payload(item)).encode())[0] == 200
    assert server.wait_idle(30)
    [got] = recorder.alerts
    assert got.subgroup == {"prodlens.cohort.app.version": "2.4.1",
                            "prodlens.cohort.plan": "enterprise"}
    assert got.window == 3600.0


def test_the_answer_does_not_wait_for_the_work(server: NotifyServer, recorder: Recorder) -> None:
    recorder.release.clear()  # the worker blocks inside the handler
    assert post(server, json.dumps(payload()).encode())[0] == 200
    assert recorder.alerts == []
    # A repeat while the first copy waits adds nothing to the queue.
    second = alert()
    second["startsAt"] = "2026-12-04T17:09:00Z"
    assert post(server, json.dumps(payload(second)).encode())[0] == 200
    assert post(server, json.dumps(payload(second)).encode())[0] == 200
    recorder.release.set()
    assert server.wait_idle(30)
    assert [a.starts_at for a in recorder.alerts] == [1796403601.123456, 1796404140.0]


def _mutated(change: str) -> bytes:
    body = payload()
    first = body["alerts"][0]
    if change == "version":
        body["version"] = "3"
    elif change == "no-version":
        del body["version"]
    elif change == "not-json":
        return b"{not json"
    elif change == "array":
        return b"[]"
    elif change == "deep":
        return b"[" * 100_000 + b"]" * 100_000
    elif change == "no-alerts":
        body["alerts"] = []
    elif change == "alerts-not-list":
        body["alerts"] = {"a": 1}
    elif change == "many-alerts":
        body["alerts"] = [copy.deepcopy(first) for _ in range(1001)]
    elif change == "no-job":
        del first["labels"]["job"]
    elif change == "no-alertname":
        del first["labels"]["alertname"]
    elif change == "missing-cohort-label":
        del first["labels"]["prodlens_cohort_region"]
    elif change == "no-cohort":
        del first["labels"]["prodlens_cohorts"]
        del first["labels"]["prodlens_cohort_plan"], first["labels"]["prodlens_cohort_region"]
    elif change == "empty-cohorts-label":
        first["labels"]["prodlens_cohorts"] = ","
    elif change == "label-not-string":
        first["labels"]["prodlens_cohort_plan"] = ["enterprise"]
    elif change == "huge-label":
        first["labels"]["prodlens_cohort_plan"] = "x" * 5000
    elif change == "bad-status":
        first["status"] = "pending"
    elif change == "bad-time":
        first["startsAt"] = "yesterday"
    elif change == "bad-window":
        first["annotations"]["window"] = "forever"
    elif change == "second-alert-bad":
        broken = copy.deepcopy(first)
        del broken["labels"]["job"]
        body["alerts"].append(broken)
    return json.dumps(body).encode()


@pytest.mark.parametrize(("change", "reason"), [
    ("version", "version '3': only Alertmanager's webhook version \"4\""),
    ("no-version", "version 'None'"),
    ("not-json", "the body is not JSON"),
    ("array", "not a JSON object"),
    ("deep", "the body is not JSON"),
    ("no-alerts", "alerts: expected a non-empty list"),
    ("alerts-not-list", "alerts: expected a non-empty list"),
    ("many-alerts", "alerts: 1,001 alerts; at most 1,000"),
    ("no-job", "alerts[0].labels: job is missing"),
    ("no-alertname", "alerts[0].labels: alertname is missing"),
    ("missing-cohort-label", "label prodlens_cohort_region is missing"),
    ("no-cohort", "the labels name no cohort"),
    ("empty-cohorts-label", "names no cohort"),
    ("label-not-string", "alerts[0].labels['prodlens_cohort_plan']: expected a string"),
    ("huge-label", "expected a string of at most 4096 characters"),
    ("bad-status", "alerts[0].status: expected firing or resolved"),
    ("bad-time", "'yesterday' is not an RFC 3339 time"),
    ("bad-window", "'forever' is not a Prometheus duration"),
    ("second-alert-bad", "alerts[1].labels: job is missing"),
])
def test_malformed_bodies_get_400_with_the_reason_and_nothing_is_handled(
        server: NotifyServer, recorder: Recorder, change: str, reason: str) -> None:
    status, answer = post(server, _mutated(change))
    assert status == 400
    assert reason in answer["error"]
    assert len(server.queue) == 0
    # The server still works, and the next good body is the only one handled.
    assert post(server, json.dumps(payload()).encode())[0] == 200
    assert server.wait_idle(30)
    assert len(recorder.alerts) == 1


def test_a_huge_body_is_refused_unread(server: NotifyServer, recorder: Recorder) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.putrequest("POST", "/alertmanager")
        connection.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
        connection.endheaders()  # no body sent at all: the answer comes before any of it
        response = connection.getresponse()
        assert response.status == 400
        assert "at most 1,048,576" in json.loads(response.read())["error"]
    finally:
        connection.close()
    assert recorder.alerts == [] and len(server.queue) == 0


def test_wrong_path_and_method(server: NotifyServer) -> None:
    assert post(server, json.dumps(payload()).encode(), path="/")[0] == 404
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())) == (200, {"status": "ok",
                                                                     "queued": 0})
    connection.close()


def test_a_token_is_required_when_configured(recorder: Recorder) -> None:
    running = NotifyServer("127.0.0.1", 0, recorder, prefix=PREFIX, token="s3cret").start()
    try:
        body = json.dumps(payload()).encode()
        assert post(running, body)[0] == 401
        assert post(running, body, {"Authorization": "Bearer wrong"})[0] == 401
        assert post(running, body, {"Authorization": "Bearer s3cret"})[0] == 200
        assert running.wait_idle(30)
        assert len(recorder.alerts) == 1
    finally:
        running.stop()


def test_listening_beyond_loopback_needs_a_token() -> None:
    assert check_listen("127.0.0.1:9099", None) == ("127.0.0.1", 9099)
    assert check_listen("[::1]:9099", None) == ("::1", 9099)
    assert check_listen("0.0.0.0:9099", "t") == ("0.0.0.0", 9099)
    with pytest.raises(ReceiverError, match="not a loopback address: give a bearer token"):
        check_listen("0.0.0.0:9099", None)
    with pytest.raises(ReceiverError, match="expected HOST:PORT"):
        check_listen("9099", None)


def test_a_full_queue_answers_503(recorder: Recorder) -> None:
    recorder.release.clear()
    running = NotifyServer("127.0.0.1", 0, recorder, prefix=PREFIX, max_queued=1).start()
    try:
        first, second = alert(), alert()
        second["startsAt"] = "2026-12-04T17:09:00Z"
        assert post(running, json.dumps(payload(first)).encode())[0] == 200
        deadline = time.monotonic() + 30
        while len(running.queue) and time.monotonic() < deadline:  # the worker took it
            time.sleep(0.01)
        assert post(running, json.dumps(payload(second)).encode())[0] == 200
        third = alert()
        third["startsAt"] = "2026-12-04T17:19:00Z"
        status, answer = post(running, json.dumps(payload(third)).encode())
        assert status == 503 and "retry" in answer["error"]
    finally:
        recorder.release.set()
        running.stop()


def test_connections_beyond_the_bound_are_closed_unanswered(
        recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from prodlens.alerting import receiver

    monkeypatch.setattr(receiver, "MAX_CONNECTIONS", 4)
    running = NotifyServer("127.0.0.1", 0, recorder, prefix=PREFIX).start()
    idle = []
    try:
        for _ in range(4):  # slow clients: connected, nothing sent, each holding a handler
            idle.append(socket.create_connection(("127.0.0.1", running.port), timeout=10))
        # The server accepts these one by one: wait until the fifth is refused.
        def refused() -> bool:
            with socket.create_connection(("127.0.0.1", running.port), timeout=10) as extra:
                extra.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                return extra.recv(100) == b""

        deadline = time.monotonic() + 30
        while not refused():
            assert time.monotonic() < deadline
        for sock in idle:
            sock.close()
        idle.clear()
        deadline = time.monotonic() + 30
        while True:  # the slots come back as the idle handlers see their clients gone
            try:
                if post(running, json.dumps(payload()).encode())[0] == 200:
                    break
            except (ConnectionError, http.client.HTTPException):
                pass
            assert time.monotonic() < deadline
        assert running.wait_idle(30) and len(recorder.alerts) == 1
    finally:
        for sock in idle:
            sock.close()
        running.stop()
