"""Fuzz: W3C baggage, in and out. Parsing is bounded and never raises; stripping leaves no
member any reader (prodlens's, OpenTelemetry's propagator) takes for a prodlens member, and its
result decodes as UTF-8 (OpenTelemetry's ASGI getter then never falls back to a codec that
raises); an outgoing header holds exactly the identity's members, within W3C's limits."""

from __future__ import annotations

from fuzz_strategies import ANY_TEXT, HEADER_BYTES, MIXED_TEXT
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import baggage as otel_baggage
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.instrumentation.asgi import asgi_getter

from prodlens import _runtime
from prodlens.baggage import (
    MAX_HEADER_BYTES,
    MAX_MEMBERS,
    is_prodlens_key,
    merge_header,
    parse_header,
    strip_members,
)
from prodlens.config import load_settings
from prodlens.identity import build, normalize_cohorts, normalize_customer

HEADERS = st.one_of(MIXED_TEXT, HEADER_BYTES.map(lambda b: b.decode("latin-1")),
                    st.lists(MIXED_TEXT, max_size=8).map(",".join))


@given(header=HEADERS)
def test_parse_is_bounded(header: str) -> None:
    members = parse_header(header)
    assert len(members) <= MAX_MEMBERS
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in members.items())


@given(header=HEADERS)
def test_stripped_headers_hold_no_prodlens_member_for_any_reader(header: str) -> None:
    stripped = strip_members(header)
    assert stripped.isascii()
    assert not any(is_prodlens_key(k) for k in parse_header(stripped))
    context = W3CBaggagePropagator().extract({"baggage": stripped})
    assert not any(k.lower().startswith("prodlens.") for k in otel_baggage.get_all(context))
    raw = stripped.encode("ascii")
    assert asgi_getter.get({"headers": [(b"baggage", raw)]}, "baggage") in ([stripped], None)


@given(existing=HEADERS, customer=ANY_TEXT,
       cohorts=st.dictionaries(st.sampled_from(["plan", "region", "tier"]), ANY_TEXT))
def test_outgoing_header_holds_exactly_the_identity(existing: str, customer: str,
                                                    cohorts: dict[str, str]) -> None:
    runtime = _runtime.install(load_settings({}))
    settings = runtime.settings
    name, pseudo = normalize_customer(customer, settings)
    identity = build(name, normalize_cohorts(cohorts.items(), settings, runtime.limiter,
                                             where="fuzz"), pseudo, settings)
    header = merge_header(existing, identity)
    assert len(header.encode("utf-8")) <= MAX_HEADER_BYTES
    members = [m for m in header.split(",") if m.strip()]
    assert len(members) <= MAX_MEMBERS
    ours = {k: v for k, v in parse_header(header).items() if is_prodlens_key(k)}
    expected = {}
    if identity.customer is not None:
        expected["prodlens.customer"] = identity.customer
    expected.update({f"prodlens.cohort.{k}": v for k, v in identity.cohorts.items()})
    assert ours == expected
