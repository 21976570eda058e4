"""End-to-end scenario against Arize Phoenix, run inside a private network namespace.

``test_e2e_phoenix.py`` launches this script as ``unshare --net -- python phoenix_scenario.py ...``.
In the fresh namespace the only interface is loopback, which this script brings up, so Phoenix's
gRPC listener (it binds every interface whatever ``PHOENIX_HOST`` says) cannot be reached from
outside, and nothing started here can reach anything but 127.0.0.1. The script refuses to run if
it sees any interface other than ``lo``.

Steps:
    1. Start Phoenix (own working directory, 127.0.0.1) and wait for ``/healthz``.
    2. Start ``examples/flask/app.py`` under ``opentelemetry-instrument`` exporting OTLP/HTTP to
       Phoenix's ``/v1/traces``, configured only by ``PRODLENS_*`` and ``OTEL_*`` variables.
    3. Send a fixed traffic mix from six customers; checkout fails in eu-west on app version 2.3.0.
    4. Stop the app with SIGINT: werkzeug returns from its serve loop and the SDK flushes at exit.
    5. Export the same traffic as hand-tagged spans to a second, *control* project with the SDK
       directly. The same queries on it check Phoenix and the queries without prodlens: when the
       control passes and the app's project does not, the tagging is at fault.
    6. Wait until each project holds every root span and its span count has stopped changing.
    7. Count spans through Phoenix's REST span list (``status_code=ERROR&attribute=key:value``)
       and its span query DSL (``prodlens.cohort.region == 'eu-west'``), by cohort and customer.

Phoenix and the app are stopped by PID whatever happens. The last line of stdout is one JSON object:
what was sent, what was expected, what Phoenix answered, and what listened where. Progress goes to
stderr; Phoenix's and the app's output go to ``phoenix.log`` and ``app.log`` in ``--workdir``.

Usage::

    unshare --net -- python phoenix_scenario.py --phoenix /phoenix-venv/bin/phoenix \\
        --instrument /test-venv/bin/opentelemetry-instrument --app examples/flask/app.py \\
        --workdir "$(mktemp -d)" --project prodlens-e2e-manual
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
# Fixed ports are safe: nothing else lives in this private namespace.
PHOENIX_PORT = 6006
PHOENIX_GRPC_PORT = 4317
APP_PORT = 8000
PHOENIX_URL = f"http://{LOOPBACK}:{PHOENIX_PORT}"
APP_URL = f"http://{LOOPBACK}:{APP_PORT}"

PHOENIX_START_TIMEOUT_S = 150.0
APP_START_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 20.0
INGEST_TIMEOUT_S = 90.0
POLL_INTERVAL_S = 0.5
MAX_PAGES = 50

#: The planted failure of examples/flask/app.py: checkout fails for this region on this version.
FAILING_REGION = "eu-west"
FAILING_APP_VERSION = "2.3.0"

#: Zero-code prodlens configuration of the app: environment only.
PRODLENS_ENV = {
    "PRODLENS_CUSTOMER_FROM": "header:x-customer-id",
    "PRODLENS_COHORT_PLAN_FROM": "header:x-plan",
    "PRODLENS_COHORT_REGION_FROM": "header:x-region",
    "PRODLENS_COHORT_APP_VERSION_FROM": "header:x-app-version",
}

#: Spans one request produces: the Flask server span plus one span per SQL statement the sqlite3
#: instrumentation traces (catalog: SELECT; checkout: SELECT, then INSERT unless it fails first).
#: The span names of the children, by (route, failed).
CHILD_SPANS = {
    ("catalog", False): ("SELECT",),
    ("checkout", False): ("SELECT", "INSERT"),
    ("checkout", True): ("SELECT",),
}


@dataclass(frozen=True)
class Customer:
    """One simulated customer: who they are, their cohorts and how many requests they send."""

    customer_id: str
    plan: str
    region: str
    app_version: str
    catalog_requests: int
    checkout_requests: int

    @property
    def checkout_fails(self) -> bool:
        return self.region == FAILING_REGION and self.app_version == FAILING_APP_VERSION

    def headers(self) -> dict[str, str]:
        return {
            "x-customer-id": self.customer_id,
            "x-plan": self.plan,
            "x-region": self.region,
            "x-app-version": self.app_version,
        }

    def tags(self) -> dict[str, str]:
        """The attributes prodlens should put on every span of this customer's requests."""
        return {
            "enduser.id": self.customer_id,
            "prodlens.cohort.plan": self.plan,
            "prodlens.cohort.region": self.region,
            "prodlens.cohort.app_version": self.app_version,
        }


