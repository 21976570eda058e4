"""The zero-code examples, started exactly as their README says (directory, variables, command;
the port aside), print tagged spans with ``prodlens_console``, stop on Ctrl-C, and switch to
OTLP with the README's lines: a real OTLP/HTTP receiver on 127.0.0.1 gets the tagged spans.

The examples' own self-checks (``run_demo.py``) run in tests/integrations (test_fastapi.py,
test_celery.py); Django's zero-code run in tests/integrations/test_zero_code.py.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from doc_commands import COMMANDS, ROOT, Command, assignments
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

DOC_PORT = "8000"
CONSOLE_LINE = re.compile(r"\d\d:\d\d:\d\d\.\d{3} (?P<shape>.+?) (?P<status>ok|ERROR) "
                          r"\d+\.\d+m?s(?P<identity>( \S+=\S+)*)")
#: One request per example, as its README's curl lines send it.
REQUESTS = {
    "flask": ("/catalog", {"x-customer-id": "cust-acme", "x-plan": "pro", "x-region": "eu-west",
                           "x-app-version": "2.3.0"}),
    "fastapi": ("/t/t1/orders", {"x-customer-id": "acme", "x-plan": "pro"}),
    "django": ("/t/eu1/orders", {"x-customer-id": "acme", "x-plan": "pro"}),
}
EXPECTED = {
    "flask": {"enduser.id": "cust-acme", "prodlens.cohort.plan": "pro",
              "prodlens.cohort.region": "eu-west", "prodlens.cohort.app_version": "2.3.0"},
    "fastapi": {"enduser.id": "acme", "prodlens.cohort.plan": "pro",
                "prodlens.cohort.tenant": "t1"},
    "django": {"enduser.id": "acme", "prodlens.cohort.plan": "pro",
               "prodlens.cohort.tenant": "eu1"},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _readme(example: str) -> tuple[dict[str, str], Command, dict[str, str]]:
    """The example's documented run: variables exported before it, its command, and the
    variables of its "send the spans to a backend" block."""
    page = f"examples/{example}/README.md"
    commands = [c for c in COMMANDS if c.page == page]
    run = next(c for c in commands if "opentelemetry-instrument" in c.words)
    env: dict[str, str] = {}
    for command in commands[:commands.index(run)]:
        if command.words[0] == "export":
            env.update(assignments(command))
    backend = {}
    for command in commands[commands.index(run) + 1:]:
        if command.words[0] == "export":
            backend.update(assignments(command))
    return env, run, backend


@contextmanager
def _started(example: str, extra: Mapping[str, str]) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Start the example as documented (on a free port instead of 8000); yields its base URL."""
    env, run, _ = _readme(example)
    port = str(_free_port())
    prefix = assignments(run)
    argv = [w.replace(DOC_PORT, port) for w in run.words[len(prefix):]]
    assert argv[:2] == ["opentelemetry-instrument", "python"], run
    full_env = {**env, **{k: v.replace(DOC_PORT, port) for k, v in prefix.items()}, **extra}
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("opentelemetry-instrument")), sys.executable,
         *argv[2:]],
        cwd=run.cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", int(port)), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        assert process.poll() is None, process.communicate(timeout=10)[1][-3000:]
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)


def _get(url: str, headers: Mapping[str, str]) -> int:
    request = urllib.request.Request(url, headers=dict(headers))
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
        return int(response.status)


def _ctrl_c(process: subprocess.Popen[str]) -> tuple[str, str]:
    """Stop the app as the README says (Ctrl-C) and return its output; it must exit."""
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    return out, err


@pytest.mark.parametrize("example", sorted(REQUESTS))
def test_example_prints_tagged_spans_and_stops_on_ctrl_c(example: str) -> None:
    env, run, _ = _readme(example)
    assert env["OTEL_TRACES_EXPORTER"] == "prodlens_console"
    assert "OTEL_SERVICE_NAME" in env
    assert run.cwd == ROOT / "examples" / example
    path, headers = REQUESTS[example]
    with _started(example, {}) as (base, process):
        assert _get(base + path, headers) == 200
        out, err = _ctrl_c(process)
    lines = [line for line in out.splitlines() if CONSOLE_LINE.fullmatch(line)]
    assert len(lines) >= 2, out + err[-3000:]
    identity = " ".join(f"{k.removeprefix('enduser.id').removeprefix('prodlens.cohort.') or 'customer'}={v}"
                        for k, v in EXPECTED[example].items())
    for line in lines:  # the server span and the database spans, each with the identity
        match = CONSOLE_LINE.fullmatch(line)
        assert match is not None
        assert sorted(match["identity"].split()) == sorted(identity.split()), line
    kinds = {CONSOLE_LINE.fullmatch(line)["shape"].split()[1] for line in lines}  # type: ignore[index]
    assert {"server", "client"} <= kinds, lines  # FastAPI adds its internal "http send" spans
    # A README that shows sample output shows what the app prints (times and durations aside).
    sample = re.search(r"```text\n(.*?)```", (ROOT / run.page).read_text(), re.S)
    if sample is not None:
        printed = [line for line in out.splitlines() if not line.startswith(" * ")]  # banner
        assert [_shape(line) for line in printed] == [
            _shape(line) for line in sample.group(1).splitlines()]


def _shape(line: str) -> tuple[str, ...]:
    match = CONSOLE_LINE.fullmatch(line)
    assert match, line
    return match["shape"], match["status"], match["identity"]


class _Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP traces endpoint: decodes each protobuf export request."""

    received: list[tuple[str, str, ExportTraceServiceRequest]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.received.append((self.path, self.headers["Content-Type"], request))
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _otlp_receiver() -> Iterator[tuple[str, list[tuple[str, str, ExportTraceServiceRequest]]]]:
    received: list[tuple[str, str, ExportTraceServiceRequest]] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _value(any_value: Any) -> Any:
    return json.loads(json.dumps(getattr(any_value, any_value.WhichOneof("value"))))


@pytest.mark.parametrize("example", sorted(REQUESTS))
def test_example_switches_to_otlp_as_its_readme_says(example: str) -> None:
    _, _, backend = _readme(example)
    assert backend["OTEL_TRACES_EXPORTER"] == "otlp"
    assert backend["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in backend
    path, headers = REQUESTS[example]
    with _otlp_receiver() as (endpoint, received):
        with _started(example, {**backend, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}) as (
                base, process):
            assert _get(base + path, headers) == 200
            _, err = _ctrl_c(process)  # exit flushes the batch to the receiver
        assert received, err[-3000:]
    assert {(p, t) for p, t, _ in received} == {("/v1/traces", "application/x-protobuf")}
    spans = []
    for _, _, request in received:
        for resource_spans in request.resource_spans:
            service = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: _value(a.value) for a in span.attributes}
                    spans.append((service["service.name"], span.kind, {
                        k: v for k, v in attributes.items() if k in EXPECTED[example]}))
    env, _, _ = _readme(example)
    assert {2, 3} <= {s[1] for s in spans}, spans  # server and client (database) spans
    assert all(s[0] == env["OTEL_SERVICE_NAME"] and s[2] == EXPECTED[example] for s in spans)
