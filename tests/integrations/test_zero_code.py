"""Zero-code: apps run under ``opentelemetry-instrument`` with only PRODLENS_* and OTEL_*
variables, exporting to an OTLP/JSON file; and the two-service baggage test."""

from __future__ import annotations

import base64
import json
import re
import shlex
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import flask
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.trace import SpanKind
from servers import (
    clean_env,
    echo_baggage_app,
    fetch,
    free_port,
    prodlens_attributes,
    read_otlp_json_spans,
    run_instrumented,
    serve_wsgi,
    wait_for,
)

APP = Path(__file__).parent / "apps" / "zero_code_app.py"
# The file exporter's entry point name, as installed (``prodlens_file``).
FILE_EXPORTER = next(e.name for e in entry_points(group="opentelemetry_traces_exporter")
                     if e.value == "prodlens.exporter:OTLPJsonFileSpanExporter")
SERVER, CLIENT = 2, 3  # OTLP span kinds


def otel_env(spans: Path, service: str, **prodlens: str) -> dict[str, str]:
    return clean_env(
        OTEL_SERVICE_NAME=service,
        OTEL_TRACES_EXPORTER=FILE_EXPORTER,
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_BSP_SCHEDULE_DELAY="50",
        PRODLENS_FILE_PATH=str(spans),
        PRODLENS_METRICS="false",
        **prodlens,
    )


