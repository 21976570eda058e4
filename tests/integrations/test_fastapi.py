"""FastAPI/Starlette: a real app on uvicorn (127.0.0.1), concurrent customers on one event loop,
server and DB spans tagged, path params and AuthenticationMiddleware's user tag the open server
span."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import fastapi
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
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from servers import RecordingSampler, prodlens_attributes, wait_for
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    BaseUser,
    SimpleUser,
)
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection

import prodlens
from prodlens.instrumentor import ProdlensInstrumentor
from prodlens.integrations import _patching

ENV = {
    "PRODLENS_CUSTOMER_FROM": "header:x-customer-id",
    "PRODLENS_COHORT_PLAN_FROM": "header:x-plan",
    "PRODLENS_COHORT_TENANT_FROM": "path:tenant",
}


class TieredUser(SimpleUser):
    def __init__(self, username: str, tier: str) -> None:
        super().__init__(username)
        self.tier = tier


class HeaderAuth(AuthenticationBackend):
    """Authenticates ``x-user: name/tier``; queries sqlite first (a span before routing)."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        raw = conn.headers.get("x-user")
        if not raw:
            return None
        db = sqlite3.connect(":memory:")
        db.cursor().execute("select 'auth'").fetchall()
        db.close()
        name, _, tier = raw.partition("/")
        return AuthCredentials(["authenticated"]), TieredUser(name, tier or "basic")


def query_db() -> None:
    db = sqlite3.connect(":memory:")
    db.cursor().execute("select 1").fetchall()
    db.close()


def whoami() -> dict[str, Any]:
    identity = prodlens.current()
    if identity is None:
        return {"customer": None, "cohorts": {}}
    return {"customer": identity.customer, "cohorts": dict(identity.cohorts)}


def make_app() -> fastapi.FastAPI:
    app = fastapi.FastAPI()
    app.add_middleware(AuthenticationMiddleware, backend=HeaderAuth())
    router = fastapi.APIRouter(prefix="/r")

    @app.get("/t/{tenant}/async")
    async def work_async(tenant: str) -> dict[str, Any]:
        await asyncio.sleep(0.01)  # let the other requests on the loop interleave
        query_db()
        await asyncio.sleep(0.01)
        return whoami()

    @app.get("/t/{tenant}/sync")
    def work_sync(tenant: str) -> dict[str, Any]:  # runs in the threadpool
        time.sleep(0.005)
        query_db()
        return whoami()

    @router.get("/{tenant}/included")
    async def included(tenant: str) -> dict[str, Any]:
        query_db()
        return whoami()

    @app.get("/identify")
    def identify_in_endpoint() -> dict[str, Any]:
        prodlens.identify("late-acme", plan="gold")  # e.g. after a Depends-based login
        query_db()
        return whoami()

    @app.websocket("/ws/{tenant}")
    async def socket(websocket: fastapi.WebSocket, tenant: str) -> None:
        await websocket.accept()
        await websocket.send_json(whoami())
        await websocket.close()

    app.include_router(router)
    return app


@pytest.fixture
def fastapi_setup(prodlens_setup: Any) -> Iterator[Any]:
    apps: list[fastapi.FastAPI] = []

    def factory(env: dict[str, str]) -> tuple[fastapi.FastAPI, Any]:
        traced = prodlens_setup(env, sqlite=True)
        app = make_app()
        FastAPIInstrumentor.instrument_app(app, tracer_provider=traced.provider)
        apps.append(app)
        return app, traced

    yield factory
    for app in apps:
        FastAPIInstrumentor.uninstrument_app(app)


