"""Real servers for the alerting end-to-end test: processes on 127.0.0.1, bounded waits.

Prometheus and Alertmanager are Debian's packages (``.ci/run`` installs them), run from their
binaries with temp data dirs and free ports: never the packages' services or default ports.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
MISSING = ("Prometheus and Alertmanager are not installed (apt-get install prometheus "
           "prometheus-alertmanager; .ci/run does)")
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def poll(what: str, check: Callable[[], T | None], timeout: float,
         interval: float = 0.2) -> T:
    """``check()``'s first truthy result, polled until ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class Process:
    """A subprocess whose output goes to a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path,
                 env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=dict(env or os.environ),
                                            cwd=cwd)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited ({self.process.returncode}):\n"
                                 + self.tail())

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@contextlib.contextmanager
def processes() -> Iterator[list[Process]]:
    """Every process appended is stopped at the end, last started first."""
    started: list[Process] = []
    try:
        yield started
    finally:
        for process in reversed(started):
            process.stop()


def auto_instrumented_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This environment without OTEL_/PRODLENS_ variables, OpenTelemetry's sitecustomize first
    on PYTHONPATH (what ``opentelemetry-instrument`` does), then ``extra``."""
    spec = importlib.util.find_spec("opentelemetry.instrumentation.auto_instrumentation")
    assert spec is not None and spec.origin is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PRODLENS_"))}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(spec.origin).parent), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PRODLENS_"))}


class Recorder:
    """A local webhook receiver on 127.0.0.1: every POSTed JSON body, by path, with its time."""

    def __init__(self) -> None:
        self.received: list[tuple[float, str, Any]] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with recorder._lock:
                    recorder.received.append((time.time(), self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def bodies(self, path: str) -> list[tuple[float, Any]]:
        with self._lock:
            return [(at, body) for at, where, body in self.received if where == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def python(*argv: str) -> list[str]:
    return [sys.executable, *argv]


# --- the stack: the app, Prometheus, Alertmanager -------------------------------------------

HERE = Path(__file__).resolve().parent
#: The documented short windows of the end-to-end test (docs/alerting.md).
SHORT_WINDOW, LONG_WINDOW = "10s", "40s"
RULE_ARGS = ("--cohort", "plan", "--cohort", "region", "--pair", "plan,region",
             "--short-window", SHORT_WINDOW, "--long-window", LONG_WINDOW,
             "--min-rate", "0.2", "--interval", "1s")


class Stack:
    """The app (auto-instrumented, Prometheus exporter), Prometheus and Alertmanager."""

    def __init__(self, root: Path, started: list[Process], webhook_url: str) -> None:
        self.root = root
        self.spans = root / "spans"
        self.spans.mkdir()
        self.fault_file = root / "fault"
        self.app_port, self.metrics_port = free_port(), free_port()
        self.prometheus_port, self.alertmanager_port = free_port(), free_port()
        ready = root / "app-ready.json"
        self.app = Process("app", python(str(HERE / "alerting_app.py"), "--port",
                                         str(self.app_port), "--fault-file", str(self.fault_file),
                                         "--ready-file", str(ready)), root,
                           env=auto_instrumented_env({
                               "OTEL_SERVICE_NAME": "shop",
                               "OTEL_TRACES_EXPORTER": "prodlens_file",
                               "OTEL_METRICS_EXPORTER": "prometheus",
                               "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
                               "OTEL_EXPORTER_PROMETHEUS_PORT": str(self.metrics_port),
                               "OTEL_LOGS_EXPORTER": "none",
                               "OTEL_BSP_SCHEDULE_DELAY": "200",
                               "OTEL_BSP_MAX_QUEUE_SIZE": "100000",
                               "PRODLENS_FILE_PATH": str(self.spans / "spans.jsonl"),
                               "PRODLENS_CUSTOMER_FROM": "header:x-customer-id",
                               "PRODLENS_COHORT_PLAN_FROM": "header:x-plan",
                               "PRODLENS_COHORT_REGION_FROM": "header:x-region",
                           }), cwd=root)
        started.append(self.app)
        rules = subprocess.run(python("-m", "prodlens", "rules", *RULE_ARGS), env=clean_env(),
                               capture_output=True, text=True, check=True, timeout=60).stdout
        (root / "rules.yml").write_text(rules)
        inhibit = subprocess.run(python("-m", "prodlens", "rules", *RULE_ARGS, "--inhibit-rules"),
                                 env=clean_env(), capture_output=True, text=True, check=True,
                                 timeout=60).stdout
        (root / "prometheus.yml").write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(root / "rules.yml")],
            "alerting": {"alertmanagers": [{"static_configs": [
                {"targets": [f"127.0.0.1:{self.alertmanager_port}"]}]}]},
            "scrape_configs": [{"job_name": "shop", "static_configs": [
                {"targets": [f"127.0.0.1:{self.metrics_port}"]}]}],
        }))
        # The receiver config of docs/alerting.md, with the test's short timers.
        (root / "alertmanager.yml").write_text(f"""\
route:
  receiver: prodlens
  group_by: [alertname, job, prodlens_cohorts]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1m
receivers:
  - name: prodlens
    webhook_configs:
      - url: {webhook_url}
        send_resolved: true
{inhibit}""")
        self.alertmanager = Process("alertmanager", [
            ALERTMANAGER or "alertmanager", f"--config.file={root / 'alertmanager.yml'}",
            f"--storage.path={root / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{self.alertmanager_port}",
            "--cluster.listen-address=", "--log.level=warn"], root)
        started.append(self.alertmanager)
        self.prometheus = Process("prometheus", [
            PROMETHEUS or "prometheus", f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
            "--rules.alert.resend-delay=1s", "--log.level=warn"], root)
        started.append(self.prometheus)
        poll("the app", lambda: self._alive() and ready.exists(), 60)
        poll("Alertmanager", lambda: self._alive() and answers(
            f"http://127.0.0.1:{self.alertmanager_port}/-/ready"), 60)
        poll("Prometheus", lambda: self._alive() and answers(
            f"http://127.0.0.1:{self.prometheus_port}/-/ready"), 60)

    def _alive(self) -> bool:
        for process in (self.app, getattr(self, "alertmanager", None),
                        getattr(self, "prometheus", None)):
            if process is not None:
                process.check_alive()
        return True

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = (f"http://127.0.0.1:{self.prometheus_port}/api/v1/query?"
               + urllib.parse.urlencode({"query": expr}))
        answer = get_json(url)
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def alerts(self) -> list[dict[str, Any]]:
        answer = get_json(f"http://127.0.0.1:{self.prometheus_port}/api/v1/alerts")
        return [a for a in answer["data"]["alerts"] if a["state"] == "firing"]


