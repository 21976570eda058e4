"""Self-check of the zero-code Celery example (CI runs it): a worker (configured with OTEL_*
variables only) and the web producer run under ``opentelemetry-instrument`` on a filesystem
broker; two customers place orders; the worker's task spans must carry each one's identity.

    python examples/celery/run_demo.py      # exits 0 when every check passes
"""

from __future__ import annotations

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
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post(url: str, headers: dict[str, str]) -> Any:
    request = urllib.request.Request(url, data=b"", headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def read_spans(path: Path) -> list[dict[str, Any]]:
    """Spans of an OTLP/JSON lines file: name, trace id, attributes as a plain dict."""
    spans = []
    for line in path.read_text().splitlines() if path.exists() else []:
        for resource in json.loads(line).get("resourceSpans", []):
            for scope in resource.get("scopeSpans", []):
                for span in scope.get("spans", []):
                    attributes = {a["key"]: next(iter(a["value"].values()), None)
                                  for a in span.get("attributes", [])}
                    spans.append({"name": span["name"], "trace": span["traceId"],
                                  "attributes": attributes})
    return spans


def tags(span: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in span["attributes"].items()
            if k == "enduser.id" or k.startswith("prodlens.cohort.")}


def otel_env(work: Path, service: str, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(HERE),
        "BROKER_DIR": str(work / "broker"),
        "OTEL_SERVICE_NAME": service, "OTEL_TRACES_EXPORTER": "prodlens_file",
        "PRODLENS_FILE_PATH": str(work / f"{service}.jsonl"),
        "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
        "OTEL_BSP_SCHEDULE_DELAY": "50", **extra,
    }


def stop(process: subprocess.Popen[str], how: signal.Signals = signal.SIGTERM) -> str:
    if process.poll() is None:
        process.send_signal(how)
    try:
        output, _ = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate(timeout=10)
    return output or ""


def main() -> int:
    instrument = str(BIN / "opentelemetry-instrument")
    work = Path(tempfile.mkdtemp(prefix="prodlens-celery-demo-"))
    port = free_port()
    # The worker gets no PRODLENS_* variable at all: identity comes in the task messages.
    worker = subprocess.Popen(
        [instrument, str(BIN / "celery"), "-A", "tasks", "worker", "--pool=solo",
         "--concurrency=1", "-l", "warning", "--without-heartbeat", "--without-mingle",
         "--without-gossip"],
        env=otel_env(work, "worker"), cwd=HERE, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    web = subprocess.Popen(
        [instrument, sys.executable, str(HERE / "web.py")],
        env=otel_env(work, "web", PORT=str(port),
                     PRODLENS_CUSTOMER_FROM="header:x-customer-id",
                     PRODLENS_COHORT_PLAN_FROM="header:x-plan"),
        cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ok = False
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                post(base + "/orders/1", {"x-customer-id": "acme", "x-plan": "pro"})
                break
            except OSError:
                if time.monotonic() > deadline or web.poll() is not None:
                    print("the web app did not start")
                    return 1
                time.sleep(0.2)
        post(base + "/orders/2", {"x-customer-id": "globex", "x-plan": "free"})
        expected = {"acme": "pro", "globex": "free"}
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            runs = [s for s in read_spans(work / "worker.jsonl")
                    if s["name"] == "run/send_receipt"]
            if len(runs) >= 2:
                break
            if worker.poll() is not None:
                break
            time.sleep(0.2)
        spans = read_spans(work / "worker.jsonl")
        runs = [s for s in spans if s["name"] == "run/send_receipt"]
        seen = {}
        for run in runs:
            got = tags(run)
            children = [tags(s) for s in spans if s["trace"] == run["trace"] and s is not run]
            print(f"{run['name']:<20} {got}  children: {children}")
            customer = got.get("enduser.id")
            if customer in expected and got == {"enduser.id": customer,
                                                "prodlens.cohort.plan": expected[customer]}:
                seen[customer] = all(c == got for c in children) and bool(children)
        ok = seen == {"acme": True, "globex": True}
    finally:
        # The checks are done: a cold shutdown (SIGQUIT) spares the worker's warm-shutdown wait.
        web_output, worker_output = stop(web), stop(worker, signal.SIGQUIT)
    print("OK: the worker's task spans carry the customer and cohorts of the request that "
          "queued them" if ok else f"FAILED\nweb:\n{web_output[-2000:]}\n"
          f"worker:\n{worker_output[-3000:]}")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
