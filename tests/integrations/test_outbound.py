"""Outbound propagation: allowlisted destinations only, merged with existing baggage, at the
transport (below the OpenTelemetry client instrumentations); inbound identity never forwarded
to other destinations."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import flask
import httpx
import pytest
import requests
import urllib3
from opentelemetry import baggage as otel_baggage
from opentelemetry import context as otel_context
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor
from servers import echo_baggage_app, fetch, serve_wsgi

import prodlens
from prodlens.integrations.outbound import host_matches

EXPECTED = "prodlens.customer=acme,prodlens.cohort.plan=pro"


@pytest.mark.parametrize(("host", "patterns", "expected"), [
    ("api.internal", ("*.internal",), True),
    ("API.Internal", ("*.internal",), True),
    ("internal", ("*.internal",), False),
    ("evil.com", ("*.internal",), False),
    ("api.internal.evil.com", ("*.internal",), False),
    ("localhost", ("localhost",), True),
    ("127.0.0.1", ("localhost",), False),
    ("localhost", ("127.0.0.0/8",), False),
    ("127.0.0.1", ("127.0.0.0/8",), True),
    ("10.1.2.3", ("10.0.0.0/8",), True),
    ("11.1.2.3", ("10.0.0.0/8",), False),
    ("10.1.2.3.nip.io", ("10.0.0.0/8",), False),
    ("::1", ("::1/128",), True),
    ("[::1]", ("::1/128",), True),
    ("::1", ("127.0.0.0/8",), False),
    ("anything.example", ("*",), True),
    ("", ("*",), False),
    (None, ("*",), False),
    ("api.internal", (), False),
])
def test_host_matching(host: str | None, patterns: tuple[str, ...], expected: bool) -> None:
    assert host_matches(host, patterns) is expected


@pytest.fixture
def clients(prodlens_setup: Any) -> Iterator[Any]:
    traced = prodlens_setup({"PRODLENS_CUSTOMER_FROM": "header:x-customer-id",
                             "PRODLENS_PROPAGATE_TO": "127.0.0.0/8"})
    instrumentors = [RequestsInstrumentor(), URLLib3Instrumentor(), HTTPXClientInstrumentor(),
                     AioHttpClientInstrumentor()]
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=traced.provider)
    with serve_wsgi(echo_baggage_app) as base:
        port = base.rsplit(":", 1)[1]
        yield f"http://127.0.0.1:{port}", f"http://localhost:{port}"
    for instrumentor in instrumentors:
        instrumentor.uninstrument()


def get_requests(url: str, headers: dict[str, str]) -> Any:
    return requests.get(url, headers=headers, timeout=5).json()["baggage"]


def get_urllib3(url: str, headers: dict[str, str]) -> Any:
    return urllib3.PoolManager().request("GET", url, headers=headers, timeout=5).json()["baggage"]


def get_httpx(url: str, headers: dict[str, str]) -> Any:
    with httpx.Client() as client:
        return client.get(url, headers=headers, timeout=5).json()["baggage"]


def get_httpx_async(url: str, headers: dict[str, str]) -> Any:
    async def run() -> Any:
        async with httpx.AsyncClient() as client:
            return (await client.get(url, headers=headers, timeout=5)).json()["baggage"]

    return asyncio.run(run())


def get_aiohttp(url: str, headers: dict[str, str]) -> Any:
    async def run() -> Any:
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as r:
            return (await r.json())["baggage"]

    return asyncio.run(run())


CLIENTS = [get_requests, get_urllib3, get_httpx, get_httpx_async, get_aiohttp]


@pytest.mark.parametrize("get", CLIENTS, ids=lambda f: f.__name__[4:])
def test_matching_destination_gets_identity_merged(clients: Any, get: Any) -> None:
    matching, _ = clients
    with prodlens.tag("acme", plan="pro"):
        assert get(matching + "/echo", {}) == EXPECTED
        assert get(matching + "/echo", {"baggage": "other=1,prodlens.customer=forged"}) == (
            "other=1," + EXPECTED)
    assert get(matching + "/echo", {}) is None  # no identity, nothing added


@pytest.mark.parametrize("get", CLIENTS, ids=lambda f: f.__name__[4:])
def test_otel_context_baggage_survives_with_identity(clients: Any, get: Any) -> None:
    matching, other = clients
    token = otel_context.attach(otel_baggage.set_baggage("ctx", "1"))
    try:
        with prodlens.tag("acme", plan="pro"):
            assert get(matching + "/echo", {}) == "ctx=1," + EXPECTED
            assert get(other + "/echo", {}) == "ctx=1"
    finally:
        otel_context.detach(token)


@pytest.mark.parametrize("get", CLIENTS, ids=lambda f: f.__name__[4:])
def test_prodlens_members_leave_only_from_the_identity(clients: Any, get: Any) -> None:
    # Members app code (or a client, through an unpatched server) put in the context or the
    # header: to a matching destination, with or without an identity, none passes.
    matching, _ = clients
    assert get(matching + "/echo", {"baggage": "a=1,prodlens.cohort.plan=x"}) == "a=1"
    assert get(matching + "/echo", {"baggage": "%70rodlens.customer=x,a=1"}) == "a=1"
    forged = otel_baggage.set_baggage("prodlens.customer", "forged")
    token = otel_context.attach(otel_baggage.set_baggage("ctx", "1", forged))
    try:
        assert get(matching + "/echo", {}) == "ctx=1"
        with prodlens.tag("acme", plan="pro"):
            assert get(matching + "/echo", {}) == "ctx=1," + EXPECTED
    finally:
        otel_context.detach(token)


@pytest.mark.parametrize("get", CLIENTS, ids=lambda f: f.__name__[4:])
def test_other_destinations_get_nothing_from_prodlens(clients: Any, get: Any) -> None:
    _, other = clients  # "localhost" is a name: 127.0.0.0/8 does not match it (no DNS)
    with prodlens.tag("acme", plan="pro"):
        assert get(other + "/echo", {}) is None
        assert get(other + "/echo", {"baggage": "a=1,prodlens.customer=x"}) == "a=1"


def test_off_by_default(prodlens_setup: Any) -> None:
    prodlens_setup({"PRODLENS_CUSTOMER_FROM": "header:x"})
    with serve_wsgi(echo_baggage_app) as base, prodlens.tag("acme"):
        assert get_requests(base + "/echo", {}) is None


def test_inbound_baggage_identity_is_used_then_kept_from_other_destinations(
        prodlens_setup: Any) -> None:
    traced = prodlens_setup({"PRODLENS_CUSTOMER_FROM": "baggage",
                             "PRODLENS_PROPAGATE_TO": "127.0.0.0/8"})
    RequestsInstrumentor().instrument(tracer_provider=traced.provider)
    app = flask.Flask("inbound-baggage")
    FlaskInstrumentor().instrument_app(app, tracer_provider=traced.provider)
    try:
        with serve_wsgi(echo_baggage_app) as echo:
            port = echo.rsplit(":", 1)[1]

            @app.route("/")
            def index() -> Any:
                return {
                    "context": dict(otel_baggage.get_all()),
                    "matching": get_requests(f"http://127.0.0.1:{port}/echo", {}),
                    "other": get_requests(f"http://localhost:{port}/echo", {}),
                }

            with serve_wsgi(app) as base:
                status, body = fetch(base + "/", {
                    "baggage": "other=1,prodlens.customer=acme,prodlens.cohort.plan=pro"})
    finally:
        FlaskInstrumentor().uninstrument_app(app)
        RequestsInstrumentor().uninstrument()
    assert status == 200
    assert body == {"context": {"other": "1"}, "matching": "other=1," + EXPECTED,
                    "other": "other=1"}


@pytest.mark.parametrize("get", CLIENTS, ids=lambda f: f.__name__[4:])
def test_a_failing_rewrite_sends_no_baggage_rather_than_an_unchecked_header(
        clients: Any, get: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Fail closed: if prodlens cannot decide what to send, a header that may carry a client's
    # prodlens.* members does not go out as it came.
    from prodlens.integrations import outbound

    def broken(*args: Any) -> str:
        raise RuntimeError("rewrite failed")

    monkeypatch.setattr(outbound, "merge_header", broken)
    monkeypatch.setattr(outbound, "strip_members", broken)
    matching, other = clients
    forged = {"baggage": "a=1,prodlens.customer=forged"}
    assert get(matching + "/echo", forged) is None
    assert get(other + "/echo", forged) is None
    with prodlens.tag("acme", plan="pro"):
        assert get(matching + "/echo", forged) is None
    assert get(matching + "/echo", {"baggage": "a=1"}) == "a=1"  # nothing to check: unchanged
