"""Zero-code: apps run under ``opentelemetry-instrument`` with only PRODLENS_* and OTEL_*
variables, exporting to an OTLP/JSON file; and the two-service baggage test."""

from __future__ import annotations

import base64
import json
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
