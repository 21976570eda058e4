"""Django: prodlens inserted automatically; early sources before the OTel middleware's span,
``request.user`` after all (even late) authentication middleware, URL kwargs as ``path:``."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import django_app
import pytest
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.trace import SpanKind
from servers import echo_baggage_app, fetch, prodlens_attributes, serve_wsgi

django_app.setup()

from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.test import Client  # noqa: E402

ENV = {
    "PRODLENS_CUSTOMER_FROM": "user,header:x-customer-id",
    "PRODLENS_COHORT_PLAN_FROM": "user:plan,header:x-plan",
    "PRODLENS_COHORT_TENANT_FROM": "path:tenant",
    "PRODLENS_PROPAGATE_TO": "127.0.0.0/8",
}


@pytest.fixture
def traced(prodlens_setup: Any) -> Iterator[Any]:
    result = prodlens_setup(ENV, sqlite=True)
    DjangoInstrumentor().instrument(tracer_provider=result.provider)
    RequestsInstrumentor().instrument(tracer_provider=result.provider)
    yield result
    RequestsInstrumentor().uninstrument()
    DjangoInstrumentor().uninstrument()


def attrs(spans: list[Any], kind: SpanKind, prefix: str = "") -> list[dict[str, Any]]:
    return [prodlens_attributes(s.attributes) for s in spans
            if s.kind == kind and s.name.startswith(prefix)]


def test_user_from_late_auth_middleware_and_path_tag_the_server_span(traced: Any) -> None:
    response = Client().get("/t/t1/work", HTTP_X_USER="u-1")
    assert response.status_code == 200
    assert response.json()["customer"] == "u-1"
    expected = {"enduser.id": "u-1", "prodlens.cohort.plan": "gold",
                "prodlens.cohort.tenant": "t1"}
    spans = traced.spans()
    assert attrs(spans, SpanKind.SERVER) == [expected]
    assert attrs(spans, SpanKind.CLIENT, "select") == [expected]


def test_header_sources_apply_before_the_server_span_opens(traced: Any) -> None:
    response = Client().get("/t/t2/work", HTTP_X_CUSTOMER_ID="acme", HTTP_X_PLAN="pro")
    assert response.json()["customer"] == "acme"
    assert attrs(traced.spans(), SpanKind.SERVER) == [
        {"enduser.id": "acme", "prodlens.cohort.plan": "pro", "prodlens.cohort.tenant": "t2"}]


def test_anonymous_request_gets_only_what_its_sources_yield(traced: Any) -> None:
    Client().get("/t/t3/work")
    assert attrs(traced.spans(), SpanKind.SERVER) == [{"prodlens.cohort.tenant": "t3"}]


def test_real_server_many_customers_with_outbound_call(traced: Any) -> None:
    with serve_wsgi(echo_baggage_app) as downstream, serve_wsgi(WSGIHandler()) as base:
        def call(i: int) -> tuple[str, Any]:
            user = f"user-{i % 4}"
            status, body = fetch(f"{base}/t/ten{i % 2}/work?downstream={downstream}",
                                 {"x-user": user})
            assert status == 200, body
            return user, body

        with ThreadPoolExecutor(max_workers=6) as pool:
            results = list(pool.map(call, range(24)))
    for user, body in results:
        assert body["customer"] == user
        assert body["baggage"].startswith(f"prodlens.customer={user},prodlens.cohort.plan=gold")
    traces: dict[int, list[Any]] = defaultdict(list)
    for span in traced.spans():
        traces[span.context.trace_id].append(span)
    assert len(traces) == 24
    counts: dict[str, int] = defaultdict(int)
    for spans in traces.values():
        server = next(s for s in spans if s.kind == SpanKind.SERVER)
        expected = prodlens_attributes(server.attributes)
        assert {s.name.split()[0] for s in spans} == {"GET", "select"}
        assert len(spans) == 3  # server, DB, outbound HTTP
        for span in spans:
            assert prodlens_attributes(span.attributes) == expected
        counts[str(expected["enduser.id"])] += 1
    assert counts == {f"user-{i}": 6 for i in range(4)}


def test_async_handler_isolates_concurrent_requests(traced: Any) -> None:
    import asyncio

    from django.test import AsyncClient

    async def one(i: int) -> tuple[str, Any]:
        user = f"async-{i % 3}"
        response = await AsyncClient().get(f"/t/a{i}/work", headers={"x-user": user})
        return user, response.json()

    async def many() -> list[tuple[str, Any]]:
        return await asyncio.gather(*(one(i) for i in range(12)))

    results = asyncio.run(many())
    assert [body["customer"] for _, body in results] == [user for user, _ in results]
    servers = [s for s in traced.spans() if s.kind == SpanKind.SERVER]
    assert len(servers) == 12
    for span in servers:
        tags = prodlens_attributes(span.attributes)
        tenant = str(tags["prodlens.cohort.tenant"])
        assert tags == {"enduser.id": f"async-{int(tenant[1:]) % 3}",
                        "prodlens.cohort.plan": "gold", "prodlens.cohort.tenant": tenant}


def test_user_source_under_asgi_with_a_logged_in_session(tmp_path: Path) -> None:
    """Issue #16, finding 5: under uvicorn (Django's async handler) ``request.user`` raises
    SynchronousOnlyOperation in the event loop; the user source must still tag."""
    import httpx
    from servers import free_port, wait_for

    port = free_port()
    script = Path(__file__).parent / "apps" / "django_asgi_app.py"
    process = subprocess.Popen([sys.executable, str(script), str(tmp_path / "db.sqlite3"),
                                str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            if process.poll() is not None:
                return True  # exited: stop waiting (asserted below)
            try:
                return httpx.get(base + "/spans", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(up, timeout=60), "the Django ASGI app did not start"
        assert process.poll() is None, process.communicate()[1][-4000:]
        with httpx.Client(base_url=base, timeout=10) as client:
            anonymous = client.get("/whoami").json()
            assert client.get("/login").json() == {"ok": True}
            assert "sessionid" in client.cookies
            answers = [client.get(p).json() for p in ("/whoami", "/whoami-sync") * 3]
            spans = client.get("/spans").json()
    finally:
        process.terminate()
        process.communicate(timeout=10)
    assert anonymous == {"customer": None}
    assert answers == [{"customer": "alice"}] * 6
    by_name = [(s["name"], s["tags"]) for s in spans if s["name"] != "GET spans"]
    alice = {"enduser.id": "alice", "prodlens.cohort.plan": "gold"}
    assert by_name == [("GET whoami", {}), ("GET login", {}),
                       *[("GET whoami", alice), ("GET whoami-sync", alice)] * 3]