def by_trace(spans: Sequence[ReadableSpan]) -> dict[int, list[ReadableSpan]]:
    traces: dict[int, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        assert span.context is not None
        traces[span.context.trace_id].append(span)
    return traces


def server_of(spans: Sequence[ReadableSpan]) -> ReadableSpan:
    (server,) = [s for s in spans if s.kind == SpanKind.SERVER]
    return server


def test_server_and_db_spans_carry_customer_cohorts_and_path(fastapi_setup: Any) -> None:
    app, traced = fastapi_setup(ENV)
    with serve_asgi(app) as base:
        [(status, body)] = get_concurrently(
            base, [("/t/t1/async", {"x-customer-id": "acme", "x-plan": "pro"})])
    assert status == 200
    expected = {"enduser.id": "acme", "prodlens.cohort.plan": "pro",
                "prodlens.cohort.tenant": "t1"}
    assert body == {"customer": "acme", "cohorts": {"plan": "pro", "tenant": "t1"}}
    spans = traced.spans()
    server = server_of(spans)
    assert server.name == "GET /t/{tenant}/async"
    assert prodlens_attributes(server.attributes) == expected  # tenant tagged late
    (db,) = [s for s in spans if s.name.lower().startswith("select")]
    assert prodlens_attributes(db.attributes) == expected
    for span in spans:  # http send spans too
        assert prodlens_attributes(span.attributes) == expected, span.name


def test_many_customers_concurrently_on_one_event_loop_never_mix(fastapi_setup: Any) -> None:
    app, traced = fastapi_setup(ENV)
    customers = [f"cust-{i}" for i in range(6)]
    requests = []
    for i in range(48):
        kind = ("async", "sync", "included")[i % 3]
        path = f"/r/ten{i % 4}/included" if kind == "included" else f"/t/ten{i % 4}/{kind}"
        requests.append((f"{path}?who={customers[i % 6]}",
                         {"x-customer-id": customers[i % 6], "x-plan": f"p{i % 2}"}))
    with serve_asgi(app) as base:
        results = get_concurrently(base, requests)
    for (path, headers), (status, body) in zip(requests, results, strict=True):
        assert status == 200
        assert body == {"customer": headers["x-customer-id"],
                        "cohorts": {"plan": headers["x-plan"], "tenant": path.split("/")[2]}}
    traces = by_trace(traced.spans())
    assert len(traces) == 48
    counts: dict[str, int] = defaultdict(int)
    for spans in traces.values():
        server = server_of(spans)
        attrs = prodlens_attributes(server.attributes)
        who = next(str(v).split("who=")[1] for v in (server.attributes or {}).values()
                   if "who=" in str(v))
        assert attrs["enduser.id"] == who  # the server span carries its own request's customer
        assert len([s for s in spans if s.name.lower().startswith("select")]) == 1
        for span in spans:  # ...and so does every span of that request
            assert prodlens_attributes(span.attributes) == attrs, span.name
        counts[who] += 1
    assert counts == {c: 8 for c in customers}


def test_authentication_middleware_user_tags_the_open_server_span(fastapi_setup: Any) -> None:
    app, traced = fastapi_setup({"PRODLENS_CUSTOMER_FROM": "user",
                                 "PRODLENS_COHORT_TIER_FROM": "user:tier",
                                 "PRODLENS_COHORT_TENANT_FROM": "path:tenant"})
    requests = [("/t/a/async", {"x-user": "alice/gold"}), ("/t/b/sync", {"x-user": "bob"}),
                ("/t/c/async", {})]
    with serve_asgi(app) as base:
        results = get_concurrently(base, requests)
    assert [body for _, body in results] == [
        {"customer": "alice", "cohorts": {"tier": "gold", "tenant": "a"}},
        {"customer": "bob", "cohorts": {"tier": "basic", "tenant": "b"}},
        {"customer": None, "cohorts": {"tenant": "c"}},
    ]
    expected = {
        "/t/a/async": {"enduser.id": "alice", "prodlens.cohort.tier": "gold",
                       "prodlens.cohort.tenant": "a"},
        "/t/b/sync": {"enduser.id": "bob", "prodlens.cohort.tier": "basic",
                      "prodlens.cohort.tenant": "b"},
        "/t/c/async": {"prodlens.cohort.tenant": "c"},
    }
    for spans in by_trace(traced.spans()).values():
        server = server_of(spans)
        path = str((server.attributes or {}).get("http.target"))
        assert prodlens_attributes(server.attributes) == expected[path]
        for span in spans:
            if "'auth'" in str((span.attributes or {}).get("db.statement")):
                # Ended during authentication, before the user was known: untagged (documented).
                assert prodlens_attributes(span.attributes) == {}
            elif span.name.lower().startswith("select"):
                assert prodlens_attributes(span.attributes) == expected[path]


def test_identify_in_a_sync_endpoint_reaches_the_server_span(fastapi_setup: Any) -> None:
    app, traced = fastapi_setup(ENV)
    with serve_asgi(app) as base:
        [(status, body)] = get_concurrently(base, [("/identify", {"x-customer-id": "acme"})])
    assert (status, body) == (200, {"customer": "late-acme", "cohorts": {"plan": "gold"}})
    server = server_of(traced.spans())
    # The threadpool ran the endpoint in a copied context; the request's scope is shared.
    assert prodlens_attributes(server.attributes) == {"enduser.id": "late-acme",
                                                      "prodlens.cohort.plan": "gold"}


def test_websocket_and_lifespan(fastapi_setup: Any) -> None:
    app, traced = fastapi_setup(ENV)
    started: list[object] = []

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        started.append(prodlens.current())  # lifespan passes through: no request scope
        yield

    app.router.lifespan_context = lifespan
    sent = asyncio.run(lifespan_startup(app))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete",
                                         "lifespan.shutdown.complete"]
    assert started == [None]
    sent = asyncio.run(websocket_session(app, "/ws/w1", {"x-customer-id": "acme"}))
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send",
                                         "websocket.close"]
    assert json.loads(sent[1]["text"]) == {"customer": "acme", "cohorts": {"tenant": "w1"}}
    server = server_of(traced.spans())
    assert prodlens_attributes(server.attributes) == {"enduser.id": "acme",
                                                      "prodlens.cohort.tenant": "w1"}




