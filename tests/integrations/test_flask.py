"""Flask: a real app on werkzeug (127.0.0.1), several customers, server/DB/outbound spans."""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import flask
import pytest
import requests
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.trace import SpanKind
from servers import RecordingSampler, echo_baggage_app, fetch, prodlens_attributes, serve_wsgi

import prodlens
from prodlens.instrumentor import ProdlensInstrumentor

ENV = {
    "PRODLENS_CUSTOMER_FROM": "header:x-customer-id",
    "PRODLENS_COHORT_PLAN_FROM": "header:x-plan",
    "PRODLENS_COHORT_TENANT_FROM": "path:tenant",
    "PRODLENS_PROPAGATE_TO": "127.0.0.0/8",
}


def make_app(downstream: str | None = None) -> flask.Flask:
    app = flask.Flask("prodlens-test-flask")

    @app.route("/t/<tenant>/work")
    def work(tenant: str) -> Any:
        db = sqlite3.connect(":memory:")
        db.cursor().execute("select 1").fetchall()
        db.close()
        echoed = None
        if downstream is not None:
            echoed = requests.get(downstream + "/echo", timeout=5).json()["baggage"]
        identity = prodlens.current()
        return {"customer": identity.customer if identity else None, "baggage": echoed}

    @app.route("/plain")
    def plain() -> Any:
        return "ok"

    return app


@pytest.fixture
def flask_setup(prodlens_setup: Any) -> Iterator[Any]:
    apps: list[flask.Flask] = []

    def factory(env: dict[str, str], downstream: str | None = None
                ) -> tuple[flask.Flask, Any]:
        traced = prodlens_setup(env, sqlite=True)
        app = make_app(downstream)
        FlaskInstrumentor().instrument_app(app, tracer_provider=traced.provider)
        RequestsInstrumentor().instrument(tracer_provider=traced.provider)
        traced.teardowns.append(RequestsInstrumentor().uninstrument)
        apps.append(app)
        return app, traced

    yield factory
    for app in apps:
        FlaskInstrumentor().uninstrument_app(app)


def by_trace(spans: list[Any]) -> dict[int, list[Any]]:
    traces: dict[int, list[Any]] = defaultdict(list)
    for span in spans:
        traces[span.context.trace_id].append(span)
    return traces


def test_server_db_and_outbound_spans_carry_the_customer(flask_setup: Any) -> None:
    with serve_wsgi(echo_baggage_app) as downstream:
        app, traced = flask_setup(ENV, downstream)
        with serve_wsgi(app) as base:
            status, body = fetch(base + "/t/t1/work",
                                 {"x-customer-id": "acme", "x-plan": "pro"})
    assert status == 200
    assert body["customer"] == "acme"
    assert body["baggage"] == (
        "prodlens.customer=acme,prodlens.cohort.plan=pro,prodlens.cohort.tenant=t1"
    )
    spans = {(s.kind, s.name.split()[0]): s for s in traced.spans()}
    expected = {"enduser.id": "acme", "prodlens.cohort.plan": "pro",
                "prodlens.cohort.tenant": "t1"}
    server = spans[(SpanKind.SERVER, "GET")]
    assert server.name == "GET /t/<tenant>/work"
    assert prodlens_attributes(server.attributes) == expected  # tenant tagged late
    db = next(s for s in traced.spans() if s.name.startswith("select"))
    assert prodlens_attributes(db.attributes) == expected
    client = spans[(SpanKind.CLIENT, "GET")]
    assert prodlens_attributes(client.attributes) == expected


def test_many_customers_concurrently_never_mix(flask_setup: Any) -> None:
    customers = [f"cust-{i}" for i in range(6)]
    with serve_wsgi(echo_baggage_app) as downstream:
        app, traced = flask_setup(ENV, downstream)
        with serve_wsgi(app) as base:
            def call(i: int) -> tuple[str, dict[str, Any]]:
                customer = customers[i % len(customers)]
                status, body = fetch(f"{base}/t/ten{i % 3}/work",
                                     {"x-customer-id": customer, "x-plan": f"p{i % 2}"})
                assert status == 200
                return customer, body

            with ThreadPoolExecutor(max_workers=8) as pool:
                results = list(pool.map(call, range(48)))
    for customer, body in results:
        assert body["customer"] == customer
        assert f"prodlens.customer={customer}," in body["baggage"]
    traces = by_trace(traced.spans())
    server_traces = [t for t in traces.values() if any(s.kind == SpanKind.SERVER for s in t)]
    assert len(server_traces) == 48
    counts: dict[str, int] = defaultdict(int)
    for spans in server_traces:
        server = next(s for s in spans if s.kind == SpanKind.SERVER)
        attrs = prodlens_attributes(server.attributes)
        # Each trace: one customer, and every span of it carries exactly the server's tags.
        for span in spans:
            assert prodlens_attributes(span.attributes) == attrs, span.name
        counts[str(attrs["enduser.id"])] += 1
    assert counts == {c: 8 for c in customers}


