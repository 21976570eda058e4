"""Fuzz: Bearer tokens: never raises, yields a dict or None; claims are read as scalars only,
whatever the payload's shape or depth."""

from __future__ import annotations

import base64
import json

from fuzz_strategies import MIXED_TEXT
from hypothesis import given
from hypothesis import strategies as st

from prodlens.integrations._readers import bearer_claims, claim

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | MIXED_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(MIXED_TEXT, inner, max_size=4),
    max_leaves=30)


def segment(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@given(token=st.one_of(MIXED_TEXT, st.lists(MIXED_TEXT, max_size=5).map(".".join)))
def test_any_token_text(token: str) -> None:
    claims = bearer_claims("Bearer " + token)
    assert claims is None or isinstance(claims, dict)


@given(payload=st.one_of(JSON.map(lambda v: json.dumps(v).encode()), st.binary(max_size=300)),
       path=st.one_of(MIXED_TEXT, st.sampled_from(["sub", "org.plan", "a.b.c.d"])))
def test_any_payload(payload: bytes, path: str) -> None:
    claims = bearer_claims(f"Bearer e30.{segment(payload)}.sig")
    assert claims is None or isinstance(claims, dict)
    if claims is not None:
        value = claim(claims, path)
        assert value is None or isinstance(value, (str, int, float, bool))