def test_scope_opens_outside_the_otel_middleware_and_uninstrument_removes_it() -> None:
    sampler = RecordingSampler(only=SpanKind.SERVER)
    provider = TracerProvider(sampler=sampler)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    ProdlensInstrumentor().instrument(tracer_provider=provider, environ={
        "PRODLENS_CUSTOMER_FROM": "header:x-customer-id", "PRODLENS_METRICS": "false"})
    app = make_app()
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    try:
        import starlette.applications

        assert _patching.patched(starlette.applications.Starlette, "__call__")
        assert _patching.patched(fastapi.FastAPI, "__call__")
        with serve_asgi(app) as base:
            [(_, body)] = get_concurrently(base, [("/t/x/async", {"x-customer-id": "acme"})])
        assert body["customer"] == "acme"
        assert sampler.seen == ["acme"]  # the sampler saw the identity at root start
        ProdlensInstrumentor().uninstrument()
        assert not _patching.patched(starlette.applications.Starlette, "__call__")
        exporter.clear()
        with serve_asgi(app) as base:
            [(_, body)] = get_concurrently(base, [("/t/x/async", {"x-customer-id": "acme"})])
        assert body == {"customer": None, "cohorts": {}}
        spans = exporter.get_finished_spans()
        assert spans and all(prodlens_attributes(s.attributes) == {} for s in spans)
    finally:
        ProdlensInstrumentor().uninstrument()
        FastAPIInstrumentor.uninstrument_app(app)
        provider.shutdown()


def test_zero_code_example() -> None:
    """examples/fastapi under opentelemetry-instrument with only PRODLENS_* and OTEL_* set."""
    script = Path(__file__).parents[2] / "examples" / "fastapi" / "run_demo.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, env={"PATH": os.environ.get("PATH", "")})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_plain_starlette_with_mount_and_base_http_middleware(prodlens_setup: Any) -> None:
    """Starlette without FastAPI: OpenTelemetry's ASGI middleware added as user middleware, a
    BaseHTTPMiddleware (the endpoint runs in another task), a Mount with a path parameter."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    traced = prodlens_setup({"PRODLENS_CUSTOMER_FROM": "user,header:x-customer-id",
                             "PRODLENS_COHORT_TENANT_FROM": "path:tenant"}, sqlite=True)

    async def work(request: Request) -> JSONResponse:
        query_db()
        return JSONResponse(whoami())

    async def passthrough(request: Request, call_next: Any) -> Any:
        return await call_next(request)

    app = Starlette(
        routes=[Mount("/t/{tenant}", routes=[Route("/work", work)])],
        middleware=[
            Middleware(OpenTelemetryMiddleware, tracer_provider=traced.provider),
            Middleware(AuthenticationMiddleware, backend=HeaderAuth()),
            Middleware(BaseHTTPMiddleware, dispatch=passthrough),
        ],
    )
    with serve_asgi(app) as base:
        results = get_concurrently(base, [("/t/a/work", {"x-customer-id": "acme"}),
                                          ("/t/b/work", {"x-user": "bob/gold"})])
    assert [body for _, body in results] == [
        {"customer": "acme", "cohorts": {"tenant": "a"}},
        {"customer": "bob", "cohorts": {"tenant": "b"}},
    ]
    for spans in by_trace(traced.spans()).values():
        server = server_of(spans)
        tenant = str((server.attributes or {}).get("http.target")).split("/")[2]
        customer = "acme" if tenant == "a" else "bob"
        expected = {"enduser.id": customer, "prodlens.cohort.tenant": tenant}
        assert prodlens_attributes(server.attributes) == expected
        (db,) = [s for s in spans if "select 1" in str((s.attributes or {}).get("db.statement"))]
        assert prodlens_attributes(db.attributes) == expected


def test_fastapi_serves_hostile_requests(fastapi_setup: Any,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="prodlens")
    app, traced = fastapi_setup({**BAD_ENV, "PRODLENS_COHORT_TENANT_FROM": "path:tenant"})
    with serve_asgi(app, max_header_bytes=512 * 1024) as base:
        for case, target, headers in HOSTILE_REQUESTS:
            traced.exporter.clear()
            query = target.partition("?")[2]
            assert raw_get(base, "/t/x/async" + ("?" + query if query else ""),
                           headers) == 200, case
            assert wait_for(lambda: any(s.kind == SpanKind.SERVER for s in traced.spans()),
                            timeout=5), case
            check_bounded([s for s in traced.spans() if s.kind == SpanKind.SERVER])
    assert [r.getMessage() for r in caplog.records
            if r.name == "prodlens" and "internal error" in r.getMessage()] == []