#: 48 requests, 8 of them planted failures (cust-acme 5, cust-umbrella 3). eu-west also has a
#: healthy customer on 2.2.0 and 2.3.0 is healthy elsewhere: only the intersection fails.
CUSTOMERS = (
    Customer("cust-acme", "pro", "eu-west", "2.3.0", catalog_requests=3, checkout_requests=5),
    Customer("cust-umbrella", "enterprise", "eu-west", "2.3.0", 4, 3),
    Customer("cust-globex", "free", "eu-west", "2.2.0", 4, 4),
    Customer("cust-initech", "pro", "us-east", "2.3.0", 4, 4),
    Customer("cust-hooli", "free", "us-east", "2.2.0", 5, 3),
    Customer("cust-stark", "enterprise", "ap-south", "2.3.0", 4, 5),
)


def log(message: str) -> None:
    print(f"[phoenix-e2e {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- network namespace ---------------------------------------------------------------------------


def bring_up_private_loopback() -> list[str]:
    """Check that ``lo`` is the only interface (a fresh namespace), then bring it up."""
    links = subprocess.run(
        ["ip", "-o", "link", "show"], check=True, capture_output=True, text=True
    ).stdout
    names = sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines() if line)
    if names != ["lo"]:
        raise SystemExit(
            f"refusing to run: interfaces {names} are visible, so this is not a private network "
            "namespace; start this script with `unshare --net -- ...`"
        )
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    return names


def network_namespace(pid: int | str = "self") -> int:
    """Inode of a process's network namespace: equal inodes mean the same namespace."""
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def listeners() -> list[dict[str, str]]:
    """What listens on TCP in this namespace, from ``ss -Hltnp``."""
    out = subprocess.run(["ss", "-Hltnp"], check=True, capture_output=True, text=True).stdout
    return [
        {"local": parts[3], "process": " ".join(parts[5:])}
        for parts in (line.split() for line in out.splitlines())
        if len(parts) >= 4
    ]


# --- processes -----------------------------------------------------------------------------------


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop(process: subprocess.Popen[bytes] | None, name: str) -> int | None:
    """Stop one process this script started, by its PID: SIGINT, then SIGKILL after a wait."""
    if process is None:
        return None
    if process.poll() is None:
        log(f"stopping {name} (pid {process.pid})")
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log(f"{name} did not stop within {STOP_TIMEOUT_S:.0f}s; killing pid {process.pid}")
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
    return process.returncode


def http(
    method: str, url: str, *, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


def wait_for_phoenix(phoenix: subprocess.Popen[bytes], log_path: Path) -> float:
    started = time.monotonic()
    while time.monotonic() < started + PHOENIX_START_TIMEOUT_S:
        if phoenix.poll() is not None:
            raise SystemExit(
                f"Phoenix exited with {phoenix.returncode} before it was healthy:\n{tail(log_path)}"
            )
        try:
            if http("GET", f"{PHOENIX_URL}/healthz")[0] == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(POLL_INTERVAL_S)
    raise SystemExit(f"Phoenix not healthy after {PHOENIX_START_TIMEOUT_S:.0f}s:\n{tail(log_path)}")


def wait_for_port(process: subprocess.Popen[bytes], port: int, log_path: Path) -> float:
    """Wait until the app accepts connections, without sending a request (that would add spans)."""
    started = time.monotonic()
    while time.monotonic() < started + APP_START_TIMEOUT_S:
        if process.poll() is not None:
            raise SystemExit(
                f"the app exited with {process.returncode} before listening:\n{tail(log_path)}"
            )
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1.0):
                return time.monotonic() - started
        except OSError:
            time.sleep(POLL_INTERVAL_S / 2)
    raise SystemExit(f"the app did not listen within {APP_START_TIMEOUT_S:.0f}s:\n{tail(log_path)}")


