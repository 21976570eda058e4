"""Identity scopes: tag(), identify(), current(), and their lifetimes."""

from __future__ import annotations

import pytest

import prodlens

PLAN = "prodlens.cohort.plan"
REGION = "prodlens.cohort.region"


def test_every_span_in_a_tag_scope_is_stamped(traced):
    with prodlens.tag("acme", plan="pro", region="eu-west"):
        with traced.tracer.start_as_current_span("outer"):
            with traced.tracer.start_as_current_span("inner"):
                pass
    with traced.tracer.start_as_current_span("after"):
        pass
    expected = {"enduser.id": "acme", PLAN: "pro", REGION: "eu-west"}
    assert traced.by_name() == {"inner": expected, "outer": expected, "after": {}}


def test_current_reflects_scope_and_is_none_outside(traced):
    assert prodlens.current() is None
    with prodlens.tag("acme", plan="pro") as identity:
        assert identity is not None
        assert identity.customer == "acme"
        assert dict(prodlens.current().cohorts) == {"plan": "pro"}
    assert prodlens.current() is None


def test_identify_merges_and_lasts_as_long_as_the_scope(traced):
    with prodlens.tag(plan="free"):
        prodlens.identify("acme", region="us-east")
        with traced.tracer.start_as_current_span("inside"):
            pass
        prodlens.identify(plan="pro")
        assert dict(prodlens.current().cohorts) == {"plan": "pro", "region": "us-east"}
        assert prodlens.current().customer == "acme"
    assert prodlens.current() is None
    assert traced.by_name()["inside"] == {
        "enduser.id": "acme", PLAN: "free", "prodlens.cohort.region": "us-east"
    }


def test_identify_outside_any_scope_changes_the_current_context(traced):
    import contextvars

    def body() -> object:
        prodlens.identify("solo")
        return prodlens.current().customer

    ctx = contextvars.copy_context()
    assert ctx.run(body) == "solo"
    assert ctx.run(prodlens.current).customer == "solo"
    assert prodlens.current() is None  # the outer context is untouched


def test_nested_tag_merges_over_outer(traced):
    with prodlens.tag("acme", plan="pro"):
        with prodlens.tag(region="eu-west"), traced.tracer.start_as_current_span("s"):
            pass
        assert dict(prodlens.current().cohorts) == {"plan": "pro"}
    assert traced.by_name()["s"] == {"enduser.id": "acme", PLAN: "pro", REGION: "eu-west"}


def test_bad_cohort_name_in_tag_raises_when_applied():
    with pytest.raises(ValueError, match="invalid cohort name 'Plan'"):
        prodlens.tag("acme", Plan="pro")
    with pytest.raises(ValueError, match="invalid cohort name"):
        prodlens.tag(**{"bad name": "x"})


def test_bad_cohort_name_in_identify_is_dropped_with_one_warning(traced, caplog):
    with prodlens.tag("acme"):
        for _ in range(3):
            prodlens.identify(**{"Bad-Name": "x", "plan": "pro"})
        assert dict(prodlens.current().cohorts) == {"plan": "pro"}
    warnings = [r for r in caplog.records if "Bad-Name" in r.getMessage()]
    assert len(warnings) == 1


def test_odd_values_never_raise(traced):
    class Hostile:
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    with prodlens.tag():
        prodlens.identify(b"\xffbytes-id", plan=Hostile(), region=None, tier=3, beta=True)
        with traced.tracer.start_as_current_span("s"):
            pass
    assert traced.by_name()["s"] == {
        "enduser.id": "\ufffdbytes-id", "prodlens.cohort.tier": "3", "prodlens.cohort.beta": "true"
    }
