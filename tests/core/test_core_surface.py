"""The core's boundaries: what importing prodlens loads, zero-code configuration problems, the
one span writer's switches, the log-once memory, the privacy of cached bearer tokens."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import Any

import pytest

import prodlens
from prodlens import _environment, _stamp
from prodlens._safety import log_once, reset_log_once
from prodlens.config import load_settings, read_environment

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("PRODLENS_", "OTEL_"))}


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], env={**CLEAN_ENV, **env},
                          capture_output=True, text=True, timeout=60)


def test_importing_prodlens_loads_only_the_core():
    result = _run(
        "import sys, prodlens\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('prodlens.signals', "
        "'prodlens.analysis', 'prodlens.demo', 'prodlens.live', 'prodlens.incidents', "
        "'prodlens.alerting')))\n"
        "print(loaded)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_configure_with_metrics_off_never_loads_signals():
    result = _run(
        "import sys, prodlens\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "prodlens.configure(TracerProvider(), environ={}, metrics=False)\n"
        "print(any(m.startswith('prodlens.signals') for m in sys.modules))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_tag_and_identify_without_a_configured_provider_warn_once_saying_what_to_call():
    result = _run(
        "import logging, prodlens\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "with prodlens.tag('acme'):\n"
        "    prodlens.identify('acme', plan='pro')\n"
        "prodlens.identify('globex')\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("attached to no tracer provider") == 1
    assert "prodlens.configure(provider)" in result.stderr


def test_configured_provider_means_no_unattached_warning():
    result = _run(
        "import logging, prodlens\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "prodlens.configure(TracerProvider(), environ={})\n"
        "prodlens.identify('globex')\n"
    )
    assert result.returncode == 0, result.stderr
    assert "attached to no tracer provider" not in result.stderr


def test_every_invalid_value_is_reported_at_once():
    env = {"PRODLENS_MAX_COHORT_VALUES": "-1", "PRODLENS_SAMPLE_RATIO": "2",
           "PRODLENS_COHORT_PLAN_FROM": "jwt:plan"}
    settings, problems = read_environment(env)
    assert [p.variable for p in problems] == ["PRODLENS_MAX_COHORT_VALUES",
                                              "PRODLENS_SAMPLE_RATIO"]
    assert (settings.max_cohort_values, settings.sample_ratio) == (100, 1.0)
    assert set(settings.cohort_sources) == {"plan"}  # the valid one still applies
    with pytest.raises(prodlens.ConfigError) as error:
        load_settings(env)
    assert "PRODLENS_MAX_COHORT_VALUES=-1" in str(error.value)
    assert "PRODLENS_SAMPLE_RATIO=2" in str(error.value)


def test_cohort_names_follow_one_grammar_in_config_and_identity(traced):
    long_name = "a" * 65
    _, problems = read_environment({f"PRODLENS_COHORT_{long_name.upper()}_FROM": "jwt:a"})
    assert [p.unknown for p in problems] == [True]
    with pytest.raises(prodlens.ConfigError, match="at most 64 characters"):
        load_settings({}, {"cohort_sources": {long_name: "jwt:a"}})
    with pytest.raises(ValueError, match="at most 64 characters"):
        prodlens.tag(**{long_name: "x"})
    assert load_settings({}, {"cohort_sources": {"a" * 64: "jwt:a"}}).cohort_sources


def test_config_command_lists_every_problem_and_what_sources_can_read():
    result = subprocess.run(
        [sys.executable, "-m", "prodlens", "config"],
        env={**CLEAN_ENV, "PRODLENS_CUSTMER_FROM": "jwt:sub", "PRODLENS_COHORT_PLAN": "jwt:plan",
             "PRODLENS_MAX_COHORT_VALUES": "-1", "PRODLENS_MAX_VALUE_LENGTH": "zero"},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "4 problems" in result.stderr
    for expected in ("did you mean PRODLENS_CUSTOMER_FROM?",
                     "did you mean PRODLENS_COHORT_PLAN_FROM?",
                     "PRODLENS_MAX_COHORT_VALUES=-1 (from the environment) is not valid",
                     "PRODLENS_MAX_VALUE_LENGTH=zero (from the environment) is not valid"):
        assert expected in result.stderr
    assert "flask        found" in result.stdout
    assert "OpenTelemetry instrumentations installed: " in result.stdout
    assert "user: read from Flask-Login" in result.stdout


def test_user_source_without_an_auth_framework_is_explained(monkeypatch: Any):
    # As on a machine without Flask-Login, Django or Starlette installed.
    monkeypatch.setattr(_environment, "_installed", lambda module: False)
    lines = _environment.describe_environment(load_settings({}))
    assert any(line.strip().startswith("user: yields nothing unless the WSGI server sets "
                                       "REMOTE_USER") for line in lines)
    assert any(line.split()[:3] == ["flask", "not", "installed"] for line in lines)


def test_log_once_memory_can_be_reset(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="prodlens"):
        log_once("test:reset", logging.WARNING, "prodlens test message")
        log_once("test:reset", logging.WARNING, "prodlens test message")
        reset_log_once()
        log_once("test:reset", logging.WARNING, "prodlens test message")
    assert [r.getMessage() for r in caplog.records].count("prodlens test message") == 2


def test_direct_stamp_can_be_switched_off_with_the_same_result(traced_with):
    results = []
    for direct in (True, False):
        traced = traced_with(direct_stamp=direct)
        with prodlens.tag("acme", plan="pro"), traced.tracer.start_as_current_span("s"):
            prodlens.identify(region="eu")
        results.append(traced.by_name()["s"])
        # Internal state, as no public behaviour differs: the switch is what is under test.
        assert _stamp._fast is direct
    assert results[0] == results[1] == {
        "enduser.id": "acme", "prodlens.cohort.plan": "pro", "prodlens.cohort.region": "eu"}


def test_probe_turning_the_direct_write_off_is_logged_at_info(
        monkeypatch: Any, caplog: pytest.LogCaptureFixture, traced):
    monkeypatch.setattr(_stamp, "fast_path_works", lambda: False)
    monkeypatch.setattr(_stamp, "_fast", None)
    monkeypatch.setattr(_stamp, "_probed", None)
    with caplog.at_level(logging.INFO, logger="prodlens"):
        with prodlens.tag("acme"), traced.tracer.start_as_current_span("s"):
            pass
    assert traced.by_name()["s"] == {"enduser.id": "acme"}
    infos = [r for r in caplog.records if "stamping through Span.set_attributes" in r.getMessage()]
    assert [r.levelno for r in infos] == [logging.INFO]


def test_other_packages_get_a_read_only_view_of_span_attributes(traced):
    with prodlens.tag("acme"), traced.tracer.start_as_current_span("s") as span:
        view = _stamp.attribute_dict(span)
        assert view["enduser.id"] == "acme"
        with pytest.raises(TypeError):
            view["enduser.id"] = "mallory"  # type: ignore[index]


def test_cached_early_identities_never_hold_a_bearer_token():
    from prodlens import _runtime
    from prodlens.integrations import wsgi
    from prodlens.integrations._plan import header_plan

    settings = load_settings({"PRODLENS_CUSTOMER_FROM": "jwt:sub", "PRODLENS_METRICS": "false"})
    _runtime.install(settings)
    token = "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhY21lIn0.c2lnbmF0dXJl"
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "HTTP_AUTHORIZATION": token}
    for _ in range(2):  # a miss, then a hit of the same cache entry
        request = dict(environ)
        scope = wsgi.enter_request(request, with_remote_user=False)
        assert prodlens.current().customer == "acme"
        wsgi.exit_request(request, scope)
    plan = header_plan(settings)
    assert plan is not None and len(plan) == 1
    for key in plan.cache:
        assert all(token not in str(part) and "eyJ" not in str(part) for part in key)