def clean_env() -> dict[str, str]:
    """The caller's environment without any OTEL_*, PRODLENS_* or PHOENIX_* setting."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "PRODLENS_", "PHOENIX_"))
    }


def start_phoenix(phoenix_bin: str, workdir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    phoenix_dir = workdir / "phoenix"
    phoenix_dir.mkdir()
    env = clean_env() | {
        "PHOENIX_WORKING_DIR": str(phoenix_dir),
        "PHOENIX_HOST": LOOPBACK,
        "PHOENIX_PORT": str(PHOENIX_PORT),
        "PHOENIX_GRPC_PORT": str(PHOENIX_GRPC_PORT),
        "PHOENIX_TELEMETRY_ENABLED": "false",
        # No fetches of web fonts, the WASM sandbox or the docs MCP server at start-up: the
        # namespace has no route out anyway, and this keeps failed downloads out of the log.
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
    }
    log_path = workdir / "phoenix.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [phoenix_bin, "serve"],
            env=env,
            cwd=phoenix_dir,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return process, log_path


def start_app(
    instrument_bin: str, python_bin: str, app: Path, workdir: Path, project: str
) -> tuple[subprocess.Popen[bytes], Path]:
    env = (
        clean_env()
        | PRODLENS_ENV
        | {
            "PORT": str(APP_PORT),
            "OTEL_SERVICE_NAME": "prodlens-e2e-shop",
            "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={project}",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{PHOENIX_URL}/v1/traces",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            # Export promptly; the default 5 s delay only slows the test down.
            "OTEL_BSP_SCHEDULE_DELAY": "500",
        }
    )
    log_path = workdir / "app.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [instrument_bin, python_bin, str(app)],
            env=env,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return process, log_path


# --- traffic and what it should produce ----------------------------------------------------------


def traffic_plan() -> list[tuple[Customer, str]]:
    """Every request, in a fixed order (no randomness): customers take turns, and each customer
    alternates catalog and checkout so the failures spread over the run."""
    queues: dict[str, list[str]] = {}
    for customer in CUSTOMERS:
        catalog, checkout = customer.catalog_requests, customer.checkout_requests
        queue: list[str] = []
        while catalog or checkout:
            if catalog:
                queue.append("catalog")
                catalog -= 1
            if checkout:
                queue.append("checkout")
                checkout -= 1
        queues[customer.customer_id] = queue
    plan: list[tuple[Customer, str]] = []
    while any(queues.values()):
        for customer in CUSTOMERS:
            if queues[customer.customer_id]:
                plan.append((customer, queues[customer.customer_id].pop(0)))
    return plan


def fails(customer: Customer, route: str) -> bool:
    return route == "checkout" and customer.checkout_fails


def expected_counts() -> dict[str, Any]:
    """What each query must answer on a project holding this traffic, tagged by prodlens.

    Keys mirror :func:`query_phoenix`'s ``rest`` section; the DSL section expects the same numbers.
    """
    errors_by: dict[str, Counter[str]] = {
        "customer": Counter(),
        "plan": Counter(),
        "region": Counter(),
    }
    spans_by_customer: Counter[str] = Counter()
    intersection = 0
    for customer, route in traffic_plan():
        failed = fails(customer, route)
        spans_by_customer[customer.customer_id] += 1 + len(CHILD_SPANS[route, failed])
        if failed:
            errors_by["customer"][customer.customer_id] += 1
            errors_by["plan"][customer.plan] += 1
            errors_by["region"][customer.region] += 1
            if (customer.region, customer.app_version) == (FAILING_REGION, FAILING_APP_VERSION):
                intersection += 1

    def full(name: str, values: list[str]) -> dict[str, int]:
        return {value: errors_by[name][value] for value in values}

    return {
        "error_spans": sum(errors_by["customer"].values()),
        "error_spans_by_region": full("region", regions()),
        "error_spans_by_plan": full("plan", plans()),
        "error_spans_by_customer": full("customer", customer_ids()),
        "error_spans_eu_west_2_3_0": intersection,
        "spans_by_customer": {c: spans_by_customer[c] for c in customer_ids()},
    }


def customer_ids() -> list[str]:
    return [customer.customer_id for customer in CUSTOMERS]


def regions() -> list[str]:
    return sorted({customer.region for customer in CUSTOMERS})


def plans() -> list[str]:
    return sorted({customer.plan for customer in CUSTOMERS})


def send_traffic() -> dict[str, Any]:
    """Send the plan to the app; record per route what was sent and any unexpected status."""
    sent: Counter[str] = Counter()
    mismatches = []
    for index, (customer, route) in enumerate(traffic_plan()):
        if route == "catalog":
            status = http("GET", f"{APP_URL}/catalog", headers=customer.headers())[0]
            expected = 200
        else:
            status = http(
                "POST",
                f"{APP_URL}/checkout",
                body={"sku": "sku-beans", "quantity": 1 + index % 3},
                headers=customer.headers(),
            )[0]
            expected = 500 if fails(customer, route) else 201
        sent[route] += 1
        if status != expected:
            mismatches.append(f"{route} for {customer.customer_id}: {status}, expected {expected}")
    return {
        "requests": sum(sent.values()),
        "by_route": dict(sent),
        "failed_requests": sum(fails(c, r) for c, r in traffic_plan()),
        "status_mismatches": mismatches,
    }


def send_control_spans(project: str) -> int:
    """Export with the SDK directly the spans prodlens should make the app produce.

    Same traffic plan, same span shapes (server span plus one child per traced SQL statement),
    with the attributes set by hand and the server span marked ERROR where the app fails.
    """
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import SpanKind, StatusCode

    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": "prodlens-e2e-control", "openinference.project.name": project}
        )
    )
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{PHOENIX_URL}/v1/traces"))
    )
    tracer = provider.get_tracer("prodlens-e2e-control")
    spans = 0
    for customer, route in traffic_plan():
        failed = fails(customer, route)
        name = "GET /catalog" if route == "catalog" else "POST /checkout"
        with tracer.start_as_current_span(
            name, kind=SpanKind.SERVER, attributes=customer.tags()
        ) as server_span:
            for child in CHILD_SPANS[route, failed]:
                with tracer.start_as_current_span(
                    child, kind=SpanKind.CLIENT, attributes=customer.tags()
                ):
                    spans += 1
            if failed:
                server_span.set_status(StatusCode.ERROR, "CheckoutError")
        spans += 1
    provider.shutdown()  # flushes the batch processor
    return spans


# --- Phoenix queries -----------------------------------------------------------------------------


def count_spans(project: str, **filters: str | list[str]) -> int:
    """Count spans through ``GET /v1/projects/{project}/spans`` (the REST list, no DSL).

    ``attribute`` takes ``key:value`` strings (repeat to AND them); ``status_code`` is OK, ERROR or
    UNSET; ``parent_id="null"`` keeps root spans. A project Phoenix has not created yet (no span
    arrived) counts as 0.
    """
    total = 0
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        params: list[tuple[str, str]] = [("limit", "1000")]
        for key, value in filters.items():
            params.extend((key, item) for item in ([value] if isinstance(value, str) else value))
        if cursor:
            params.append(("cursor", cursor))
        url = (
            f"{PHOENIX_URL}/v1/projects/{urllib.parse.quote(project, safe='')}/spans?"
            + urllib.parse.urlencode(params)
        )
        status, _, body = http("GET", url)
        if status == 404:
            return 0
        if status != 200:
            raise SystemExit(f"GET {url} answered {status}: {body[:500]!r}")
        page = json.loads(body)
        total += len(page["data"])
        cursor = page.get("next_cursor")
        if not cursor:
            return total
    raise SystemExit(f"more than {MAX_PAGES} pages of spans for {filters}")


def count_dsl(project: str, condition: str) -> int | str:
    """Count spans through ``POST /v1/spans`` with a query-DSL filter condition.

    Phoenix answers ``Accept: application/json`` with a multipart body, one JSON part per query.
    Returns the number of matching spans, or the error text when Phoenix rejects the condition.
    """
    url = f"{PHOENIX_URL}/v1/spans?" + urllib.parse.urlencode({"project_name": project})
    body = {"queries": [{"filter": {"condition": condition}}], "limit": 10_000}
    status, headers, payload = http("POST", url, body=body, headers={"accept": "application/json"})
    if status != 200:
        return f"HTTP {status}: {payload[:300].decode(errors='replace')}"
    content_type = {key.lower(): value for key, value in headers.items()}.get("content-type", "")
    boundary = content_type.partition("boundary=")[2].strip()
    if not boundary:
        return f"unexpected content type {content_type!r}"
    rows = 0
    for part in payload.decode().split(f"--{boundary}"):
        _, separator, content = part.partition("\r\n\r\n")
        if separator and content.strip():
            rows += len(json.loads(content)["data"])
    return rows


def wait_for_ingestion(project: str, requests: int) -> dict[str, Any]:
    """Wait until every request's root span is in and the span total stops changing."""
    started = time.monotonic()
    roots = total = -1
    stable_polls = 0
    while time.monotonic() < started + INGEST_TIMEOUT_S:
        roots = count_spans(project, parent_id="null")
        new_total = count_spans(project)
        stable_polls = stable_polls + 1 if new_total == total else 0
        total = new_total
        if roots >= requests and stable_polls >= 2:
            break
        time.sleep(POLL_INTERVAL_S * 2)
    return {
        "root_spans": roots,
        "spans": total,
        "seconds": round(time.monotonic() - started, 1),
        "complete": roots >= requests and stable_polls >= 2,
    }


