"""Generic ASGI: a scope per request resolved before the server span, isolation between
concurrent requests on one event loop, lifespan untouched, hostile input served normally."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from asgi_servers import (
    BAD_ENV,
    HOSTILE_REQUESTS,
    check_bounded,
    get_concurrently,
    lifespan_startup,
    raw_get,
    serve_asgi,
    websocket_session,
)
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from servers import RecordingSampler, fetch, prodlens_attributes, send_raw, wait_for

import prodlens
from prodlens.instrumentor import ProdlensInstrumentor
from prodlens.integrations import _patching
from prodlens.integrations.asgi import ProdlensASGIMiddleware


class Traced:
    def __init__(self, env: dict[str, str]) -> None:
        self.sampler = RecordingSampler(only=SpanKind.SERVER)
        self.provider = TracerProvider(sampler=self.sampler)
        self.exporter = InMemorySpanExporter()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        ProdlensInstrumentor().instrument(tracer_provider=self.provider,
                                          environ={"PRODLENS_METRICS": "false", **env})

    def servers(self) -> list[Any]:
        return [s for s in self.exporter.get_finished_spans() if s.kind == SpanKind.SERVER]

    def otel(self, app: Any) -> OpenTelemetryMiddleware:
        return OpenTelemetryMiddleware(app, tracer_provider=self.provider)


@pytest.fixture
def traced() -> Iterator[Any]:
    made: list[Traced] = []

    def factory(env: dict[str, str]) -> Traced:
        made.append(Traced(env))
        return made[-1]

    yield factory
    ProdlensInstrumentor().uninstrument()
    for t in made:
        t.provider.shutdown()


async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A raw ASGI app answering with the identity it sees (after yielding to the loop)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]
            await send({"type": f"lifespan.{kind}.complete", "identity": str(prodlens.current())})
            if kind == "shutdown":
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        identity = prodlens.current()
        await send({"type": "websocket.send", "text": identity.customer if identity else "-"})
        await send({"type": "websocket.close", "code": 1000})
        return
    await asyncio.sleep(0.01)
    identity = prodlens.current()
    baggage = [v.decode("latin-1") for k, v in scope["headers"] if k == b"baggage"]
    body = json.dumps({
        "customer": identity.customer if identity else None,
        "cohorts": dict(identity.cohorts) if identity else {},
        "baggage": baggage,
    }).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


ENV = {"PRODLENS_CUSTOMER_FROM": "header:x-customer-id,cookie:cid",
       "PRODLENS_COHORT_PLAN_FROM": "query:plan"}


def test_identity_is_resolved_before_the_server_span(traced: Any) -> None:
    t = traced(ENV)
    app = ProdlensASGIMiddleware(t.otel(inner))
    with serve_asgi(app) as base:
        results = get_concurrently(base, [("/x?plan=pro", {"x-customer-id": "acme"}),
                                          ("/y", {"cookie": "a=1; cid=globex"}), ("/z", {})])
    assert [body["customer"] for _, body in results] == ["acme", "globex", None]
    assert sorted(map(str, t.sampler.seen)) == ["None", "acme", "globex"]  # at root start
    tags = sorted((prodlens_attributes(s.attributes) for s in t.servers()), key=len)
    assert tags == [{}, {"enduser.id": "globex"},
                    {"enduser.id": "acme", "prodlens.cohort.plan": "pro"}]


def test_many_concurrent_requests_on_one_loop_never_mix(traced: Any) -> None:
    t = traced(ENV)
    app = ProdlensASGIMiddleware(t.otel(inner))
    requests = [(f"/r?plan=p{i % 3}&who=c{i % 7}", {"x-customer-id": f"c{i % 7}"} if i % 5 else {})
                for i in range(60)]
    with serve_asgi(app) as base:
        results = get_concurrently(base, requests)
    for (path, headers), (status, body) in zip(requests, results, strict=True):
        assert status == 200
        assert body["customer"] == headers.get("x-customer-id")
        assert body["cohorts"] == {"plan": path.split("plan=")[1].split("&")[0]}
    assert len(t.servers()) == 60
    for span in t.exporter.get_finished_spans():  # every span, http send spans included
        attrs = prodlens_attributes(span.attributes)
        trace_server = next(s for s in t.servers() if s.context.trace_id == span.context.trace_id)
        target = next(str(v) for v in (trace_server.attributes or {}).values()
                      if "who=" in str(v))
        if "enduser.id" in attrs:
            assert target.endswith(f"who={attrs['enduser.id']}")
        assert attrs == prodlens_attributes(trace_server.attributes)


def test_instrumentor_patches_the_otel_middleware_without_wrapping(traced: Any) -> None:
    t = traced(ENV)
    assert _patching.patched(OpenTelemetryMiddleware, "__call__")
    with serve_asgi(t.otel(inner)) as base:  # no ProdlensASGIMiddleware: zero-code
        [(_, body)] = get_concurrently(base, [("/x", {"x-customer-id": "acme"})])
    assert body["customer"] == "acme"
    assert t.sampler.seen == ["acme"]
    assert [prodlens_attributes(s.attributes) for s in t.servers()] == [{"enduser.id": "acme"}]
    ProdlensInstrumentor().uninstrument()
    assert not _patching.patched(OpenTelemetryMiddleware, "__call__")
    t.exporter.clear()
    with serve_asgi(t.otel(inner)) as base:
        [(_, body)] = get_concurrently(base, [("/x", {"x-customer-id": "acme"})])
    assert body["customer"] is None
    assert [prodlens_attributes(s.attributes) for s in t.servers()] == [{}]


def test_middleware_inside_the_otel_middleware_tags_the_open_server_span(traced: Any) -> None:
    t = traced(ENV)
    ProdlensInstrumentor().uninstrument()  # only the explicit middleware, in the wrong place
    prodlens.configure(t.provider, environ={"PRODLENS_METRICS": "false", **ENV})
    app = t.otel(ProdlensASGIMiddleware(inner))
    with serve_asgi(app) as base:
        [(_, body)] = get_concurrently(base, [("/x?plan=pro", {"x-customer-id": "acme"})])
    assert body["customer"] == "acme"
    assert [prodlens_attributes(s.attributes) for s in t.servers()] == [
        {"enduser.id": "acme", "prodlens.cohort.plan": "pro"}]


def test_user_set_by_an_outer_auth_middleware(traced: Any) -> None:
    t = traced({"PRODLENS_CUSTOMER_FROM": "user", "PRODLENS_COHORT_ROLE_FROM": "user:role"})

    class User:
        is_authenticated = True
        identity = "alice"
        role = "admin"

    def auth(app: Any) -> Any:
        async def middleware(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                scope["user"] = User()
            await app(scope, receive, send)
        return middleware

    with serve_asgi(auth(ProdlensASGIMiddleware(t.otel(inner)))) as base:
        [(_, body)] = get_concurrently(base, [("/x", {})])
    assert body == {"customer": "alice", "cohorts": {"role": "admin"}, "baggage": []}
    assert [prodlens_attributes(s.attributes) for s in t.servers()] == [
        {"enduser.id": "alice", "prodlens.cohort.role": "admin"}]


def test_websocket_gets_a_scope_and_lifespan_passes_through(traced: Any) -> None:
    t = traced(ENV)
    app = ProdlensASGIMiddleware(t.otel(inner))
    sent = asyncio.run(lifespan_startup(app))
    assert [m["identity"] for m in sent] == ["None", "None"]
    sent = asyncio.run(websocket_session(app, "/ws", {"x-customer-id": "acme"}))
    assert [m.get("text") for m in sent if m["type"] == "websocket.send"] == ["acme"]
    assert [prodlens_attributes(s.attributes) for s in t.servers()] == [{"enduser.id": "acme"}]


def test_inbound_prodlens_baggage_is_read_then_stripped(traced: Any) -> None:
    traced({"PRODLENS_CUSTOMER_FROM": "baggage"})
    with serve_asgi(ProdlensASGIMiddleware(inner)) as base:
        # urllib: prodlens's outbound patches (httpx, ...) strip prodlens members themselves.
        _, body = fetch(base + "/x", {
            "baggage": "prodlens.customer=acme,prodlens.cohort.plan=pro,other=1"})
    assert body["customer"] == "acme"
    assert body["baggage"] == ["other=1"]  # not passed on by OpenTelemetry's propagator


def test_application_errors_propagate_and_the_scope_closes(traced: Any) -> None:
    traced(ENV)

    async def broken(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert prodlens.current() is not None
        raise KeyError("app bug")

    scope = {"type": "http", "headers": [(b"x-customer-id", b"acme")], "path": "/",
             "query_string": b""}

    async def call() -> None:
        with pytest.raises(KeyError, match="app bug"):
            await ProdlensASGIMiddleware(broken)(scope, None, None)  # type: ignore[arg-type]
        assert prodlens.current() is None
        assert "prodlens.scope" not in scope

    asyncio.run(call())


def test_disabled_prodlens_passes_through(traced: Any) -> None:
    traced({"PRODLENS_ENABLED": "false", **ENV})
    with serve_asgi(ProdlensASGIMiddleware(inner)) as base:
        [(_, body)] = get_concurrently(base, [("/x", {"x-customer-id": "acme"})])
    assert body["customer"] is None


# ------------------------------------------------------------------------------ hostile input

@pytest.fixture
def no_prodlens_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.WARNING, logger="prodlens")
    yield
    bad = [r.getMessage() for r in caplog.records
           if r.name == "prodlens" and "internal error" in r.getMessage()]
    assert bad == []


def test_hostile_requests_are_served_over_a_real_server(traced: Any,
                                                        no_prodlens_errors: None) -> None:
    t = traced(BAD_ENV)
    app = ProdlensASGIMiddleware(t.otel(inner))
    with serve_asgi(app, max_header_bytes=512 * 1024) as base:
        for case, path, headers in HOSTILE_REQUESTS:
            t.exporter.clear()
            assert raw_get(base, path, headers) == 200, case
            assert wait_for(lambda: len(t.servers()) == 1, timeout=5), case
            check_bounded(t.servers())


def test_raw_odd_bytes_over_a_socket(traced: Any, no_prodlens_errors: None) -> None:
    t = traced(BAD_ENV)
    with serve_asgi(ProdlensASGIMiddleware(t.otel(inner))) as base:
        raw = (b"GET /x?plan=%ff%fe HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"X-Customer-Id: \xff\xfe\x80\xc3(caf\xc3\xa9\r\n"
               b"Authorization: Bearer \xff.\xfe.\x80\r\n"
               b"Cookie: sid=\xe2\x82; plan=\xff\r\n"
               b"baggage: prodlens.customer=\xff\xfe,prodlens.cohort.plan=%C3%A9\r\n"
               b"Connection: close\r\n\r\n")
        received = send_raw(base, raw)
    assert received.startswith(b"HTTP/1.1 200")
    check_bounded(t.servers())
    tags = prodlens_attributes(t.servers()[0].attributes)
    assert tags["enduser.id"] == "\ufffd"  # cookie sid: an invalid UTF-8 fragment, replaced
