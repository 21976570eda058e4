"""Generic WSGI middleware: scope per request, identity resolved before the server span."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from servers import RecordingSampler, fetch, prodlens_attributes, serve_wsgi
from werkzeug.test import Client

import prodlens
from prodlens.instrumentor import ProdlensInstrumentor
from prodlens.integrations.wsgi import ProdlensMiddleware


def inner(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    identity = prodlens.current()
    body = (identity.customer if identity and identity.customer else "-").encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


@pytest.fixture
def sampled() -> Any:
    sampler = RecordingSampler()
    provider = TracerProvider(sampler=sampler)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    ProdlensInstrumentor().instrument(tracer_provider=provider, environ={
        "PRODLENS_CUSTOMER_FROM": "header:x-customer-id,user",
        "PRODLENS_COHORT_PLAN_FROM": "query:plan", "PRODLENS_METRICS": "false"})
    yield sampler, provider, exporter
    ProdlensInstrumentor().uninstrument()
    provider.shutdown()


def test_identity_is_resolved_before_the_server_span(sampled: Any) -> None:
    sampler, provider, exporter = sampled
    app = ProdlensMiddleware(OpenTelemetryMiddleware(inner, tracer_provider=provider))
    with serve_wsgi(app) as base:
        assert fetch(base + "/x?plan=pro", {"x-customer-id": "acme"}) == (200, "acme")
        assert fetch(base + "/x") == (200, "-")
    assert sampler.seen == ["acme", None]  # the sampler saw the identity at root start
    assert [prodlens_attributes(s.attributes) for s in exporter.get_finished_spans()] == [
        {"enduser.id": "acme", "prodlens.cohort.plan": "pro"}, {}]


def test_remote_user_is_the_user_source(sampled: Any) -> None:
    _, provider, exporter = sampled
    app = ProdlensMiddleware(OpenTelemetryMiddleware(inner, tracer_provider=provider))
    response = Client(app).get("/", environ_base={"REMOTE_USER": "alice"})
    assert response.get_data(as_text=True) == "alice"
    assert [prodlens_attributes(s.attributes) for s in exporter.get_finished_spans()] == [
        {"enduser.id": "alice"}]


def test_scope_ends_with_the_request(sampled: Any) -> None:
    app = ProdlensMiddleware(inner)
    assert Client(app).get("/", headers={"x-customer-id": "a"}).get_data(as_text=True) == "a"
    assert prodlens.current() is None
    assert Client(app).get("/").get_data(as_text=True) == "-"


def test_application_errors_propagate_unchanged(sampled: Any) -> None:
    def broken(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        raise KeyError("app bug")

    with pytest.raises(KeyError, match="app bug"):
        Client(ProdlensMiddleware(broken)).get("/", headers={"x-customer-id": "a"})
    assert prodlens.current() is None


def test_disabled_prodlens_passes_through() -> None:
    ProdlensInstrumentor().instrument(tracer_provider=TracerProvider(),
                                      environ={"PRODLENS_ENABLED": "false"})
    try:
        app = ProdlensMiddleware(inner)
        assert Client(app).get("/", headers={"x-customer-id": "a"}).get_data(as_text=True) == "-"
    finally:
        ProdlensInstrumentor().uninstrument()