def token(claims: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"Bearer eyJhbGciOiJub25lIn0.{body}.c2ln"


def test_zero_code_flask_app_tags_every_span(tmp_path: Path) -> None:
    spans_file = tmp_path / "spans.jsonl"
    env = otel_env(spans_file, "zero-code",
                   PRODLENS_CUSTOMER_FROM="jwt:sub,header:x-customer-id",
                   PRODLENS_COHORT_PLAN_FROM="jwt:plan",
                   PRODLENS_COHORT_TENANT_FROM="path:tenant",
                   PRODLENS_PROPAGATE_TO="127.0.0.0/8")
    with serve_wsgi(echo_baggage_app) as echo, run_instrumented(APP, env) as (base, _):
        status, body = fetch(f"{base}/orders/t1?call={echo}/echo",
                             {"authorization": token({"sub": "acme", "plan": "pro"})})
        assert status == 200, body
        assert json.loads(body["downstream"])["baggage"] == (
            "prodlens.customer=acme,prodlens.cohort.plan=pro,prodlens.cohort.tenant=t1")
        assert fetch(f"{base}/orders/t2", {"x-customer-id": "globex"})[0] == 200
        assert wait_for(lambda: len(read_otlp_json_spans(spans_file)) >= 5)
    spans = read_otlp_json_spans(spans_file)
    acme = {"enduser.id": "acme", "prodlens.cohort.plan": "pro", "prodlens.cohort.tenant": "t1"}
    globex = {"enduser.id": "globex", "prodlens.cohort.tenant": "t2"}
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_trace.setdefault(span["trace_id"], []).append(span)
    assert len(by_trace) == 2
    for trace_spans in by_trace.values():
        kinds = sorted((s["kind"], s["name"]) for s in trace_spans)
        tags = [prodlens_attributes(s["attributes"]) for s in trace_spans]
        if len(trace_spans) == 3:
            assert kinds == [(SERVER, "GET /orders/<tenant>"), (CLIENT, "GET"),
                             (CLIENT, "select")]
            assert tags == [acme] * 3
        else:
            assert kinds == [(SERVER, "GET /orders/<tenant>"), (CLIENT, "select")]
            assert tags == [globex] * 2


def test_two_services_over_baggage(tmp_path: Path, prodlens_setup: Any) -> None:
    """A (in-process, tags acme/plan=pro from headers) calls B (zero-code subprocess,
    PRODLENS_CUSTOMER_FROM=baggage) over loopback; a non-matching host gets no prodlens."""
    spans_file = tmp_path / "b.jsonl"
    env_b = otel_env(spans_file, "service-b", PRODLENS_CUSTOMER_FROM="baggage")
    traced = prodlens_setup({"PRODLENS_CUSTOMER_FROM": "header:x-customer-id",
                             "PRODLENS_COHORT_PLAN_FROM": "header:x-plan",
                             "PRODLENS_PROPAGATE_TO": "127.0.0.0/8"})
    RequestsInstrumentor().instrument(tracer_provider=traced.provider)
    app_a = flask.Flask("service-a")
    FlaskInstrumentor().instrument_app(app_a, tracer_provider=traced.provider)
    try:
        with serve_wsgi(echo_baggage_app) as echo, run_instrumented(APP, env_b) as (base_b, _):
            import requests

            other = echo.replace("127.0.0.1", "localhost")

            @app_a.route("/checkout")
            def checkout() -> Any:
                to_b = requests.get(base_b + "/orders/b1", timeout=5).json()
                to_other = requests.get(other + "/echo", timeout=5).json()
                return {"b": to_b, "other": to_other["baggage"]}

            with serve_wsgi(app_a) as base_a:
                status, body = fetch(base_a + "/checkout",
                                     {"x-customer-id": "acme", "x-plan": "pro"})
            assert status == 200, body
            assert body["other"] is None  # nothing from prodlens to a non-matching host
            assert wait_for(lambda: len(read_otlp_json_spans(spans_file)) >= 2)
    finally:
        FlaskInstrumentor().uninstrument_app(app_a)
        RequestsInstrumentor().uninstrument()
    b_spans = read_otlp_json_spans(spans_file)
    assert sorted(s["name"] for s in b_spans) == ["GET /orders/<tenant>", "select"]
    for span in b_spans:
        assert prodlens_attributes(span["attributes"]) == {
            "enduser.id": "acme", "prodlens.cohort.plan": "pro"}
    a_server = [s for s in traced.spans() if s.kind == SpanKind.SERVER]
    assert [prodlens_attributes(s.attributes) for s in a_server] == [
        {"enduser.id": "acme", "prodlens.cohort.plan": "pro"}]
    # B continued A's trace.
    assert {s["trace_id"] for s in b_spans} == {format(a_server[0].context.trace_id, "032x")}


def test_django_example_zero_code(tmp_path: Path) -> None:
    """examples/django, run as its README says (DJANGO_SETTINGS_MODULE is Django's own)."""
    example = Path(__file__).parents[2] / "examples" / "django"
    spans_file = tmp_path / "django.jsonl"
    env = otel_env(spans_file, "shop",
                   PRODLENS_CUSTOMER_FROM="jwt:sub,header:x-customer-id",
                   PRODLENS_COHORT_PLAN_FROM="jwt:plan,header:x-plan",
                   PRODLENS_COHORT_TENANT_FROM="path:tenant")
    env["DJANGO_SETTINGS_MODULE"] = "shop.settings"
    port = free_port()
    argv = ["manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
    with run_instrumented(argv, env, port=port, cwd=example) as (base, _):
        status, body = fetch(base + "/t/eu1/orders", {"x-customer-id": "acme", "x-plan": "pro"})
        assert (status, body) == (200, {"tenant": "eu1", "orders": ["order-1"]})
        assert fetch(base + "/t/us2/orders",
                     {"authorization": token({"sub": "globex"})})[0] == 200
        assert wait_for(lambda: len(read_otlp_json_spans(spans_file)) >= 4)
    spans = read_otlp_json_spans(spans_file)
    tags = sorted((s["kind"], s["name"], tuple(sorted(prodlens_attributes(s["attributes"])
                                                        .items()))) for s in spans)
    acme = (("enduser.id", "acme"), ("prodlens.cohort.plan", "pro"),
            ("prodlens.cohort.tenant", "eu1"))
    globex = (("enduser.id", "globex"), ("prodlens.cohort.tenant", "us2"))
    assert tags == sorted([
        (SERVER, "GET t/<str:tenant>/orders", acme), (CLIENT, "select", acme),
        (SERVER, "GET t/<str:tenant>/orders", globex), (CLIENT, "select", globex),
    ])


ROOT = Path(__file__).parents[2]
CONSOLE_LINE = re.compile(r"(?P<time>\d\d:\d\d:\d\d\.\d{3}) (?P<rest>.+?) (?P<status>ok|ERROR) "
                          r"(?P<duration>\d+\.\d+m?s)(?P<identity>( \S+=\S+)*)")


def readme_zero_code() -> tuple[dict[str, str], list[str], list[str]]:
    """The README's zero-code section: its exported variables, its commands, its output lines."""
    section = (ROOT / "README.md").read_text().split("## Tag spans with zero code", 1)[1]
    section = section.split("\n## ", 1)[0]
    commands = re.search(r"```bash\n(.*?)```", section, re.S).group(1).splitlines()
    env: dict[str, str] = {}
    for line in commands:
        if line.startswith("export "):
            for assignment in shlex.split(line, comments=True)[1:]:
                name, value = assignment.split("=", 1)
                env[name] = value
    output = re.search(r"```text\n(.*?)```", section, re.S).group(1).splitlines()
    return env, commands, output


def console_shape(line: str) -> tuple[str, str]:
    """A ``prodlens_console`` line without its time and duration: (service kind name, identity)."""
    match = CONSOLE_LINE.fullmatch(line)
    assert match, f"not a prodlens_console line: {line!r}"
    return f"{match['rest']} {match['status']}", match["identity"].strip()


def test_readme_zero_code_block_installs_what_its_output_needs() -> None:
    """The README's block installs the instrumentations (bootstrap) and names the service."""
    env, commands, _ = readme_zero_code()
    assert "opentelemetry-bootstrap -a install" in [c.split("#")[0].strip() for c in commands]
    assert env["OTEL_SERVICE_NAME"] == "shop"
    # What bootstrap installs, given what this environment has: the three kinds of span.
    listed = subprocess.run([str(Path(sys.executable).with_name("opentelemetry-bootstrap")),
                             "-a", "requirements"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    names = {line.split("==")[0] for line in listed.stdout.split()}
    assert {"opentelemetry-instrumentation-flask", "opentelemetry-instrumentation-sqlite3",
            "opentelemetry-instrumentation-requests"} <= names


def test_readme_zero_code_output_under_opentelemetry_instrument() -> None:
    """The README's variables, verbatim, under ``opentelemetry-instrument`` with the compact
    console exporter: server, sqlite3 and requests client spans all carry the identity, and the
    printed lines are the README's example output (times and durations aside)."""
    env, _, documented = readme_zero_code()
    assert env["OTEL_TRACES_EXPORTER"] == "prodlens_console"
    env = clean_env(OTEL_BSP_SCHEDULE_DELAY="50", PRODLENS_METRICS="false", **env)
    with serve_wsgi(echo_baggage_app) as echo, run_instrumented(APP, env) as (base, process):
        status, body = fetch(f"{base}/orders/t1?call={echo}/echo",
                             {"x-customer-id": "acme", "x-region": "eu-west"})
        assert status == 200, body
        process.terminate()  # SIGTERM: the app exits through atexit, which flushes the spans
        out, err = process.communicate(timeout=20)
    lines = out.splitlines()
    assert lines, err[-3000:]
    assert [console_shape(line.rstrip("\n")) for line in lines] == [
        console_shape(line) for line in documented]
    assert [console_shape(line.rstrip("\n"))[0].split()[:2] for line in lines] == [
        ["shop", "client"], ["shop", "client"], ["shop", "server"]]
