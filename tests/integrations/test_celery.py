"""Celery: identity given at .delay() reaches the worker's task spans through the message headers.

A REAL worker consumes the queue: ``celery.contrib.testing.worker.start_worker`` runs Celery's
own ``WorkController`` (consumer, pool, signals, message protocol 2) in a thread of this process,
on the in-memory transport (``memory://``) with the ``cache+memory://`` result backend. The
message goes through kombu's serialisation exactly as with a network broker; an in-process
worker lets the test read the worker's spans from the same in-memory exporter, with no broker
daemon and no subprocess start-up (a filesystem broker with a subprocess worker would test the
same code path, slower). Eager mode would run the task inline in the caller's context and prove
nothing about the header.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, signals
from celery.contrib.testing.worker import start_worker
from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from servers import prodlens_attributes, wait_for

import prodlens
from prodlens.attributes import CELERY_HEADER
from prodlens.instrumentor import ProdlensInstrumentor

ENV = {"PRODLENS_CUSTOMER_FROM": "header:x-customer-id"}


TASK = "work"


def make_app(provider: Any, name: str) -> Celery:
    app = Celery(name, broker="memory://", backend="cache+memory://", set_as_current=False)
    app.conf.update(task_always_eager=False, worker_hijack_root_logger=False,
                    broker_connection_retry_on_startup=False, result_expires=None,
                    broker_transport_options={"polling_interval": 0.05})
    tracer = trace.get_tracer("test-celery-task", tracer_provider=provider)

    @app.task(name=TASK, bind=True, shared=False)
    def work(self: Any, n: int) -> dict[str, Any]:
        with tracer.start_as_current_span("task-child"):
            db = sqlite3.connect(":memory:")
            db.cursor().execute("select 1").fetchall()
            db.close()
        identity = prodlens.current()
        return {
            "n": n,
            "customer": identity.customer if identity else None,
            "cohorts": dict(identity.cohorts) if identity else {},
            "header": getattr(self.request, CELERY_HEADER, None) is not None,
        }

    return app


@dataclass
class Worker:
    app: Celery
    provider: TracerProvider
    exporter: InMemorySpanExporter

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


@pytest.fixture(scope="module", params=["celery-instrumented-first", "prodlens-first"])
def worker(request: Any) -> Iterator[Worker]:
    """One real worker (threads pool, 4 threads) per module and order of instrumentation: the
    order decides whose task_prerun receiver runs first (a worker takes seconds to stop)."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument_prodlens = lambda: ProdlensInstrumentor().instrument(  # noqa: E731
        tracer_provider=provider, environ={"PRODLENS_METRICS": "false", **ENV})
    instrument_celery = lambda: CeleryInstrumentor().instrument(  # noqa: E731
        tracer_provider=provider)
    order = ([instrument_celery, instrument_prodlens] if request.param.startswith("celery")
             else [instrument_prodlens, instrument_celery])
    for instrument in order:
        instrument()
    SQLite3Instrumentor().instrument(tracer_provider=provider)
    app = make_app(provider, f"prodlens-test-{request.param}")
    try:
        with start_worker(app, pool="threads", concurrency=4, perform_ping_check=False,
                          loglevel="WARNING", shutdown_timeout=10):
            yield Worker(app, provider, exporter)
    finally:
        SQLite3Instrumentor().uninstrument()
        CeleryInstrumentor().uninstrument()
        ProdlensInstrumentor().uninstrument()
        provider.shutdown()


@pytest.fixture
def celery_setup(worker: Worker) -> Iterator[Callable[[dict[str, str]], Worker]]:
    """Per test: prodlens settings from ``env`` (process-wide, read by the receivers)."""

    def factory(env: dict[str, str]) -> Worker:
        prodlens.configure(worker.provider, environ={"PRODLENS_METRICS": "false", **env})
        worker.exporter.clear()
        return worker

    yield factory
    worker.exporter.clear()


def task_spans(traced: Worker) -> dict[str, list[ReadableSpan]]:
    """Spans of each worker execution (by the ``run/work`` span's trace), keyed by task id."""
    spans = traced.spans()
    result: dict[str, list[ReadableSpan]] = {}
    for run in (s for s in spans if s.name == "run/work"):
        assert run.kind == SpanKind.CONSUMER and run.context is not None
        task_id = str((run.attributes or {}).get("messaging.message.id"))
        result[task_id] = [s for s in spans if s.context is not None
                           and s.context.trace_id == run.context.trace_id
                           and s.name in ("run/work", "task-child", "select")]
    return result