class Traffic:
    """Customers calling the app from a few threads at a steady pace; every answer recorded."""

    PLANS = (("free", 0.5), ("pro", 0.3), ("enterprise", 0.2))
    REGIONS = (("eu", 0.5), ("us", 0.5))

    def __init__(self, port: int, *, customers: int = 120, per_second: float = 40.0,
                 threads: int = 4, seed: int = 7) -> None:
        rng = __import__("random").Random(seed)

        def pick(weighted: tuple[tuple[str, float], ...]) -> str:
            return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]

        self.customers = {f"c{n:03d}": (pick(self.PLANS), pick(self.REGIONS))
                          for n in range(customers)}
        self.answers: list[tuple[float, str, int]] = []
        self._port = port
        self._pause = threads / per_second
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(seed + n,), daemon=True)
                         for n in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self, seed: int) -> None:
        import http.client
        import random

        rng = random.Random(seed)
        names = sorted(self.customers)
        connection = http.client.HTTPConnection("127.0.0.1", self._port, timeout=10)
        while not self._stop.wait(self._pause):
            customer = rng.choice(names)
            plan, region = self.customers[customer]
            try:
                connection.request("GET", "/checkout", headers={
                    "x-customer-id": customer, "x-plan": plan, "x-region": region})
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self._port, timeout=10)
                status = 0
            with self._lock:
                self.answers.append((time.time(), customer, status))
        connection.close()

    def failed(self) -> list[tuple[float, str]]:
        with self._lock:
            return [(at, customer) for at, customer, status in self.answers if status >= 500]

    def count(self) -> int:
        with self._lock:
            return len(self.answers)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)
