"""Forged baggage (issue #16, finding 1): a client's ``prodlens.*`` baggage members never leave
the edge service, whatever the destination and whether or not the request has an identity.

Three processes: this test (an unpatched ``http.client`` client, and the downstream echo server),
and the edge service under ``opentelemetry-instrument`` (WSGI/Flask or ASGI/FastAPI) that calls
the allowlisted downstream with requests, urllib3, httpx (sync and async) and aiohttp.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from asgi_servers import serve_asgi
from opentelemetry import baggage as otel_baggage
from opentelemetry.instrumentation.asgi import (
    OpenTelemetryMiddleware as ASGIOpenTelemetryMiddleware,
)
from opentelemetry.instrumentation.wsgi import (
    OpenTelemetryMiddleware as WSGIOpenTelemetryMiddleware,
)
from opentelemetry.sdk.trace import TracerProvider
from servers import clean_env, echo_baggage_app, free_port, run_instrumented, serve_wsgi

import prodlens
from prodlens.integrations.asgi import ProdlensASGIMiddleware
from prodlens.integrations.wsgi import ProdlensMiddleware

APP = Path(__file__).parent / "apps" / "edge_app.py"
CLIENTS = ["requests", "urllib3", "httpx", "httpx_async", "aiohttp"]
FORGED = [
    "prodlens.customer=victim,prodlens.cohort.plan=enterprise,other=1",
    "other=1,prodlens.pseudo_customer=4f2a9c",
    # Spellings some reader decodes to a prodlens key: OpenTelemetry's propagator
    # percent-decodes keys and strips blanks.
    "%70rodlens.customer=victim,other=1",
    "other=1, prodlens.cohort.plan = enterprise",
    "PRODLENS.customer=victim,other=1",
]


def send(base: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
    """GET with http.client: the client is not instrumented and sends the headers verbatim."""
    address = urlsplit(base)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=15)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


@pytest.fixture(scope="module", params=["flask", "fastapi"])
def edge(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[str, str]]:
    """(edge base URL, downstream echo URL): the edge reads the customer from a header only,
    never from baggage, and propagates identity to 127.0.0.0/8 (the downstream)."""
    env = clean_env(
        OTEL_SERVICE_NAME="edge",
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        PRODLENS_CUSTOMER_FROM="header:x-customer-id",
        PRODLENS_PROPAGATE_TO="127.0.0.0/8",
        PRODLENS_METRICS="false",
    )
    if request.param == "flask":
        argv, port = [str(APP), "flask"], None
    else:
        port = free_port()
        argv = [str(APP), "fastapi", str(port)]
    with serve_wsgi(echo_baggage_app) as echo, \
            run_instrumented(argv, env, port=port) as (base, _):
        yield base, echo + "/echo"


def downstream_baggage(edge: tuple[str, str], client: str, headers: dict[str, str]) -> Any:
    base, echo = edge
    status, body = send(base, f"/call?client={client}&url={quote(echo, safe='')}", headers)
    assert status == 200, body
    return json.loads(body)["baggage"]


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("forged", FORGED)
def test_forged_members_never_reach_an_allowlisted_downstream(
        edge: tuple[str, str], client: str, forged: str) -> None:
    # No identity in the request: before the fix the members passed verbatim.
    assert downstream_baggage(edge, client, {"baggage": forged}) == "other=1"
    # An identity from the configured source: only prodlens's own members go out.
    assert downstream_baggage(edge, client, {"baggage": forged, "x-customer-id": "acme"}) == (
        "other=1,prodlens.customer=acme")


@pytest.mark.parametrize("client", CLIENTS)
def test_without_forged_members_nothing_changes(edge: tuple[str, str], client: str) -> None:
    assert downstream_baggage(edge, client, {}) is None
    assert downstream_baggage(edge, client, {"baggage": "other=1"}) == "other=1"
    assert downstream_baggage(edge, client, {"x-customer-id": "acme"}) == "prodlens.customer=acme"


def test_forged_members_are_not_in_the_application_context(edge: tuple[str, str]) -> None:
    status, body = send(edge[0], "/context", {"baggage": FORGED[0]})
    assert status == 200, body
    assert json.loads(body) == {"other": "1"}


def context_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = json.dumps(dict(otel_baggage.get_all())).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


async def context_asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = json.dumps(dict(otel_baggage.get_all())).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def test_members_extracted_outside_the_scope_are_removed_wsgi(prodlens_setup: Any) -> None:
    # OpenTelemetry's middleware outside prodlens's: the context already holds the client's
    # baggage when the prodlens scope opens; the app sees it without prodlens members.
    traced = prodlens_setup({"PRODLENS_CUSTOMER_FROM": "header:x-customer-id"})
    app = WSGIOpenTelemetryMiddleware(ProdlensMiddleware(context_app),
                                      tracer_provider=traced.provider)
    with serve_wsgi(app) as base:
        assert send(base, "/", {"baggage": FORGED[0]}) == (200, '{"other": "1"}')
        assert send(base, "/", {"baggage": "a=1"}) == (200, '{"a": "1"}')


def test_members_extracted_outside_the_scope_are_removed_asgi() -> None:
    # configure() alone patches nothing: OpenTelemetry's middleware extracts first.
    provider = TracerProvider()
    prodlens.configure(provider, environ={}, metrics=False, customer_from="header:x-customer-id")
    app = ASGIOpenTelemetryMiddleware(ProdlensASGIMiddleware(context_asgi_app),
                                      tracer_provider=provider)
    try:
        with serve_asgi(app) as base:
            assert send(base, "/", {"baggage": FORGED[0]}) == (200, '{"other": "1"}')
            assert send(base, "/", {"baggage": "a=1", "x-customer-id": "c"}) == (
                200, '{"a": "1"}')
    finally:
        provider.shutdown()
