"""The per-request fast path: early identities cached by raw header values (WSGI and ASGI).

The cache must be invisible: each request still gets exactly its own identity, under threads
and asyncio; it is bounded; values too large to key it are resolved in full, uncached.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from prodlens import _runtime, current
from prodlens.config import Settings, load_settings
from prodlens.integrations import asgi, wsgi
from prodlens.integrations._plan import (
    MAX_CACHED_IDENTITIES,
    MAX_RAW_KEY_CHARS,
    HeaderPlan,
    header_plan,
)

HEADERS_ENV = {
    "PRODLENS_CUSTOMER_FROM": "header:x-customer-id",
    "PRODLENS_COHORT_PLAN_FROM": "header:x-plan",
}


def settings(**env: str) -> Settings:
    result = load_settings({"PRODLENS_METRICS": "false", **env})
    _runtime.install(result)
    return result


def plan_of(s: Settings) -> HeaderPlan:
    plan = header_plan(s)
    assert plan is not None
    return plan


def wsgi_identity(headers: dict[str, str]) -> dict[str, str] | None:
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/"}
    for name, value in headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    token = wsgi.enter_request(environ, with_remote_user=False)
    assert token is not None
    try:
        identity = current()
        return None if identity is None else dict(identity.attributes)
    finally:
        wsgi.exit_request(environ, token)


def asgi_scope(headers: list[tuple[Any, Any]]) -> dict[str, Any]:
    return {"type": "http", "path": "/", "query_string": b"", "headers": headers}


def asgi_identity(headers: list[tuple[Any, Any]]) -> dict[str, str] | None:
    scope = asgi_scope(headers)
    token = asgi.enter_request(scope, with_late=False)
    assert token is not None
    try:
        identity = current()
        return None if identity is None else dict(identity.attributes)
    finally:
        asgi.exit_request(scope, token)


def test_header_plan_exists_only_for_header_jwt_and_baggage_sources() -> None:
    s = settings(PRODLENS_CUSTOMER_FROM="jwt:sub,header:x-customer-id,user",
                 PRODLENS_COHORT_PLAN_FROM="baggage,header:x-plan",
                 PRODLENS_COHORT_TENANT_FROM="path:tenant")
    assert plan_of(s).names == ("authorization", "x-customer-id", "baggage", "x-plan")
    assert plan_of(s).environ_keys == ("HTTP_AUTHORIZATION", "HTTP_X_CUSTOMER_ID",
                                       "HTTP_BAGGAGE", "HTTP_X_PLAN")
    assert header_plan(settings(PRODLENS_CUSTOMER_FROM="cookie:session")) is None
    assert header_plan(settings(PRODLENS_CUSTOMER_FROM="header:x,query:customer")) is None


@pytest.mark.parametrize("identity_of", [wsgi_identity, "asgi"])
def test_each_request_gets_its_own_identity(identity_of: Any) -> None:
    settings(**HEADERS_ENV)
    if identity_of == "asgi":
        def identity_of(headers: dict[str, str]) -> dict[str, str] | None:
            return asgi_identity([(k.encode(), v.encode()) for k, v in headers.items()])

    for _ in range(3):  # the second and third rounds are served from the cache
        assert identity_of({"x-customer-id": "acme", "x-plan": "pro"}) == {
            "enduser.id": "acme", "prodlens.cohort.plan": "pro"}
        assert identity_of({"x-customer-id": "globex"}) == {"enduser.id": "globex"}
        assert identity_of({"x-plan": "free"}) == {"prodlens.cohort.plan": "free"}
        assert identity_of({}) is None
        assert current() is None


def test_asgi_odd_header_lists_resolve_as_before() -> None:
    settings(**HEADERS_ENV)
    # Mixed-case names (not ASGI-conformant) still count.
    assert asgi_identity([(b"X-Customer-Id", b"acme")]) == {"enduser.id": "acme"}
    # A repeated header: the first value wins, as without the cache.
    assert asgi_identity([(b"x-customer-id", b"first"), (b"x-customer-id", b"second")]) == {
        "enduser.id": "first"}
    # Malformed items and non-bytes values are skipped, never raised.
    assert asgi_identity([(b"x-customer-id",), (b"x-plan", bytearray(b"pro")),  # type: ignore[list-item]
                          (b"x-customer-id", b"acme")]) == {
        "enduser.id": "acme", "prodlens.cohort.plan": "pro"}
    assert asgi_identity([(b"x-customer-id", b"caf\xc3\xa9")]) == {"enduser.id": "café"}


def test_asgi_repeated_baggage_headers_are_joined_as_without_the_cache() -> None:
    settings(PRODLENS_CUSTOMER_FROM="header:x-customer-id,baggage",
             PRODLENS_COHORT_PLAN_FROM="baggage")
    for _ in range(2):  # uncached, then a cache hit
        assert asgi_identity([(b"baggage", b"other=1"),
                              (b"baggage", b"prodlens.customer=acme")]) == {"enduser.id": "acme"}
        # Every wanted header is found before the second baggage header: it is still read.
        assert asgi_identity([(b"x-customer-id", b"acme"), (b"baggage", b"a=1"),
                              (b"baggage", b"prodlens.cohort.plan=pro")]) == {
            "enduser.id": "acme", "prodlens.cohort.plan": "pro"}


def test_the_cache_is_bounded() -> None:
    s = settings(**HEADERS_ENV, PRODLENS_MAX_COHORT_VALUES="100000")
    plan = plan_of(s)
    for number in range(MAX_CACHED_IDENTITIES + 200):
        customer = f"customer-{number}"
        assert wsgi_identity({"x-customer-id": customer}) == {"enduser.id": customer}
        assert len(plan) <= MAX_CACHED_IDENTITIES


def test_values_too_large_to_key_the_cache_are_resolved_uncached() -> None:
    s = settings(**HEADERS_ENV, PRODLENS_MAX_VALUE_LENGTH="16")
    plan = plan_of(s)
    huge = "a" * (MAX_RAW_KEY_CHARS + 1)
    for _ in range(2):
        assert wsgi_identity({"x-customer-id": huge}) == {"enduser.id": "a" * 16}
        assert asgi_identity([(b"x-customer-id", huge.encode())]) == {"enduser.id": "a" * 16}
    assert len(plan) == 0


def test_a_new_configuration_gets_a_new_cache() -> None:
    settings(**HEADERS_ENV)
    assert wsgi_identity({"x-customer-id": "acme", "x-plan": "pro"}) == {
        "enduser.id": "acme", "prodlens.cohort.plan": "pro"}
    settings(**HEADERS_ENV, PRODLENS_CUSTOMER_ATTRIBUTE="app.customer")
    assert wsgi_identity({"x-customer-id": "acme", "x-plan": "pro"}) == {
        "app.customer": "acme", "prodlens.cohort.plan": "pro"}


def test_inbound_baggage_is_stripped_on_every_request() -> None:
    settings(PRODLENS_CUSTOMER_FROM="baggage")
    for _ in range(2):  # the second request is a cache hit: it must still strip
        scope = asgi_scope([(b"baggage", b"prodlens.customer=acme,other=1")])
        token = asgi.enter_request(scope, with_late=False)
        try:
            identity = current()
            assert identity is not None and dict(identity.attributes) == {"enduser.id": "acme"}
            assert scope["headers"] == [(b"baggage", b"other=1")]
        finally:
            asgi.exit_request(scope, token)
        environ: dict[str, Any] = {"HTTP_BAGGAGE": "prodlens.customer=acme,other=1"}
        wsgi_token = wsgi.enter_request(environ, with_remote_user=False)
        try:
            assert environ["HTTP_BAGGAGE"] == "other=1"
        finally:
            wsgi.exit_request(environ, wsgi_token)


def test_isolation_under_threads() -> None:
    settings(**HEADERS_ENV)
    failures: list[str] = []
    start = threading.Barrier(4)

    def serve(customer: str) -> None:
        start.wait(timeout=10)
        for _ in range(300):
            got = wsgi_identity({"x-customer-id": customer})
            if got != {"enduser.id": customer}:
                failures.append(f"{customer}: {got}")

    threads = [threading.Thread(target=serve, args=(f"c{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert failures == []


def test_isolation_under_asyncio() -> None:
    settings(**HEADERS_ENV)
    seen: list[tuple[str, str | None]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        for _ in range(3):
            await asyncio.sleep(0)  # let the other requests interleave
            identity = current()
            seen.append((scope["customer"], None if identity is None else identity.customer))

    async def request(customer: str) -> None:
        scope = asgi_scope([(b"x-customer-id", customer.encode())])
        scope["customer"] = customer
        await asgi.run_in_scope(app, scope, None, None, with_late=False)

    async def main() -> None:
        await asyncio.gather(*(request(f"c{n % 5}") for n in range(50)))

    asyncio.run(main())
    assert len(seen) == 150
    assert all(expected == got for expected, got in seen)