def query_phoenix(project: str) -> dict[str, Any]:
    """Ask Phoenix for ERROR spans by cohort and by customer, through the REST list and the DSL."""
    rest = {
        "error_spans": count_spans(project, status_code="ERROR"),
        "error_spans_by_region": {
            region: count_spans(
                project, status_code="ERROR", attribute=f"prodlens.cohort.region:{region}"
            )
            for region in regions()
        },
        "error_spans_by_plan": {
            plan: count_spans(
                project, status_code="ERROR", attribute=f"prodlens.cohort.plan:{plan}"
            )
            for plan in plans()
        },
        "error_spans_by_customer": {
            customer: count_spans(project, status_code="ERROR", attribute=f"enduser.id:{customer}")
            for customer in customer_ids()
        },
        # Repeated `attribute` parameters AND together: the failing intersection.
        "error_spans_eu_west_2_3_0": count_spans(
            project,
            status_code="ERROR",
            attribute=[
                f"prodlens.cohort.region:{FAILING_REGION}",
                f"prodlens.cohort.app_version:{FAILING_APP_VERSION}",
            ],
        ),
        # Every span, not only the server span, must carry the customer.
        "spans_by_customer": {
            customer: count_spans(project, attribute=f"enduser.id:{customer}")
            for customer in customer_ids()
        },
    }
    dsl = {
        "error_spans_by_region": {
            region: count_dsl(
                project, f"status_code == 'ERROR' and prodlens.cohort.region == '{region}'"
            )
            for region in regions()
        },
        "error_spans_by_customer": {
            customer: count_dsl(project, f"status_code == 'ERROR' and enduser.id == '{customer}'")
            for customer in customer_ids()
        },
        # Recorded, not asserted: DESIGN.md's gotcha says this spelling silently matches nothing.
        "attributes_subscript_spelling": count_dsl(
            project,
            f"status_code == 'ERROR' and attributes['prodlens.cohort.region'] == '{FAILING_REGION}'",
        ),
    }
    return {"rest": rest, "dsl": dsl}


