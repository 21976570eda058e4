"""Fuzz: header values as WSGI and ASGI servers hand them over, through the request views and
early resolution: never raises, and every value that reaches an identity is bounded, valid
UTF-8 text."""

from __future__ import annotations

from fuzz_strategies import HEADER_BYTES
from hypothesis import given
from hypothesis import strategies as st

from prodlens import _runtime
from prodlens.config import load_settings
from prodlens.integrations._sources import resolve_early
from prodlens.integrations.asgi import ASGIScopeView
from prodlens.integrations.wsgi import EnvironView

SETTINGS = {"PRODLENS_CUSTOMER_FROM": "header:x-customer-id,jwt:sub,cookie:sid,baggage",
            "PRODLENS_COHORT_PLAN_FROM": "header:x-plan,query:plan,baggage",
            "PRODLENS_MAX_VALUE_LENGTH": "40"}
NAMES = ["x-customer-id", "x-plan", "authorization", "cookie", "baggage"]


def check_identity(identity: object) -> None:
    if identity is None:
        return
    for value in identity.attributes.values():  # type: ignore[attr-defined]
        assert isinstance(value, str) and 0 < len(value) <= 64
        value.encode("utf-8")  # valid UTF-8: no surrogate


@given(values=st.lists(HEADER_BYTES, min_size=len(NAMES), max_size=len(NAMES)),
       query=HEADER_BYTES)
def test_wsgi_and_asgi_views_never_raise(values: list[bytes], query: bytes) -> None:
    settings = load_settings(SETTINGS)
    _runtime.install(settings)
    environ = {"HTTP_" + n.upper().replace("-", "_"): v.decode("latin-1")
               for n, v in zip(NAMES, values, strict=True)}
    environ["QUERY_STRING"] = query.decode("latin-1")
    scope = {"type": "http", "headers": [(n.encode(), v) for n, v in zip(NAMES, values,
                                                                            strict=True)],
             "query_string": query}
    for view in (EnvironView(environ), ASGIScopeView(scope)):
        for name in NAMES:
            text = view.header(name)
            assert text is None or isinstance(text, str)
        check_identity(resolve_early(view, settings))