def test_late_flask_login_user_tags_the_open_server_span(prodlens_setup: Any) -> None:
    import flask_login

    traced = prodlens_setup({"PRODLENS_CUSTOMER_FROM": "user",
                             "PRODLENS_COHORT_PLAN_FROM": "user:plan"}, sqlite=True)
    app = make_app()
    app.secret_key = "test"
    login = flask_login.LoginManager(app)

    class User(flask_login.UserMixin):
        def __init__(self, uid: str) -> None:
            self.id = uid
            self.plan = "enterprise"

    @login.request_loader
    def load(request: flask.Request) -> User | None:
        uid = request.headers.get("x-user")
        return User(uid) if uid else None

    FlaskInstrumentor().instrument_app(app, tracer_provider=traced.provider)
    try:
        with serve_wsgi(app) as base:
            assert fetch(base + "/t/x/work", {"x-user": "u-7"})[0] == 200
            assert fetch(base + "/t/x/work")[0] == 200  # anonymous
    finally:
        FlaskInstrumentor().uninstrument_app(app)
    servers = [s for s in traced.spans() if s.kind == SpanKind.SERVER]
    assert [prodlens_attributes(s.attributes) for s in servers] == [
        {"enduser.id": "u-7", "prodlens.cohort.plan": "enterprise"}, {}]
    dbs = [s for s in traced.spans() if s.name.startswith("select")]
    assert [prodlens_attributes(s.attributes) for s in dbs] == [
        {"enduser.id": "u-7", "prodlens.cohort.plan": "enterprise"}, {}]


def test_identify_in_a_view_is_scoped_to_the_request(prodlens_setup: Any) -> None:
    traced = prodlens_setup({"PRODLENS_CUSTOMER_FROM": "header:x-none"})
    app = flask.Flask("identify-test")

    @app.route("/login/<name>")
    def login(name: str) -> Any:
        prodlens.identify(name, plan="trial")
        return "ok"

    @app.route("/after")
    def after() -> Any:
        return json.dumps(prodlens.current() is None)

    FlaskInstrumentor().instrument_app(app, tracer_provider=traced.provider)
    try:
        client = app.test_client()
        assert client.get("/login/bob").status_code == 200
        assert client.get("/after").get_data(as_text=True) == "true"
    finally:
        FlaskInstrumentor().uninstrument_app(app)
    servers = [prodlens_attributes(s.attributes) for s in traced.spans()]
    assert servers == [{"enduser.id": "bob", "prodlens.cohort.plan": "trial"}, {}]


def test_flask_instrument_replacing_the_class_still_gets_patched(prodlens_setup: Any) -> None:
    traced = prodlens_setup({"PRODLENS_CUSTOMER_FROM": "header:x-customer-id"})
    FlaskInstrumentor().instrument(tracer_provider=traced.provider)
    try:
        app = flask.Flask("instrumented-class")
        app.add_url_rule("/", "index", lambda: "ok")
        assert app.test_client().get("/", headers={"x-customer-id": "c1"}).status_code == 200
    finally:
        FlaskInstrumentor().uninstrument()
    assert [prodlens_attributes(s.attributes) for s in traced.spans()] == [{"enduser.id": "c1"}]


def test_uninstrument_leaves_requests_untagged(prodlens_setup: Any) -> None:
    traced = prodlens_setup({"PRODLENS_CUSTOMER_FROM": "header:x-customer-id"})
    app = make_app()
    FlaskInstrumentor().instrument_app(app, tracer_provider=traced.provider)
    try:
        client = app.test_client()
        client.get("/plain", headers={"x-customer-id": "before"})
        ProdlensInstrumentor().uninstrument()
        assert not hasattr(flask.Flask.__call__, "__wrapped__")
        client.get("/plain", headers={"x-customer-id": "after"})
        ProdlensInstrumentor().instrument(tracer_provider=traced.provider)
        client.get("/plain", headers={"x-customer-id": "again"})
    finally:
        FlaskInstrumentor().uninstrument_app(app)
    assert [prodlens_attributes(s.attributes) for s in traced.spans()] == [
        {"enduser.id": "before"}, {}, {"enduser.id": "again"}]


def test_early_identity_is_visible_to_the_sampler_at_root_start() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    sampler = RecordingSampler()
    provider = TracerProvider(sampler=sampler)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    ProdlensInstrumentor().instrument(tracer_provider=provider, environ={
        "PRODLENS_CUSTOMER_FROM": "header:x-customer-id", "PRODLENS_METRICS": "false"})
    app = make_app()
    FlaskInstrumentor().instrument_app(app, tracer_provider=provider)
    try:
        client = app.test_client()
        client.get("/plain", headers={"x-customer-id": "acme"})
        client.get("/plain")
    finally:
        FlaskInstrumentor().uninstrument_app(app)
        ProdlensInstrumentor().uninstrument()
    assert sampler.seen == ["acme", None]