# --- main ----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description="End-to-end scenario against Arize Phoenix.")
    parser.add_argument("--phoenix", required=True, help="path of the `phoenix` executable")
    parser.add_argument("--instrument", required=True, help="path of `opentelemetry-instrument`")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the app")
    parser.add_argument("--app", required=True, type=Path, help="path of examples/flask/app.py")
    parser.add_argument("--workdir", required=True, type=Path, help="empty scratch directory")
    parser.add_argument("--project", required=True, help="Phoenix project name for this run")
    args = parser.parse_args()
    app_path: Path = args.app.resolve()
    # A shell without job control starts background jobs with SIGINT ignored, and children
    # inherit that: the app would then ignore the SIGINT that makes it exit and flush its spans.
    # Catching SIGINT here means the children start with the default disposition.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    control_project = f"{args.project}-control"

    result: dict[str, Any] = {"project": args.project, "control_project": control_project}
    result["interfaces"] = bring_up_private_loopback()
    result["expected"] = expected_counts()
    phoenix = app = None
    try:
        started = time.monotonic()
        phoenix, phoenix_log = start_phoenix(args.phoenix, args.workdir)
        result["phoenix_start_seconds"] = round(wait_for_phoenix(phoenix, phoenix_log), 1)
        log(f"Phoenix healthy after {result['phoenix_start_seconds']}s (pid {phoenix.pid})")

        app, app_log = start_app(args.instrument, args.python, app_path, args.workdir, args.project)
        result["app_start_seconds"] = round(wait_for_port(app, APP_PORT, app_log), 1)
        log(f"app listening after {result['app_start_seconds']}s (pid {app.pid})")
        result["listeners"] = listeners()
        result["network_namespaces"] = {
            "scenario": network_namespace(),
            "phoenix": network_namespace(phoenix.pid),
            "app": network_namespace(app.pid),
        }

        traffic_started = time.monotonic()
        result["sent"] = send_traffic()
        result["traffic_seconds"] = round(time.monotonic() - traffic_started, 1)
        log(f"sent {result['sent']['requests']} requests in {result['traffic_seconds']}s")

        result["app_exit_code"] = stop(app, "app")
        if result["app_exit_code"] != 0:
            result["app_log_tail"] = tail(app_log, 30)
        result["control_spans_sent"] = send_control_spans(control_project)

        requests = result["sent"]["requests"]
        result["ingestion"] = wait_for_ingestion(args.project, requests)
        log(f"app project: {result['ingestion']}")
        result["control_ingestion"] = wait_for_ingestion(control_project, requests)
        log(f"control project: {result['control_ingestion']}")
        result["phoenix"] = query_phoenix(args.project)
        result["control"] = query_phoenix(control_project)
        result["total_seconds"] = round(time.monotonic() - started, 1)
    finally:
        stop(app, "app")
        result["phoenix_exit_code"] = stop(phoenix, "Phoenix")
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
