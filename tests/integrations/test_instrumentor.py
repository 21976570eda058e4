"""ProdlensInstrumentor: entry point, never raises, reports every bad variable and keeps the rest
active, patches via post-import hooks, uninstrument removes every patch and makes the processor
inert."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from typing import Any

import flask
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from prodlens import _configure, _runtime
from prodlens.instrumentor import ProdlensInstrumentor
from prodlens.integrations import _patching


def test_entry_point_is_registered_with_a_prefixed_name() -> None:
    found = [e for e in entry_points(group="opentelemetry_instrumentor")
             if e.value == "prodlens.instrumentor:ProdlensInstrumentor"]
    assert [e.name for e in found] == ["prodlens"]
    assert found[0].load() is ProdlensInstrumentor


def test_no_instruments_dependencies() -> None:
    assert list(ProdlensInstrumentor().instrumentation_dependencies()) == []


def test_every_invalid_variable_is_reported_once_and_the_rest_stays_active(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="prodlens")
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    environ = {
        "PRODLENS_METRICS": "false",
        "PRODLENS_CUSTOMER_FROM": "header",            # invalid: falls back to `user`
        "PRODLENS_MAX_COHORT_VALUES": "-1",            # invalid: falls back to 100
        "PRODLENS_COHORT_PLAN_FROM": "header:x-plan",  # valid: still applied
        "PRODLENS_CUSTMER_FROM": "header:x-customer",  # unknown: a warning, a suggestion
        "PRODLENS_COHORT_Region_FROM": "header:x-region",
    }
    ProdlensInstrumentor().instrument(tracer_provider=provider, environ=environ)
    try:
        assert _patching.patched(flask.app.Flask, "__call__")
        assert _runtime.current().settings.max_cohort_values == 100
        app = flask.Flask("prodlens-test-config")

        @app.route("/")
        def index() -> str:
            with provider.get_tracer("tests").start_as_current_span("view"):
                return "ok"

        assert app.test_client().get("/", headers={"x-plan": "pro"}).status_code == 200
        (span,) = exporter.get_finished_spans()
        assert dict(span.attributes or {}) == {"prodlens.cohort.plan": "pro"}
        messages = [r.getMessage() for r in caplog.records
                    if r.levelno == logging.WARNING and r.name == "prodlens"]
        for expected in ("PRODLENS_CUSTOMER_FROM=header (from the environment) is not valid: "
                         "expected a comma-separated list of header:NAME",
                         "PRODLENS_MAX_COHORT_VALUES=-1 (from the environment) is not valid: "
                         "expected a whole number >= 1; the default is used",
                         "PRODLENS_CUSTMER_FROM is not a prodlens setting and is ignored; did "
                         "you mean PRODLENS_CUSTOMER_FROM?",
                         "PRODLENS_COHORT_Region_FROM is not a prodlens setting and is ignored; "
                         "did you mean PRODLENS_COHORT_REGION_FROM?"):
            assert sum(expected in message for message in messages) == 1, expected
        assert len(messages) == 4
    finally:
        ProdlensInstrumentor().uninstrument()


def test_unusable_pseudonymisation_switches_prodlens_off(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="prodlens")
    ProdlensInstrumentor().instrument(
        tracer_provider=TracerProvider(),
        environ={"PRODLENS_PSEUDONYMIZE": "true", "PRODLENS_PSEUDONYM_KEY": "short"})
    try:
        assert not _runtime.current().on
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "runs untagged" in errors[0]
        assert any("PRODLENS_PSEUDONYM_KEY=(hidden)" in r.getMessage() for r in caplog.records)
    finally:
        ProdlensInstrumentor().uninstrument()


def test_disabled_integrations_are_not_patched(prodlens_setup: Any) -> None:
    import celery.signals

    prodlens_setup({"PRODLENS_DISABLED_INTEGRATIONS": "celery,openfeature"})
    assert _patching.patched(flask.app.Flask, "__call__")
    receivers = [r for r in celery.signals.task_prerun.receivers
                 if "prodlens" in repr(r[0])]
    assert receivers == []
    from openfeature import api

    assert not any(type(h).__name__ == "ProdlensHook" for h in api.get_hooks())


def test_instrument_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> bool:
        raise RuntimeError("boom")

    monkeypatch.setattr(_configure, "attach", broken)
    ProdlensInstrumentor().instrument(tracer_provider=TracerProvider(), environ={})
    ProdlensInstrumentor().uninstrument()


def test_uninstrument_removes_every_patch_and_deactivates(prodlens_setup: Any) -> None:
    import django.core.handlers.base as base
    import httpcore
    import urllib3.connection

    prodlens_setup({"PRODLENS_COHORT_TENANT_FROM": "path:tenant"})  # a late source
    owners = [(flask.app.Flask, "__call__"), (flask.app.Flask, "dispatch_request"),
              (base.BaseHandler, "get_response"), (base.BaseHandler, "load_middleware"),
              (urllib3.connection.HTTPConnection, "request"),
              (httpcore.ConnectionPool, "handle_request")]
    assert all(_patching.patched(o, a) for o, a in owners)
    originals = {a: getattr(o, a).__wrapped__ for o, a in owners}
    ProdlensInstrumentor().uninstrument()
    assert not any(_patching.patched(o, a) for o, a in owners)
    assert all(getattr(o, a) is originals[a] for o, a in owners)
    assert not _runtime.current().on


def test_per_request_entry_points_are_plain_functions_mirroring_the_original(
        prodlens_setup: Any) -> None:
    import asyncio
    import inspect

    import fastapi
    import starlette.applications
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    asgi = [fastapi.FastAPI, starlette.applications.Starlette, OpenTelemetryMiddleware]
    originals = {owner: vars(owner)["__call__"] for owner in [*asgi, flask.app.Flask]}
    prodlens_setup({"PRODLENS_CUSTOMER_FROM": "header:x-customer-id"})
    for owner, original in originals.items():
        patched = vars(owner)["__call__"]
        assert _patching.patched(owner, "__call__")
        # Not a wrapt wrapper (which binds a new object on every call): a plain function with
        # the original's signature and __wrapped__.
        assert type(patched) is type(original) and patched.__wrapped__ is original
        assert inspect.signature(patched) == inspect.signature(original)
    for owner in asgi:  # servers pick ASGI 3 by this test (uvicorn's interface="auto")
        assert asyncio.iscoroutinefunction(vars(owner)["__call__"])
        assert inspect.iscoroutinefunction(vars(owner)["__call__"])
    ProdlensInstrumentor().uninstrument()
    assert all(vars(owner)["__call__"] is original for owner, original in originals.items())


def test_an_unexpected_entry_point_signature_falls_back_to_a_wrapt_wrapper() -> None:
    from prodlens.integrations.asgi import asgi_call, wrap_app_call

    class Odd:
        async def __call__(self, scope: Any, *rest: Any) -> Any:
            return scope["n"] + len(rest)

    original = vars(Odd)["__call__"]
    assert asgi_call(original) is None  # *rest: not the signature it mirrors
    _patching.replace(Odd, "__call__", asgi_call, wrap_app_call)
    try:
        assert _patching.patched(Odd, "__call__")
        assert type(vars(Odd)["__call__"]) is not type(original)  # wrapt's wrapper
        import asyncio

        assert asyncio.run(Odd()({"n": 1}, 2, 3)) == 3
    finally:
        _patching.unpatch_all()
    assert vars(Odd)["__call__"] is original


def test_an_entry_point_another_library_wrapped_with_wrapt_is_wrapped_not_replaced() -> None:
    import asyncio

    import wrapt

    from prodlens.integrations.asgi import asgi_call, wrap_app_call

    class App:
        async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
            return scope["n"]

    seen: list[Any] = []

    def theirs(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        seen.append(instance)
        return wrapped(*args, **kwargs)

    wrapt.wrap_function_wrapper(App, "__call__", theirs)
    assert _patching.has_parameters(vars(App)["__call__"], ("self", "scope", "receive",
                                                            "send")) is False
    _patching.replace(App, "__call__", asgi_call, wrap_app_call)
    try:
        app = App()
        assert asyncio.run(app({"n": 7}, None, None)) == 7
        assert seen == [app]  # their wrapper still sees its instance
    finally:
        _patching.unpatch_all()


def test_late_source_hooks_are_patched_only_while_late_sources_are_configured(
        prodlens_setup: Any) -> None:
    import fastapi.routing
    import starlette.routing

    import prodlens

    owners = [(flask.app.Flask, "dispatch_request"), (starlette.routing.Route, "handle"),
              (fastapi.routing.APIRoute, "handle")]
    originals = [vars(o)[a] for o, a in owners]
    setup = prodlens_setup({"PRODLENS_CUSTOMER_FROM": "header:x-customer-id"})
    assert not any(_patching.patched(o, a) for o, a in owners)
    assert [vars(o)[a] for o, a in owners] == originals  # no wrapper: no per-request cost
    # Settings changed in code after instrumenting: the late hooks follow them.
    prodlens.configure(setup.provider, environ={"PRODLENS_METRICS": "false",
                                                "PRODLENS_CUSTOMER_FROM": "user"})
    assert all(_patching.patched(o, a) for o, a in owners)
    app = flask.Flask("late")
    app.add_url_rule("/t/<tenant>", "t", lambda tenant: "ok")
    prodlens.configure(setup.provider, environ={
        "PRODLENS_METRICS": "false", "PRODLENS_COHORT_TENANT_FROM": "path:tenant"})
    tracer = setup.provider.get_tracer("t")
    with app.test_request_context("/t/acme"):
        with tracer.start_as_current_span("server"):
            app.full_dispatch_request()
    assert setup.exporter.get_finished_spans()[-1].attributes["prodlens.cohort.tenant"] == "acme"
    prodlens.configure(setup.provider, environ={"PRODLENS_METRICS": "false",
                                                "PRODLENS_CUSTOMER_FROM": "header:x-c"})
    assert not any(_patching.patched(o, a) for o, a in owners)
    assert [vars(o)[a] for o, a in owners] == originals


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60, env={"PRODLENS_METRICS": "false",
                                                      "PRODLENS_CUSTOMER_FROM": "header:x-c"})


def test_framework_imported_after_instrumenting_is_patched() -> None:
    result = run("""
        import sys
        from prodlens.instrumentor import ProdlensInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        ProdlensInstrumentor().instrument(tracer_provider=TracerProvider())
        assert "flask" not in sys.modules
        import flask
        print(hasattr(flask.Flask.__call__, "__wrapped__"))
    """)
    assert result.stdout.strip() == "True", result.stderr


def test_no_sdk_warns_once_then_attaches_when_the_app_sets_a_provider() -> None:
    result = run("""
        import logging
        logging.basicConfig(level=logging.WARNING)
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        import prodlens
        from prodlens.instrumentor import ProdlensInstrumentor
        ProdlensInstrumentor().instrument()
        ProdlensInstrumentor().uninstrument()
        ProdlensInstrumentor().instrument()
        provider = TracerProvider()
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        with prodlens.tag("acme"):
            trace.get_tracer("t").start_span("s").end()
        print(dict(exporter.get_finished_spans()[0].attributes))
    """)
    assert result.stdout.strip() == "{'enduser.id': 'acme'}", result.stderr
    assert result.stderr.count("pip install opentelemetry-distro") == 1, result.stderr
