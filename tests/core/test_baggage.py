"""W3C baggage encoding of identity: limits, merging, hostile input."""

from __future__ import annotations

from opentelemetry import baggage as otel_baggage
from opentelemetry.baggage.propagation import W3CBaggagePropagator

import prodlens
from prodlens.baggage import (
    MAX_HEADER_BYTES,
    MAX_MEMBERS,
    identity_from_members,
    merge_header,
    parse_header,
    strip_identity,
    with_identity,
)


def test_round_trip_with_odd_characters(traced):
    with prodlens.tag("acme, inc;=%", plan="pro plan") as identity:
        header = merge_header(None, identity)
    assert header == (
        "prodlens.customer=acme%2C%20inc%3B%3D%25,prodlens.cohort.plan=pro%20plan"
    )
    back = identity_from_members(parse_header(header))
    assert back.customer == "acme, inc;=%" and dict(back.cohorts) == {"plan": "pro plan"}
    # OpenTelemetry's own propagator reads the same members.
    context = W3CBaggagePropagator().extract({"baggage": header})
    assert otel_baggage.get_baggage("prodlens.customer", context) == "acme, inc;=%"


def test_merge_keeps_existing_members_and_replaces_ours(traced):
    with prodlens.tag("acme") as identity:
        header = merge_header("k=v;prop=1,prodlens.customer=stale,x=y", identity)
    assert header == "k=v;prop=1,x=y,prodlens.customer=acme"


def test_never_more_than_64_members_or_8192_bytes_and_never_a_partial_member(traced_with):
    traced_with(max_value_length=1000, max_cohorts=100)
    cohorts = {f"c{i}": "v" * 900 for i in range(20)}
    with prodlens.tag("acme", **cohorts) as identity:
        existing = ",".join(f"k{i}=v" for i in range(60))
        header = merge_header(existing, identity)
    members = header.split(",")
    assert len(members) <= MAX_MEMBERS
    assert len(header.encode()) <= MAX_HEADER_BYTES
    parsed = parse_header(header)
    for key, value in parsed.items():
        if key.startswith("prodlens.cohort."):
            assert value == "v" * 900  # whole members only


def test_hostile_inbound_headers_are_bounded_and_never_raise(traced):
    thousands = ",".join(f"k{i}=v{i}" for i in range(5000))
    assert len(parse_header(thousands)) == MAX_MEMBERS
    assert parse_header("prodlens.customer=%E0%A4%A,=,;;,novalue,\x00=\xff") == {}
    assert parse_header(["a=1", "b=2"]) == {"a": "1", "b": "2"}
    assert identity_from_members(parse_header("x" * 1_000_000)) is None


def test_baggage_key_source_reads_one_member(traced):
    identity = identity_from_members({"tenant": "t-42"}, key="tenant")
    assert identity.customer == "t-42"
    assert identity_from_members({}, key="tenant") is None


def test_strip_and_with_identity_on_the_otel_context(traced):
    context = otel_baggage.set_baggage("prodlens.customer", "acme")
    context = otel_baggage.set_baggage("other", "keep", context)
    stripped = strip_identity(context)
    assert otel_baggage.get_all(stripped) == {"other": "keep"}
    with prodlens.tag("globex", plan="pro") as identity:
        carried = with_identity(identity, stripped)
    assert dict(otel_baggage.get_all(carried)) == {
        "other": "keep", "prodlens.customer": "globex", "prodlens.cohort.plan": "pro"
    }
