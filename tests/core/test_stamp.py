"""prodlens._stamp: the direct write must give exactly what Span.set_attributes gives."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from prodlens import _stamp

KEYS = st.sampled_from(["enduser.id", "http.route", "prodlens.cohort.plan", "a", "b", "c", "d"])
VALUES = st.one_of(st.text(max_size=12), st.integers(-5, 5))


def twin_spans(initial: dict[str, Any], limit: int | None, length: int | None) -> list[Any]:
    provider = TracerProvider(resource=Resource({}), shutdown_on_exit=False,
                              span_limits=SpanLimits(max_span_attributes=limit,
                                                     max_attribute_length=length))
    tracer = provider.get_tracer("t")
    return [tracer.start_span("s", attributes=initial) for _ in range(2)]


@pytest.fixture(autouse=True)
def _decided() -> Iterator[None]:
    saved = _stamp._fast
    yield
    _stamp._fast = saved


def test_the_direct_write_is_in_use_on_the_pinned_sdk() -> None:
    # If an SDK upgrade changes how span attributes are stored, this fails first (and prodlens
    # falls back to set_attributes, slower but correct).
    assert _stamp.fast_path_works()


@settings(max_examples=300, deadline=None)
@given(initial=st.dictionaries(KEYS, VALUES, max_size=5),
       attributes=st.dictionaries(KEYS, VALUES, min_size=1, max_size=5),
       limit=st.one_of(st.none(), st.integers(0, 8)),
       length=st.one_of(st.none(), st.integers(0, 10)),
       starting=st.booleans())
def test_stamp_equals_set_attributes(initial: dict[str, Any], attributes: dict[str, Any],
                                     limit: int | None, length: int | None,
                                     starting: bool) -> None:
    _stamp._fast = True
    direct, reference = twin_spans(initial, limit, length)
    longest = max((len(v) for v in attributes.values() if isinstance(v, str)), default=0)
    (_stamp.stamp_starting if starting else _stamp.stamp)(direct, attributes, longest)
    reference.set_attributes(attributes)
    assert list(direct.attributes.items()) == list(reference.attributes.items())
    assert direct.dropped_attributes == reference.dropped_attributes
    assert dict(_stamp.attribute_dict(direct)) == dict(reference.attributes)
    direct.end()
    reference.end()
    assert list(direct.attributes.items()) == list(reference.attributes.items())


def test_an_ended_span_is_not_written() -> None:
    _stamp._fast = True
    span, _ = twin_spans({"a": "1"}, None, None)
    span.end()
    _stamp.stamp(span, {"enduser.id": "acme"}, 4)
    assert dict(span.attributes) == {"a": "1"}


def test_without_the_direct_write_set_attributes_is_used() -> None:
    _stamp._fast = False
    span, _ = twin_spans({"a": "1"}, 2, 3)
    _stamp.stamp(span, {"enduser.id": "acme"}, 4)
    assert dict(span.attributes) == {"a": "1", "enduser.id": "acm"}
    assert _stamp.attribute_dict(span) == {"a": "1", "enduser.id": "acm"}


def test_concurrent_stamps_respect_the_attribute_limit() -> None:
    _stamp._fast = True
    span, _ = twin_spans({}, 16, None)
    barrier = threading.Barrier(8)

    def work(n: int) -> None:
        barrier.wait()
        for i in range(50):
            _stamp.stamp(span, {f"k{n}.{i}": "v"}, 1)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(span.attributes) == 16
    assert span.dropped_attributes == 8 * 50 - 16


def test_exported_spans_carry_the_stamp() -> None:
    import prodlens

    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    prodlens.configure(provider, environ={"PRODLENS_METRICS": "false"})
    with prodlens.tag("acme", plan="pro"):
        with provider.get_tracer("t").start_as_current_span("s", attributes={"x": 1}):
            pass
    attributes = dict(exporter.get_finished_spans()[0].attributes or {})
    assert attributes == {"x": 1, "enduser.id": "acme", "prodlens.cohort.plan": "pro"}
