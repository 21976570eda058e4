"""Shared helpers for integration tests: real servers on 127.0.0.1, span filtering.

Import from test modules in this directory (``from servers import ...``).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes
from werkzeug.serving import BaseWSGIServer, make_server

import prodlens

PRODLENS_KEYS = ("enduser.id", "enduser.pseudo.id")


class RecordingSampler(Sampler):
    """Records the prodlens identity visible when each span is sampled (only spans of kind
    ``only`` when given, e.g. ``SpanKind.SERVER``)."""

    def __init__(self, only: SpanKind | None = None) -> None:
        self.seen: list[str | None] = []
        self.only = only

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str,
                      kind: SpanKind | None = None, attributes: Attributes = None,
                      links: Sequence[Link] | None = None, trace_state: Any = None
                      ) -> SamplingResult:
        if self.only is not None and kind != self.only:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        identity = prodlens.current()
        self.seen.append(identity.customer if identity else None)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return "recording"



def send_raw(base: str, request: bytes) -> bytes:
    """Send ``request`` as raw bytes (odd header bytes and all) to ``base``; the whole reply."""
    port = int(base.rsplit(":", 1)[1])
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            received += chunk
    return received


def prodlens_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """The attributes prodlens writes (customer and cohorts), exactly."""
    return {
        k: v for k, v in (attributes or {}).items()
        if k in PRODLENS_KEYS or k.startswith("prodlens.")
    }


@contextmanager
def serve_wsgi(app: Callable[..., Any], threaded: bool = True) -> Iterator[str]:
    """Serve a WSGI app with werkzeug on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=threaded)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def echo_baggage_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """A plain WSGI app that answers with the ``baggage`` header it received (JSON)."""
    body = json.dumps({"baggage": environ.get("HTTP_BAGGAGE")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


def fetch(url: str, headers: Mapping[str, str] | None = None, timeout: float = 10.0
          ) -> tuple[int, Any]:
    """GET ``url`` with urllib (not instrumented by any test), returning (status, JSON or text)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, body = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read().decode()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def instrument_command() -> str:
    """The venv's ``opentelemetry-instrument`` (next to the running interpreter)."""
    return str(Path(sys.executable).with_name("opentelemetry-instrument"))


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago."""

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@contextmanager
def run_instrumented(script: Path | Sequence[str], env: Mapping[str, str],
                     timeout: float = 30.0, port: int | None = None,
                     cwd: Path | None = None) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Run a script (or argv) under ``opentelemetry-instrument`` with exactly ``env``.

    Without ``port`` the script prints ``READY <port>`` once it listens; with ``port`` the
    port is polled. Yields (base URL, process); terminates it afterwards."""
    argv = [str(script)] if isinstance(script, Path) else list(script)
    process = subprocess.Popen(
        [instrument_command(), sys.executable, *argv], cwd=cwd,
        env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + timeout
        if port is not None:
            while time.monotonic() < deadline and process.poll() is None:
                if _listening(port):
                    break
                time.sleep(0.1)
            else:
                port = None
        while port is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            if line.startswith("READY "):
                port = int(line.split()[1])
                break
        if port is None:
            process.kill()
            _, err = process.communicate(timeout=10)
            raise AssertionError(f"instrumented app did not start: {err[-4000:]}")
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate(timeout=10)


def read_otlp_json_spans(path: Path) -> list[dict[str, Any]]:
    """Spans from an OTLP/JSON lines file as dicts: name, kind, trace_id, attributes (plain)."""
    spans: list[dict[str, Any]] = []
    if not path.exists():
        return spans
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        request = json.loads(line)
        for resource_spans in request.get("resourceSpans", []):
            for scope_spans in resource_spans.get("scopeSpans", []):
                for span in scope_spans.get("spans", []):
                    attributes = {}
                    for item in span.get("attributes", []):
                        value = item.get("value", {})
                        attributes[item["key"]] = next(iter(value.values()), None)
                    spans.append({"name": span.get("name"), "kind": span.get("kind"),
                                  "trace_id": span.get("traceId"), "attributes": attributes})
    return spans


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def clean_env(**extra: str) -> dict[str, str]:
    """Only the PRODLENS_* / OTEL_* variables given (nothing inherited)."""
    assert all(k.startswith(("PRODLENS_", "OTEL_")) for k in extra), extra
    return dict(extra)


__all__ = [
    "RecordingSampler",
    "clean_env",
    "echo_baggage_app",
    "fetch",
    "free_port",
    "instrument_command",
    "prodlens_attributes",
    "read_otlp_json_spans",
    "run_instrumented",
    "send_raw",
    "serve_wsgi",
    "wait_for",
]
