"""prodlens.testing: what users' own suites get (the fixture, traced(), reset())."""

from __future__ import annotations

import logging

import pytest

import prodlens
from prodlens import _runtime
from prodlens._safety import log_once
from prodlens.testing import reset, traced


def test_fixture_gives_a_configured_provider_exporting_to_memory(prodlens_traced):
    with prodlens.tag("acme", plan="pro"), prodlens_traced.tracer.start_as_current_span("work"):
        pass
    assert prodlens_traced.attributes("work") == {"enduser.id": "acme",
                                                  "prodlens.cohort.plan": "pro"}
    assert len(prodlens_traced.spans()) == 1


def test_reset_restores_a_fresh_process_state(caplog: pytest.LogCaptureFixture):
    t = traced(max_cohort_values=7)
    assert _runtime.current().settings.max_cohort_values == 7
    prodlens.identify("acme")  # outside any scope: stays in this context
    with caplog.at_level(logging.WARNING, logger="prodlens"):
        log_once("test:testing-reset", logging.WARNING, "once")
        reset()
        log_once("test:testing-reset", logging.WARNING, "once")
    assert [r.getMessage() for r in caplog.records].count("once") == 2
    assert _runtime.current().settings.max_cohort_values == 100
    assert not _runtime.current().configured
    assert prodlens.current() is None
    t.provider.shutdown()
