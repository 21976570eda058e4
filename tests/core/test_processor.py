"""The span processor: stamping at start, late identification of open ancestors, bounds."""

from __future__ import annotations

import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from opentelemetry import trace
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor
from opentelemetry.trace import SpanKind

import prodlens
from prodlens.processor import open_span_count

ACME = {"enduser.id": "acme", "prodlens.cohort.plan": "pro"}


def test_late_identify_tags_open_server_span_and_ancestors_not_ended_siblings(traced):
    from prodlens._scope import close_scope, open_scope

    tracer = traced.tracer
    request_scope = open_scope(None, isolate_ancestors=False)  # as an integration opens it
    with tracer.start_as_current_span("server", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("auth-query"):
            pass  # ends before the user is known: stays untagged
        with tracer.start_as_current_span("middleware"):
            with tracer.start_as_current_span("view"):
                prodlens.identify("acme", plan="pro")
                with tracer.start_as_current_span("db"):
                    pass
            with tracer.start_as_current_span("after-view"):
                pass
    close_scope(request_scope)
    assert prodlens.current() is None
    assert traced.by_name() == {
        "auth-query": {},
        "db": ACME,
        "view": ACME,
        "after-view": ACME,
        "middleware": ACME,
        "server": ACME,
    }


def test_tag_scope_never_reaches_its_parent(traced):
    tracer = traced.tracer
    with tracer.start_as_current_span("batch"):
        for customer in ("a", "b"):
            with prodlens.tag(customer), tracer.start_as_current_span(f"item-{customer}"):
                prodlens.identify(plan="pro")  # inside the item: must not climb to "batch"
    names = traced.by_name()
    assert names["batch"] == {}
    assert names["item-a"] == {"enduser.id": "a", "prodlens.cohort.plan": "pro"}
    assert names["item-b"] == {"enduser.id": "b", "prodlens.cohort.plan": "pro"}


def test_ancestor_with_a_different_customer_is_left_alone(traced):
    tracer = traced.tracer
    with prodlens.tag("acme"), tracer.start_as_current_span("parent"):
        with prodlens.tag():
            pass
        with tracer.start_as_current_span("child"):
            # a new, unscoped context: identify() opens a scope here and climbs up
            token = trace.get_current_span()
            assert token.is_recording()
            prodlens.identify("globex")
    names = traced.by_name()
    assert names["parent"] == {"enduser.id": "acme"}
    assert names["child"] == {"enduser.id": "globex"}


def test_spans_from_a_real_instrumentation_carry_identity(traced):
    instrumentor = SQLite3Instrumentor()
    instrumentor.instrument(tracer_provider=traced.provider)
    try:
        with prodlens.tag("acme", plan="pro"):
            connection = sqlite3.connect(":memory:")
            connection.cursor().execute("create table t (x int)")
            connection.close()
    finally:
        instrumentor.uninstrument()
    db_spans = [s for s in traced.spans() if s.kind is SpanKind.CLIENT]
    assert db_spans, "the sqlite3 instrumentation produced no span"
    for span in db_spans:
        assert {k: v for k, v in span.attributes.items() if k in ACME} == ACME


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def loopback_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_requests_instrumentation_span_is_tagged(traced, loopback_server):
    instrumentor = RequestsInstrumentor()
    instrumentor.instrument(tracer_provider=traced.provider)
    try:
        with prodlens.tag("acme", plan="pro"):
            assert requests.get(loopback_server, timeout=5).text == "ok"
    finally:
        instrumentor.uninstrument()
    (span,) = traced.spans()
    assert span.kind is SpanKind.CLIENT
    assert {k: v for k, v in span.attributes.items() if k in ACME} == ACME


def test_open_span_bookkeeping_is_bounded(traced_with):
    traced = traced_with(max_open_spans=64)
    leaked = [traced.tracer.start_span(f"never-ended-{i}") for i in range(5000)]
    assert open_span_count() <= 64
    for span in leaked:
        span.end()
    assert open_span_count() == 0


def test_a_scope_remembers_its_open_spans_within_bounds(traced_with):
    from prodlens._scope import SCOPE, close_scope, open_scope

    traced = traced_with(max_open_spans=100)
    token = open_scope(None, isolate_ancestors=False)
    try:
        scope = SCOPE.get()
        assert scope is not None
        for i in range(10_000):  # a long-lived scope (a websocket, a worker loop)
            traced.tracer.start_span(f"ended-{i}").end()
        assert len(scope.spans) < 2 * 64  # ended spans are compacted away as it grows
        leaked = [traced.tracer.start_span(f"never-ended-{i}") for i in range(5000)]
        assert len(scope.spans) <= 2 * 100  # past the limit, the oldest open are forgotten
        assert leaked[-1] in scope.spans and leaked[0] not in scope.spans
        assert open_span_count() == 0  # spans in a scope never reach the process-wide table
        with traced.tracer.start_as_current_span("server", kind=SpanKind.SERVER):
            with traced.tracer.start_as_current_span("view"):
                prodlens.identify("acme", plan="pro")
        for span in leaked:
            span.end()
    finally:
        close_scope(token)
    assert traced.by_name()["server"] == ACME


def test_late_identify_in_a_nested_scope_reaches_ancestors_of_the_outer_scope(traced):
    from prodlens._scope import close_scope, open_scope

    tracer = traced.tracer
    request = open_scope(None, isolate_ancestors=False)
    with tracer.start_as_current_span("server", kind=SpanKind.SERVER):
        inner = open_scope(None, isolate_ancestors=False)  # e.g. an eager task's own scope
        with tracer.start_as_current_span("task"):
            prodlens.identify("acme", plan="pro")
        close_scope(inner)
    close_scope(request)
    assert traced.by_name() == {"server": ACME, "task": ACME}


def test_late_identify_from_worker_threads_reaches_the_request_span(traced):
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    from prodlens._scope import SCOPE, close_scope, open_scope

    tracer = traced.tracer
    token = open_scope(None, isolate_ancestors=False)
    with tracer.start_as_current_span("server", kind=SpanKind.SERVER):

        def work(i: int) -> None:  # many threads append to the one scope's span list at once
            for j in range(200):
                with tracer.start_as_current_span(f"w{i}-{j}"):
                    pass
            if i == 0:
                with tracer.start_as_current_span("view"):
                    prodlens.identify("acme", plan="pro")

        with ThreadPoolExecutor(8) as pool:  # each task runs in a copy of the request's context
            for future in [pool.submit(contextvars.copy_context().run, work, i)
                           for i in range(8)]:
                future.result()
        scope = SCOPE.get()
        assert scope is not None and len(scope.spans) < 2 * 64 + 8  # compacted as it grew
    close_scope(token)
    names = traced.by_name()
    assert names["server"] == ACME and names["view"] == ACME


def test_ended_spans_are_forgotten(traced):
    with traced.tracer.start_as_current_span("a"):
        assert open_span_count() == 1
    assert open_span_count() == 0


def test_disabled_prodlens_touches_nothing(traced_with):
    traced = traced_with(enabled=False)
    with prodlens.tag("acme"), traced.tracer.start_as_current_span("s"):
        prodlens.identify(plan="x")
    assert traced.by_name() == {"s": {}}


def test_configure_is_idempotent_per_provider(traced):
    from opentelemetry.sdk.trace import TracerProvider

    def prodlens_processors(provider: TracerProvider) -> int:
        # The SDK offers no public list of processors; this reads its multi-processor.
        processors = provider._active_span_processor._span_processors
        return sum(isinstance(p, prodlens.ProdlensSpanProcessor) for p in processors)

    prodlens.configure(traced.provider, environ={}, metrics=False)
    prodlens.configure(traced.provider, environ={}, metrics=False)
    assert prodlens_processors(traced.provider) == 1
    other = TracerProvider()
    prodlens.configure(other, environ={}, metrics=False)
    assert prodlens_processors(other) == 1