def test_identity_reaches_the_worker_task_and_its_child_spans(celery_setup: Any) -> None:
    traced = celery_setup(ENV)
    app = traced.app
    with prodlens.tag("acme", plan="pro"):
        result = app.tasks["work"].delay(1)
    assert result.get(timeout=10, interval=0.02) == {"n": 1, "customer": "acme",
                                      "cohorts": {"plan": "pro"}, "header": True}
    # A task published with no identity runs with none (not the previous task's).
    plain = app.tasks["work"].delay(2)
    assert plain.get(timeout=10, interval=0.02) == {"n": 2, "customer": None, "cohorts": {},
                                     "header": False}
    assert wait_for(lambda: len(task_spans(traced)) == 2, timeout=5)
    by_task = task_spans(traced)
    expected = {"enduser.id": "acme", "prodlens.cohort.plan": "pro"}
    assert sorted(s.name for s in by_task[result.id]) == ["run/work", "select", "task-child"]
    for span in by_task[result.id]:
        assert prodlens_attributes(span.attributes) == expected, span.name
    for span in by_task[plain.id]:
        assert prodlens_attributes(span.attributes) == {}, span.name
    (publish,) = [s for s in traced.spans() if s.name == "apply_async/work"
                  and (s.attributes or {}).get("messaging.message.id") == result.id]
    assert prodlens_attributes(publish.attributes) == expected  # the producer's own span


def test_concurrent_tasks_of_many_customers_never_mix(celery_setup: Any) -> None:
    traced = celery_setup(ENV)
    app = traced.app
    customers = [f"cust-{i}" for i in range(5)]

    def publish(i: int) -> tuple[str, Any]:
        with prodlens.tag(customers[i % 5], plan=f"p{i % 2}"):
            return customers[i % 5], app.tasks["work"].delay(i)

    with ThreadPoolExecutor(max_workers=5) as pool:
        sent = list(pool.map(publish, range(20)))
    results = [(customer, r.get(timeout=15, interval=0.02), r.id) for customer, r in sent]
    for i, (customer, body, _) in enumerate(results):
        assert body == {"n": i, "customer": customer, "cohorts": {"plan": f"p{i % 2}"},
                        "header": True}
    assert wait_for(lambda: len(task_spans(traced)) == 20, timeout=5)
    by_task = task_spans(traced)
    for i, (customer, _, task_id) in enumerate(results):
        assert len(by_task[task_id]) == 3
        for span in by_task[task_id]:
            assert prodlens_attributes(span.attributes) == {
                "enduser.id": customer, "prodlens.cohort.plan": f"p{i % 2}"}, span.name


def test_celery_propagate_false_turns_it_off(celery_setup: Any) -> None:
    traced = celery_setup({**ENV, "PRODLENS_CELERY_PROPAGATE": "false"})
    app = traced.app
    with prodlens.tag("acme"):
        result = app.tasks["work"].delay(1)
    assert result.get(timeout=10, interval=0.02) == {"n": 1, "customer": None, "cohorts": {},
                                      "header": False}
    assert wait_for(lambda: len(task_spans(traced)) == 1, timeout=5)
    for span in task_spans(traced)[result.id]:
        assert prodlens_attributes(span.attributes) == {}


def test_worker_ignores_the_header_when_turned_off(celery_setup: Any) -> None:
    traced = celery_setup({**ENV, "PRODLENS_CELERY_PROPAGATE": "false"})
    app = traced.app
    # A message from a producer that still propagates.
    result = app.tasks["work"].apply_async((1,), headers={CELERY_HEADER: "prodlens.customer=x"})
    assert result.get(timeout=10, interval=0.02)["customer"] is None


def test_uninstrument_disconnects_the_receivers(celery_setup: Any) -> None:
    """Last in the file: it uninstruments the module's worker set-up (and re-instruments)."""
    from prodlens.integrations import celery as integration

    traced = celery_setup(ENV)

    def connected() -> set[str]:
        names = set()
        for signal in (signals.before_task_publish, signals.task_prerun, signals.task_postrun):
            for receiver in signal._live_receivers(None):  # no public listing
                for fn in receiver if isinstance(receiver, (list, tuple)) else [receiver]:
                    names.add(getattr(fn, "__module__", ""))
        return names

    assert integration.__name__ in connected()
    ProdlensInstrumentor().uninstrument()
    assert integration.__name__ not in connected()
    with prodlens.tag("acme"):
        result = traced.app.tasks["work"].delay(1)
    assert result.get(timeout=10, interval=0.02)["customer"] is None
    ProdlensInstrumentor().instrument(tracer_provider=traced.provider,
                                      environ={"PRODLENS_METRICS": "false", **ENV})
    assert integration.__name__ in connected()


def test_zero_code_example_with_a_subprocess_worker() -> None:
    """examples/celery: web producer and worker in their own processes under
    opentelemetry-instrument, filesystem broker, no PRODLENS_* variable on the worker."""
    script = Path(__file__).parents[2] / "examples" / "celery" / "run_demo.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, env={"PATH": os.environ.get("PATH", "")})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
