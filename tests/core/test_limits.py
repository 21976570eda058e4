"""Bounds (cardinality, length) and pseudonymisation."""

from __future__ import annotations

import logging

import prodlens
from prodlens.baggage import identity_from_members, merge_header, parse_header

KEY = "0123456789abcdef-test-key"


def test_cardinality_cap_records_other_and_logs_once(traced_with, caplog):
    traced = traced_with(max_cohort_values=3)
    with caplog.at_level(logging.WARNING, logger="prodlens"):
        for i in range(10):
            with prodlens.tag(f"c{i}", region=f"r{i}"), traced.tracer.start_as_current_span(
                f"s{i}"
            ):
                pass
    regions = [traced.by_name()[f"s{i}"]["prodlens.cohort.region"] for i in range(10)]
    assert regions == ["r0", "r1", "r2"] + ["__other__"] * 7
    assert [traced.by_name()[f"s{i}"]["enduser.id"] for i in range(10)] == [
        f"c{i}" for i in range(10)
    ]  # customers are not a cohort: never capped
    messages = [r.getMessage() for r in caplog.records if "PRODLENS_MAX_COHORT_VALUES" in
                r.getMessage()]
    assert len(messages) == 1


def test_long_values_are_truncated(traced_with):
    traced = traced_with(max_value_length=8)
    with prodlens.tag("a" * 1000, plan="p" * 10_000), traced.tracer.start_as_current_span("s"):
        pass
    assert traced.by_name()["s"] == {"enduser.id": "a" * 8, "prodlens.cohort.plan": "p" * 8}


def test_cohorts_per_identity_are_bounded(traced_with):
    traced = traced_with(max_cohorts=2)
    with prodlens.tag("acme", a="1", b="2", c="3"), traced.tracer.start_as_current_span("s"):
        pass
    assert traced.by_name()["s"] == {
        "enduser.id": "acme", "prodlens.cohort.a": "1", "prodlens.cohort.b": "2"
    }


def test_pseudonymised_customer_never_reaches_spans_or_baggage(traced_with):
    traced = traced_with(pseudonymize=True, pseudonym_key=KEY)
    with prodlens.tag("alice@example.com", plan="pro"):
        with traced.tracer.start_as_current_span("s"):
            header = merge_header("other=1", prodlens.current())
    expected = prodlens.pseudonym("alice@example.com")
    assert expected == prodlens.pseudonym("alice@example.com", key=KEY)
    assert len(expected) == 64
    assert traced.by_name()["s"] == {"enduser.pseudo.id": expected, "prodlens.cohort.plan": "pro"}
    for span in traced.spans():
        assert all("alice" not in str(v) for v in span.attributes.values())
    assert "alice" not in header
    members = parse_header(header)
    assert members == {
        "other": "1", "prodlens.pseudo_customer": expected, "prodlens.cohort.plan": "pro"
    }


def test_a_pseudonym_received_downstream_is_not_hashed_twice(traced_with):
    traced_with(pseudonymize=True, pseudonym_key=KEY)
    upstream = prodlens.pseudonym("bob")
    identity = identity_from_members(parse_header(f"prodlens.pseudo_customer={upstream}"))
    assert identity.customer == upstream and identity.pseudonymous
    raw = identity_from_members(parse_header("prodlens.customer=bob"))
    assert raw.customer == upstream and raw.pseudonymous  # raw id from upstream: hashed here


def test_pseudonym_without_key_is_a_config_error(traced):
    import pytest

    with pytest.raises(prodlens.ConfigError, match="PRODLENS_PSEUDONYM_KEY"):
        prodlens.pseudonym("bob")
