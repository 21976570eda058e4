"""Self-check of the zero-code FastAPI example (CI runs it): start ``app.py`` under
``opentelemetry-instrument`` with only ``PRODLENS_*`` and ``OTEL_*`` variables, send requests
from two customers, stop it, and check the exported spans carry the right tags.

    python examples/fastapi/run_demo.py      # exits 0 when every check passes
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, headers: dict[str, str]) -> Any:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def read_spans(path: Path) -> list[dict[str, Any]]:
    """Spans of an OTLP/JSON lines file: name, kind, trace id, attributes as a plain dict."""
    spans = []
    for line in path.read_text().splitlines() if path.exists() else []:
        for resource in json.loads(line).get("resourceSpans", []):
            for scope in resource.get("scopeSpans", []):
                for span in scope.get("spans", []):
                    attributes = {a["key"]: next(iter(a["value"].values()), None)
                                  for a in span.get("attributes", [])}
                    spans.append({"name": span["name"], "kind": span.get("kind"),
                                  "trace": span["traceId"], "attributes": attributes})
    return spans


def tags(span: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in span["attributes"].items()
            if k == "enduser.id" or k.startswith("prodlens.cohort.")}


def main() -> int:
    instrument = shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent))
    if instrument is None:
        print("opentelemetry-instrument not found: pip install opentelemetry-distro")
        return 1
    work = Path(tempfile.mkdtemp(prefix="prodlens-fastapi-demo-"))
    spans_file = work / "spans.jsonl"
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PORT": str(port),
        "PRODLENS_CUSTOMER_FROM": "user,header:x-customer-id",
        "PRODLENS_COHORT_PLAN_FROM": "header:x-plan",
        "PRODLENS_COHORT_TENANT_FROM": "path:tenant",
        "OTEL_SERVICE_NAME": "orders",
        "OTEL_TRACES_EXPORTER": "prodlens_file",  # OTLP/JSON lines; use otlp for a backend
        "PRODLENS_FILE_PATH": str(spans_file),
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    server = subprocess.Popen([instrument, sys.executable, str(HERE / "app.py")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                get(base + "/t/t1/orders", {})
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    print("the app did not start")
                    return 1
                time.sleep(0.2)
        basic = "Basic " + base64.b64encode(b"alice:secret").decode()
        answers = [
            get(base + "/t/t1/orders", {"x-customer-id": "acme", "x-plan": "pro"}),
            get(base + "/t/t2/report", {"x-customer-id": "globex", "x-plan": "free"}),
            get(base + "/t/t1/orders", {"authorization": basic, "x-plan": "pro"}),
        ]
        print("answers:", answers)
    finally:
        server.send_signal(signal.SIGTERM)  # uvicorn exits cleanly: spans are flushed
        output, _ = server.communicate(timeout=20)
    spans = [s for s in read_spans(spans_file) if tags(s) or s["kind"] == 2]
    expected = {
        ("acme", "pro", "t1"): {"enduser.id": "acme", "prodlens.cohort.plan": "pro",
                                "prodlens.cohort.tenant": "t1"},
        ("globex", "free", "t2"): {"enduser.id": "globex", "prodlens.cohort.plan": "free",
                                   "prodlens.cohort.tenant": "t2"},
        ("alice", "pro", "t1"): {"enduser.id": "alice", "prodlens.cohort.plan": "pro",
                                 "prodlens.cohort.tenant": "t1"},
    }
    seen = set()
    ok = True
    for span in spans:
        if span["kind"] == 2 or span["name"].upper().startswith("SELECT"):  # server, database
            got = tags(span)
            key = (got.get("enduser.id"), got.get("prodlens.cohort.plan"),
                   got.get("prodlens.cohort.tenant"))
            if key[0] is None:
                continue  # the start-up probe (no customer)
            print(f"{span['name']:<28} {got}")
            ok = ok and expected.get(key) == got
            seen.add((key, span["kind"] == 2))
    ok = ok and seen == {(key, server_span) for key in expected for server_span in (True, False)}
    print("OK: every server and database span carries its own customer and cohorts" if ok
          else "FAILED\n" + output[-3000:])
    shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
