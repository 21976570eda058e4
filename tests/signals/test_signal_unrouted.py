"""Unrouted requests (issue #16, finding 3): a 404 or a plain WSGI/ASGI app's request has no
``http.route``; its metric series gets one placeholder, never the raw path (which holds ids and
emails), so 1,000 scanner paths make one series, not 1,000."""

from __future__ import annotations

import http.client
import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import flask
import uvicorn
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from werkzeug.serving import make_server

import prodlens

UNMATCHED_ROUTE = "__unmatched__"  # the documented placeholder
REQUESTS = "prodlens.requests"
PATHS = 1000


def scanner_paths(seed: int) -> list[str]:
    rng = random.Random(seed)
    names = ["alice", "bob.raw", "carol+x", "d.e.f"]
    return [f"/users/{rng.choice(names)}{rng.randrange(10**6)}@example.com/orders/"
            f"{rng.randrange(10**9)}" for _ in range(PATHS)]


@contextmanager
def serve_flask(app: flask.Flask) -> Iterator[int]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def serve_uvicorn(app: Any) -> Iterator[int]:
    sock = socket.socket()
    # Accepted sockets inherit it: no 40 ms delayed-ACK wait per keep-alive response.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="off", loop="asyncio",
                            http="h11", ws="none", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def get_all(port: int, paths: list[str], headers: dict[str, str]) -> list[int]:
    """GET every path over one keep-alive connection; the statuses."""
    statuses = []
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for path in paths:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
    finally:
        connection.close()
    return statuses


def check_series(s: Any, paths: list[str], routed: set[str]) -> None:
    points = s.points(REQUESTS)
    assert {dict(key)["http.route"] for key in points} == {UNMATCHED_ROUTE, *routed}
    for key in points:
        for _, value in key:
            assert "@" not in str(value) and "/users/" not in str(value), key
    assert sum(points.values()) == len(paths) + len(routed)


def test_flask_404s_make_one_series(signals: Any) -> None:
    s = signals(customer_from="header:x-customer-id", cohort_sources={"plan": "header:x-plan"})
    app = flask.Flask("unrouted")

    @app.route("/cart")
    def cart() -> str:
        return "ok"

    FlaskInstrumentor().instrument_app(app, tracer_provider=s.provider)
    paths = scanner_paths(1)
    try:
        with serve_flask(app) as port:
            assert get_all(port, ["/cart"], {"x-plan": "pro"}) == [200]
            assert get_all(port, paths[:10], {"x-plan": "pro"}) == [404] * 10
            series_after_ten = len(s.points(REQUESTS))
            assert get_all(port, paths[10:], {"x-plan": "pro"}) == [404] * (PATHS - 10)
    finally:
        FlaskInstrumentor().uninstrument_app(app)
    assert len(s.points(REQUESTS)) == series_after_ten == 2
    check_series(s, paths, {"/cart"})


async def plain_asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b"no"})


def test_plain_asgi_app_paths_make_one_series(signals: Any) -> None:
    # OpenTelemetry's ASGI middleware names such spans "GET <path>": the raw path.
    s = signals(customer_from="header:x-customer-id")
    app = OpenTelemetryMiddleware(plain_asgi_app, tracer_provider=s.provider)
    paths = scanner_paths(2)
    with serve_uvicorn(app) as port:
        assert get_all(port, paths[:10], {"x-customer-id": "acme"}) == [404] * 10
        series_after_ten = len(s.points(REQUESTS))
        assert get_all(port, paths[10:], {"x-customer-id": "acme"}) == [404] * (PATHS - 10)
    assert len(s.points(REQUESTS)) == series_after_ten == 1
    check_series(s, paths, set())
    assert {s_.name for s_ in s.spans()} >= {f"GET {paths[0]}"}  # the span keeps its name


def test_a_consumer_without_a_route_keeps_its_name(signals: Any) -> None:
    from opentelemetry.trace import SpanKind

    s = signals()
    with prodlens.tag("acme"), s.tracer.start_as_current_span("run/tasks.add",
                                                              kind=SpanKind.CONSUMER):
        pass
    assert {dict(key)["http.route"] for key in s.points(REQUESTS)} == {"run/tasks.add"}


