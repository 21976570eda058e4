"""Isolation is security: one customer's identity never reaches another request's spans."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from opentelemetry.trace import SpanKind

import prodlens
from prodlens._scope import close_scope, open_scope

REQUESTS = 1000


def _assert_each_span_has_its_own_customer(spans, expected_count: int) -> None:
    assert len(spans) == expected_count
    for span in spans:
        owner = span.name.split(":", 1)[1]
        assert span.attributes["enduser.id"] == owner, span.name
        assert span.attributes["prodlens.cohort.request"] == owner, span.name


def _request(tracer, customer: str, barrier: threading.Barrier | None = None) -> None:
    # What an integration does per request: open a scope, identify late, close the scope.
    token = open_scope(None, isolate_ancestors=False)
    try:
        with tracer.start_as_current_span(f"server:{customer}", kind=SpanKind.SERVER):
            if barrier is not None:
                barrier.wait(timeout=10)
            prodlens.identify(customer, request=customer)
            with tracer.start_as_current_span(f"db:{customer}"):
                pass
    finally:
        close_scope(token)


def test_threads_never_see_each_others_identity(traced_with):
    traced = traced_with(max_cohort_values=REQUESTS)
    barrier = threading.Barrier(8)
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [
            pool.submit(_request, traced.tracer, f"c{i}", barrier if i < 8 else None)
            for i in range(REQUESTS)
        ]
        for future in futures:
            future.result(timeout=30)
    _assert_each_span_has_its_own_customer(traced.spans(), 2 * REQUESTS)


def test_asyncio_tasks_never_see_each_others_identity(traced_with):
    traced = traced_with(max_cohort_values=REQUESTS)
    tracer = traced.tracer

    async def request(customer: str) -> None:
        @prodlens.tag(customer=lambda customer: customer, request=lambda customer: customer)
        async def handle(customer: str) -> None:
            with tracer.start_as_current_span(f"handler:{customer}"):
                await asyncio.sleep(0)  # interleave with every other task
                with tracer.start_as_current_span(f"db:{customer}"):
                    await asyncio.sleep(0)

        await handle(customer)

    async def main() -> None:
        await asyncio.gather(*(request(f"c{i}") for i in range(REQUESTS)))

    asyncio.run(main())
    _assert_each_span_has_its_own_customer(traced.spans(), 2 * REQUESTS)


def test_asyncio_late_identify_in_concurrent_request_scopes(traced_with):
    traced = traced_with(max_cohort_values=REQUESTS)
    tracer = traced.tracer

    async def request(customer: str) -> None:
        token = open_scope(None, isolate_ancestors=False)
        try:
            with tracer.start_as_current_span(f"server:{customer}", kind=SpanKind.SERVER):
                await asyncio.sleep(0)
                prodlens.identify(customer, request=customer)
                await asyncio.sleep(0)
                with tracer.start_as_current_span(f"db:{customer}"):
                    await asyncio.sleep(0)
        finally:
            close_scope(token)

    async def main() -> None:
        await asyncio.gather(*(asyncio.create_task(request(f"c{i}")) for i in range(REQUESTS)))

    asyncio.run(main())
    _assert_each_span_has_its_own_customer(traced.spans(), 2 * REQUESTS)


def test_sequential_requests_on_one_thread_do_not_inherit(traced):
    def serve_all() -> None:
        for customer in ("a", "b", "c"):
            _request(traced.tracer, customer)
            assert prodlens.current() is None
        token = open_scope(None, isolate_ancestors=False)
        with traced.tracer.start_as_current_span("server:anonymous"):
            pass
        close_scope(token)

    worker = threading.Thread(target=serve_all)
    worker.start()
    worker.join(timeout=10)
    spans = {s.name: dict(s.attributes) for s in traced.spans()}
    assert spans.pop("server:anonymous") == {}
    _assert_each_span_has_its_own_customer(
        [s for s in traced.spans() if s.name != "server:anonymous"], 6
    )
