"""OpenFeature: each evaluation's variant becomes the cohort flag.<key> on the current span, its
open ancestors and the rest of the request; with the in-memory provider of the real SDK."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from opentelemetry import trace
from servers import prodlens_attributes

import prodlens
from prodlens.instrumentor import ProdlensInstrumentor
from prodlens.integrations.openfeature import (
    ProdlensHook,
    flag_cohort_name,
    install,
    uninstall,
)


def by_customer(flag: InMemoryFlag[Any], context: EvaluationContext) -> FlagResolutionDetails[Any]:
    variant = "on" if context.targeting_key == "acme" else "off"
    return FlagResolutionDetails(value=flag.variants[variant], variant=variant,
                                 reason=Reason.TARGETING_MATCH)


FLAGS = {
    "new-checkout": InMemoryFlag("off", {"on": True, "off": False},
                                 context_evaluator=by_customer),
    "newCheckout": InMemoryFlag("on", {"on": True, "off": False}),
    "banner-color": InMemoryFlag("blue", {"blue": "#00f", "red": "#f00"}),
    "config": InMemoryFlag("v1", {"v1": {"limit": 3}}),
}


@pytest.fixture
def flags(prodlens_setup: Any) -> Iterator[Any]:
    """ProdlensInstrumentor registers the hook globally (openfeature.api is imported)."""
    api.clear_hooks()
    api.set_provider(InMemoryProvider(FLAGS))
    traced = prodlens_setup({"PRODLENS_CUSTOMER_FROM": "header:x-customer-id"})
    yield traced
    api.clear_providers()
    api.clear_hooks()


@pytest.mark.parametrize(("key", "name"), [
    ("new-checkout", "flag.new_checkout"), ("newCheckout", "flag.new_checkout"),
    ("NewCheckout", "flag.new_checkout"), ("new_checkout", "flag.new_checkout"),
    ("HTTPServer", "flag.http_server"), ("checkout.v2", "flag.checkout.v2"),
    ("Crème brûlée", "flag.creme_brulee"), ("--", None), ("x" * 300, "flag." + "x" * 59),
])
def test_flag_keys_normalise_to_cohort_names(key: str, name: str | None) -> None:
    assert flag_cohort_name(key) == name


def test_variant_tags_current_span_ancestors_and_later_spans(flags: Any) -> None:
    tracer = trace.get_tracer("test", tracer_provider=flags.provider)
    client = api.get_client()
    with prodlens.tag("acme"), tracer.start_as_current_span("request"):
        with tracer.start_as_current_span("handler"):
            assert client.get_boolean_value(
                "new-checkout", False, EvaluationContext(targeting_key="acme")) is True
            assert client.get_string_value("banner-color", "#000") == "#00f"
        with tracer.start_as_current_span("later"):
            pass
    expected = {"enduser.id": "acme", "prodlens.cohort.flag.new_checkout": "on",
                "prodlens.cohort.flag.banner_color": "blue"}
    spans = {s.name: prodlens_attributes(s.attributes) for s in flags.spans()}
    assert spans == {"handler": expected, "request": expected, "later": expected}


def test_each_request_gets_its_own_variant(flags: Any) -> None:
    tracer = trace.get_tracer("test", tracer_provider=flags.provider)
    client = api.get_client()
    barrier = threading.Barrier(4)

    def request(customer: str) -> None:
        with prodlens.tag(customer), tracer.start_as_current_span(f"req-{customer}"):
            barrier.wait(timeout=5)
            client.get_boolean_value("new-checkout", False,
                                     EvaluationContext(targeting_key=customer))
            barrier.wait(timeout=5)

    threads = [threading.Thread(target=request, args=(c,)) for c in
               ("acme", "globex", "initech", "umbrella")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    got = {s.name: prodlens_attributes(s.attributes) for s in flags.spans()}
    assert got == {
        f"req-{c}": {"enduser.id": c,
                     "prodlens.cohort.flag.new_checkout": "on" if c == "acme" else "off"}
        for c in ("acme", "globex", "initech", "umbrella")
    }


def test_outside_a_scope_only_open_spans_are_tagged(flags: Any) -> None:
    tracer = trace.get_tracer("test", tracer_provider=flags.provider)
    with tracer.start_as_current_span("job"):
        api.get_client().get_boolean_value("newCheckout", False)
    with tracer.start_as_current_span("next-job"):
        pass
    assert prodlens.current() is None  # nothing outlives the span
    spans = {s.name: prodlens_attributes(s.attributes) for s in flags.spans()}
    assert spans == {"job": {"prodlens.cohort.flag.new_checkout": "on"}, "next-job": {}}


def test_missing_flag_records_the_default_served_and_objects_are_skipped(
        flags: Any) -> None:
    tracer = trace.get_tracer("test", tracer_provider=flags.provider)
    client = api.get_client()
    with prodlens.tag(), tracer.start_as_current_span("req"):
        assert client.get_boolean_value("no-such-flag", False) is False
        assert client.get_object_value("config", {}) == {"limit": 3}  # variant "v1"
        assert client.get_object_value("no-such-object", {"a": 1}) == {"a": 1}  # skipped
    (span,) = flags.spans()
    assert prodlens_attributes(span.attributes) == {
        "prodlens.cohort.flag.no_such_flag": "false", "prodlens.cohort.flag.config": "v1"}


def test_hook_never_raises_into_the_evaluation(flags: Any) -> None:
    class Details:
        variant = object()  # an unusable variant type
        value = None

    class Context:
        flag_key = None  # not even a string

    ProdlensHook().finally_after(Context(), Details(), {})  # type: ignore[arg-type]
    assert api.get_client().get_boolean_value("newCheckout", False) is True


def test_install_is_idempotent_and_uninstrument_removes_only_ours(flags: Any) -> None:
    other = ProdlensHook.__base__()  # a plain Hook from someone else
    api.add_hooks([other])
    hook = install()
    assert install() is hook
    assert [h for h in api.get_hooks() if isinstance(h, ProdlensHook)] == [hook]
    ProdlensInstrumentor().uninstrument()
    assert api.get_hooks() == [other]
    tracer = trace.get_tracer("test", tracer_provider=flags.provider)
    with prodlens.tag("acme"), tracer.start_as_current_span("req"):
        api.get_client().get_boolean_value("newCheckout", False)
    assert all(prodlens_attributes(s.attributes) == {} for s in flags.spans())
    uninstall()  # nothing left to remove: no error
    assert api.get_hooks() == [other]
