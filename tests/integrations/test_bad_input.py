"""Hostile input: the request is served, the span exists, nothing over the limits lands on a
span, and no prodlens error is logged."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import flask
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.trace import SpanKind
from servers import prodlens_attributes, send_raw, serve_wsgi

from prodlens import _runtime
from prodlens.config import load_settings
from prodlens.integrations._readers import bearer_claims
from prodlens.integrations._sources import resolve_early
from prodlens.integrations.wsgi import EnvironView

ENV = {
    "PRODLENS_CUSTOMER_FROM": "jwt:sub,cookie:sid,header:x-customer-id,baggage",
    "PRODLENS_COHORT_PLAN_FROM": "jwt:org.plan,cookie:plan,query:plan,baggage",
    "PRODLENS_COHORT_TENANT_FROM": "path:tenant",
    "PRODLENS_MAX_VALUE_LENGTH": "32",
    "PRODLENS_MAX_COHORTS": "4",
}


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


LONG_CLAIMS = json.dumps({"sub": "x" * 5000, "org": {"plan": "p" * 3000}}).encode()
BAD_HEADERS: list[tuple[str, dict[str, str]]] = [
    ("jwt-two-parts", {"Authorization": "Bearer abc.def"}),
    ("jwt-four-parts", {"Authorization": "Bearer a.b.c.d"}),
    ("jwt-bad-base64", {"Authorization": "Bearer a.@@@.c"}),
    ("jwt-non-json", {"Authorization": f"Bearer a.{b64(b'{not json')}.c"}),
    ("jwt-non-object", {"Authorization": f"Bearer a.{b64(b'[1,2,3]')}.c"}),
    ("jwt-deep-json", {"Authorization": f"Bearer a.{b64(b'[' * 3000 + b']' * 3000)}.c"}),
    ("jwt-huge", {"Authorization": "Bearer a." + "A" * 200_000 + ".c"}),
    ("jwt-long-claims", {"Authorization": "Bearer a." + b64(LONG_CLAIMS) + ".c"}),
    ("cookie-100k", {"Cookie": "junk=" + "z" * 100_000 + "; sid=late"}),
    ("cookie-100k-many", {"Cookie": "; ".join(f"c{i}=v" for i in range(15_000))}),
    ("cookie-odd", {"Cookie": "sid=\"unterminated; plan==; ===; ;;"}),
    ("header-long", {"X-Customer-Id": "c" * 50_000}),
    ("header-latin1", {"X-Customer-Id": "caf\u00e9\u00ff\u00fe"}),
    ("baggage-thousands", {"baggage": ",".join(f"k{i}=v{i}" for i in range(5000))
                           + ",prodlens.customer=late"}),
    ("baggage-prodlens-thousands", {"baggage": ",".join(
        f"prodlens.cohort.c{i}=v" for i in range(3000))}),
    ("baggage-bad-encoding", {"baggage": "prodlens.customer=%ZZ%ff%fe,prodlens.cohort.plan=%E2%82"}),
    ("baggage-garbage", {"baggage": "=,;;,==,\u00e9=\u00e9,prodlens.customer"}),
    ("query-huge", {}),
]


def check(spans: list[Any], server_name_prefix: str = "") -> None:
    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    assert len(servers) == 1
    tags = prodlens_attributes(servers[0].attributes)
    assert sum(1 for k in tags if k.startswith("prodlens.cohort.")) <= 4
    for value in tags.values():
        assert isinstance(value, str) and len(value) <= 32


@pytest.fixture
def no_prodlens_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.WARNING, logger="prodlens")
    yield
    bad = [r.getMessage() for r in caplog.records
           if r.name == "prodlens" and "internal error" in r.getMessage()]
    assert bad == []


@pytest.fixture
def flask_app(prodlens_setup: Any) -> Iterator[tuple[flask.Flask, Any]]:
    traced = prodlens_setup(ENV)
    app = flask.Flask("bad-input")
    app.add_url_rule("/t/<tenant>", "t", lambda tenant: "ok")
    FlaskInstrumentor().instrument_app(app, tracer_provider=traced.provider)
    yield app, traced
    FlaskInstrumentor().uninstrument_app(app)


@pytest.mark.parametrize(("case", "headers"), BAD_HEADERS, ids=[c for c, _ in BAD_HEADERS])
def test_flask_serves_hostile_requests(flask_app: Any, no_prodlens_errors: None, case: str,
                                       headers: dict[str, str]) -> None:
    app, traced = flask_app
    query = "?plan=" + "p" * 100_000 + "&" * 50_000 if case == "query-huge" else ""
    started = time.perf_counter()
    response = app.test_client().get("/t/x" + query, headers=headers)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200
    assert elapsed < 2.0
    check(traced.spans())


def test_django_serves_hostile_requests(prodlens_setup: Any, no_prodlens_errors: None) -> None:
    import django_app

    django_app.setup()
    from django.test import Client

    traced = prodlens_setup(ENV)
    DjangoInstrumentor().instrument(tracer_provider=traced.provider)
    try:
        for _, headers in BAD_HEADERS:
            traced.exporter.clear()
            meta = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}
            response = Client().get("/t/x/work", **meta)
            assert response.status_code == 200
            check(traced.spans())
    finally:
        DjangoInstrumentor().uninstrument()


def test_raw_odd_bytes_over_a_real_socket(flask_app: Any, no_prodlens_errors: None) -> None:
    app, traced = flask_app
    with serve_wsgi(app) as base:
        raw = (b"GET /t/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"X-Customer-Id: \xff\xfe\x80\xc3(caf\xc3\xa9\x01\x7f\r\n"
               b"Authorization: Bearer \xff.\xfe.\x80\r\n"
               b"Cookie: sid=\xe2\x82; plan=\xff\r\n"
               b"baggage: prodlens.customer=\xff\xfe,prodlens.cohort.plan=%C3%A9\r\n"
               b"Connection: close\r\n\r\n")
        received = send_raw(base, raw)
    assert received.startswith(b"HTTP/1.1 200")
    check(traced.spans())
    tags = prodlens_attributes(traced.spans()[0].attributes)
    assert tags["prodlens.cohort.tenant"] == "x"
    assert "\ufffd" in tags["enduser.id"]


_TEXT = st.text(st.characters(codec="latin-1"), max_size=300)


@settings(max_examples=300, deadline=None)
@given(token=st.one_of(_TEXT, st.lists(_TEXT, max_size=5).map(".".join)))
def test_bearer_claims_never_raises(token: str) -> None:
    claims = bearer_claims("Bearer " + token)
    assert claims is None or isinstance(claims, dict)


@settings(max_examples=200, deadline=None)
@given(auth=_TEXT, cookie=_TEXT, baggage=_TEXT, header=_TEXT, query=_TEXT)
def test_resolve_early_never_raises_and_stays_bounded(auth: str, cookie: str, baggage: str,
                                                      header: str, query: str) -> None:
    current = load_settings(ENV)
    _runtime.install(current)
    environ = {"HTTP_AUTHORIZATION": auth, "HTTP_COOKIE": cookie, "HTTP_BAGGAGE": baggage,
               "HTTP_X_CUSTOMER_ID": header, "QUERY_STRING": query}
    identity = resolve_early(EnvironView(environ), current)
    if identity is not None:
        assert len(identity.cohorts) <= 4
        assert all(len(v) <= 32 for v in identity.attributes.values())


async def _plain_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize("value", [
    b"a=\xff\\,prodlens.customer=x",  # the non-prodlens rest would end in a lone backslash
    b"a=\\x4,prodlens.cohort.plan=y",
    b"prodlens.customer=\xc3(,b=\\",
    b"\xff\xfe\\u12,prodlens.customer=z,\\",
])
def test_asgi_baggage_rewriting_never_turns_a_request_into_a_500(
        prodlens_setup: Any, no_prodlens_errors: None, value: bytes) -> None:
    # OpenTelemetry's ASGI getter decodes a header as UTF-8, else with "unicode_escape", which
    # raises on some byte strings; prodlens must not rewrite a header into one of those.
    from asgi_servers import serve_asgi
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    traced = prodlens_setup({"PRODLENS_CUSTOMER_FROM": "header:x-customer-id,baggage"})
    app = OpenTelemetryMiddleware(_plain_asgi, tracer_provider=traced.provider)
    with serve_asgi(app) as base:
        received = send_raw(base, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Customer-Id: c\r\n"
                                  b"baggage: " + value + b"\r\nConnection: close\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 200"), received[:200]
    servers = [s for s in traced.spans() if s.kind == SpanKind.SERVER]
    assert [prodlens_attributes(s.attributes) for s in servers] == [{"enduser.id": "c"}]


def _utf8_as_wsgi(text: str) -> str:
    """``text`` as a WSGI server hands it over (UTF-8 bytes, one latin-1 character each)."""
    return text.encode().decode("latin-1")


def test_wsgi_cookie_and_query_are_cut_at_16_kib_of_bytes_before_decoding() -> None:
    _runtime.install(load_settings({}))
    # 9,000 two-byte characters: 18,000 bytes, past the 16 KiB bound, but 9,000 characters.
    padding = "\u00e9" * 9000
    view = EnvironView({"HTTP_COOKIE": _utf8_as_wsgi(f"pad={padding}; sid=late"),
                        "QUERY_STRING": _utf8_as_wsgi(f"pad={padding}&plan=late")})
    assert view.cookie("sid") is None and view.query("plan") is None
    early = EnvironView({"HTTP_COOKIE": _utf8_as_wsgi(f"sid=\u00e9t\u00e9; pad={padding}"),
                         "QUERY_STRING": _utf8_as_wsgi(f"plan=%C3%A9&pad={padding}")})
    assert early.cookie("sid") == "\u00e9t\u00e9" and early.query("plan") == "\u00e9"


def test_a_lone_surrogate_in_a_jwt_becomes_u_fffd_on_the_span(flask_app: Any,
                                                             no_prodlens_errors: None) -> None:
    app, traced = flask_app
    payload = b64(b'{"sub": "\\ud800", "org": {"plan": "a\\udfffb"}}')
    with serve_wsgi(app) as base:
        received = send_raw(base, b"GET /t/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                  b"Authorization: Bearer e30." + payload.encode() +
                                  b".sig\r\nConnection: close\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 200")
    servers = [s for s in traced.spans() if s.kind == SpanKind.SERVER]
    assert [prodlens_attributes(s.attributes) for s in servers] == [
        {"enduser.id": "\ufffd", "prodlens.cohort.plan": "a\ufffdb",
         "prodlens.cohort.tenant": "x"}]
