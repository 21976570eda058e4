"""Property tests: arbitrary values and names never raise out and never exceed the limits."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import prodlens
from prodlens.baggage import identity_from_members, merge_header, parse_header

values = st.one_of(
    st.none(), st.text(), st.binary(), st.integers(), st.floats(), st.booleans(),
    st.text(min_size=200, max_size=5000), st.builds(object),
)
names = st.one_of(st.text(max_size=80), st.from_regex(r"[a-z][a-z0-9_.]{0,20}", fullmatch=True))

MAX_LEN = 32
MAX_VALUES = 5


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# A cohort named "customer" cannot be passed to identify(customer, **cohorts) at all: Python
# binds it to the customer parameter (TypeError at the call site, before prodlens runs).
@given(customer=values,
       cohorts=st.dictionaries(names.filter(lambda name: name != "customer"), values,
                               max_size=8))
def test_identify_never_raises_and_respects_limits(traced_with, customer, cohorts):
    traced = traced_with(max_value_length=MAX_LEN, max_cohort_values=MAX_VALUES, max_cohorts=6)
    with prodlens.tag(), traced.tracer.start_as_current_span("s"):
        identity = prodlens.identify(customer, **cohorts)
    if customer is None:  # identify(None, ...) starts over: only the valid cohorts remain
        assert identity is None or identity.customer is None
    if identity is None:
        return
    header = merge_header(None, identity)
    (span,) = traced.spans()
    assert len(span.attributes) <= 1 + 6
    for key, value in span.attributes.items():
        assert isinstance(value, str)
        assert len(value) <= MAX_LEN
        if key.startswith("prodlens.cohort."):
            assert prodlens._grammar.valid_cohort_name(key[len("prodlens.cohort."):])
    assert len(header.encode()) <= 8192
    identity_from_members(parse_header(header))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=3000))
def test_parsing_any_baggage_text_never_raises(text):
    members = parse_header(text)
    assert len(members) <= 64
    identity_from_members(members)
