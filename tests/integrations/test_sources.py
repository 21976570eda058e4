"""Source resolution: the grammar's kinds, order, early vs late, JWT/cookie/query readers."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import pytest

from prodlens import _runtime
from prodlens.baggage import strip_members as strip_prodlens_members
from prodlens.config import Settings, load_settings
from prodlens.integrations._plan import needs_late, uses_baggage
from prodlens.integrations._readers import bearer_claims, claim, cookie_value, query_value
from prodlens.integrations._sources import resolve_early, resolve_late


def jwt(payload: object, header: object = None) -> str:
    def enc(value: object) -> str:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    return f"{enc(header or {'alg': 'none'})}.{enc(payload)}.c2lnbmF0dXJl"


class View:
    def __init__(self, headers: Mapping[str, str] | None = None, *,
                 path: Mapping[str, object] | None = None, user: object = None,
                 query: str = "") -> None:
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.path = dict(path or {})
        self._user = user
        self.query_string = query
        self.calls: list[str] = []

    def header(self, name: str) -> str | None:
        self.calls.append("header:" + name)
        return self.headers.get(name)

    def cookie(self, name: str) -> str | None:
        return cookie_value(self.headers.get("cookie"), name)

    def query(self, name: str) -> str | None:
        return query_value(self.query_string, name)

    def path_param(self, name: str) -> object | None:
        self.calls.append("path:" + name)
        return self.path.get(name)

    def user(self, attr: str) -> object | None:
        self.calls.append("user:" + attr)
        if self._user is None:
            return None
        return getattr(self._user, attr or "pk", None)

    def baggage(self) -> str | None:
        return self.headers.get("baggage")


class User:
    pk = 42
    plan = "gold"


def settings(**env: str) -> Settings:
    result = load_settings({"PRODLENS_METRICS": "false", **env})
    _runtime.install(result)
    return result


def as_dict(identity: Any) -> dict[str, str] | None:
    return None if identity is None else dict(identity.attributes)


def test_header_cookie_query_jwt_each_yield() -> None:
    s = settings(PRODLENS_CUSTOMER_FROM="header:x-customer-id",
                 PRODLENS_COHORT_PLAN_FROM="jwt:plan",
                 PRODLENS_COHORT_REGION_FROM="cookie:region",
                 PRODLENS_COHORT_VERSION_FROM="query:v",
                 PRODLENS_COHORT_ORG_FROM="jwt:org.tier")
    view = View({"X-Customer-Id": "acme",
                 "Authorization": "Bearer " + jwt({"plan": "pro", "org": {"tier": "gold"}}),
                 "Cookie": "a=1; region=eu-west; b=2"}, query="x=1&v=2.3")
    assert as_dict(resolve_early(view, s)) == {
        "enduser.id": "acme", "prodlens.cohort.plan": "pro", "prodlens.cohort.region": "eu-west",
        "prodlens.cohort.version": "2.3", "prodlens.cohort.org": "gold",
    }


def test_first_yielding_source_wins_in_list_order() -> None:
    s = settings(PRODLENS_CUSTOMER_FROM="header:x-a,header:x-b")
    assert as_dict(resolve_early(View({"x-b": "bee"}), s)) == {"enduser.id": "bee"}
    assert as_dict(resolve_early(View({"x-a": "ay", "x-b": "bee"}), s)) == {"enduser.id": "ay"}
    # An empty value does not yield.
    assert as_dict(resolve_early(View({"x-a": "", "x-b": "bee"}), s)) == {"enduser.id": "bee"}


def test_nothing_configured_yields_nothing() -> None:
    s = settings(PRODLENS_CUSTOMER_FROM="header:x-a")
    assert resolve_early(View({}), s) is None


def test_late_sources_are_skipped_early_and_resolved_late() -> None:
    s = settings(PRODLENS_CUSTOMER_FROM="user,header:x-customer-id",
                 PRODLENS_COHORT_TENANT_FROM="path:tenant",
                 PRODLENS_COHORT_PLAN_FROM="user:plan")
    assert needs_late(s)
    early_view = View({"x-customer-id": "from-header"})
    assert as_dict(resolve_early(early_view, s)) == {"enduser.id": "from-header"}
    assert not any(c.startswith(("user", "path")) for c in early_view.calls)
    late_view = View({"x-customer-id": "from-header"}, path={"tenant": "t1"}, user=User())
    assert as_dict(resolve_late(late_view, s)) == {
        "enduser.id": "42", "prodlens.cohort.tenant": "t1", "prodlens.cohort.plan": "gold",
    }


def test_late_keeps_the_early_winner_when_it_comes_first() -> None:
    s = settings(PRODLENS_CUSTOMER_FROM="header:x-customer-id,user")
    view = View({"x-customer-id": "hdr"}, user=User())
    assert as_dict(resolve_early(view, s)) == {"enduser.id": "hdr"}
    assert resolve_late(view, s) is None  # the header (earlier in the list) stands


def test_late_is_not_needed_without_user_or_path() -> None:
    s = settings(PRODLENS_CUSTOMER_FROM="header:x-a")
    assert not needs_late(s)
    view = View({"x-a": "a"}, user=User())
    assert resolve_late(view, s) is None
    assert view.calls == []


def test_default_is_user() -> None:
    s = settings()
    assert resolve_early(View({}), s) is None
    assert as_dict(resolve_late(View({}, user=User()), s)) == {"enduser.id": "42"}


def test_baggage_source_reads_customer_and_cohorts() -> None:
    s = settings(PRODLENS_CUSTOMER_FROM="baggage")
    assert uses_baggage(s)
    view = View({"baggage": "other=1,prodlens.customer=acme,prodlens.cohort.plan=pro"})
    assert as_dict(resolve_early(view, s)) == {"enduser.id": "acme",
                                               "prodlens.cohort.plan": "pro"}


def test_baggage_key_source() -> None:
    s = settings(PRODLENS_CUSTOMER_FROM="baggage:tenant",
                 PRODLENS_COHORT_PLAN_FROM="baggage")
    view = View({"baggage": "tenant=t%209,prodlens.cohort.plan=pro"})
    assert as_dict(resolve_early(view, s)) == {"enduser.id": "t 9",
                                               "prodlens.cohort.plan": "pro"}


def test_baggage_is_ignored_unless_listed() -> None:
    s = settings(PRODLENS_CUSTOMER_FROM="header:x-a")
    assert not uses_baggage(s)
    view = View({"baggage": "prodlens.customer=forged"})
    assert resolve_early(view, s) is None


def test_values_are_bounded() -> None:
    s = settings(PRODLENS_CUSTOMER_FROM="header:x-a", PRODLENS_MAX_VALUE_LENGTH="8")
    assert as_dict(resolve_early(View({"x-a": "x" * 10_000}), s)) == {"enduser.id": "x" * 8}


@pytest.mark.parametrize("authorization", [
    None, "", "Basic abc", "Bearer", "Bearer a.b", "Bearer a.b.c.d", "Bearer a.!!!.c",
    "Bearer a." + base64.urlsafe_b64encode(b"not json").decode() + ".c",
    "Bearer a." + base64.urlsafe_b64encode(b"[1, 2]").decode() + ".c",
    "Bearer a." + base64.urlsafe_b64encode(b'"str"').decode() + ".c",
    "Bearer a." + base64.urlsafe_b64encode(b"\xff\xfe").decode() + ".c",
    "Bearer a." + base64.urlsafe_b64encode(b"[" * 5000).decode() + ".c",
    "Bearer a.\u00e9t\u00e9.c",
    "Bearer " + jwt({"sub": "x" * 9000}),
])
def test_malformed_tokens_yield_none(authorization: str | None) -> None:
    assert bearer_claims(authorization) is None


def test_token_claims_and_dotted_paths() -> None:
    claims = bearer_claims("bearer " + jwt({"sub": "acme", "a": {"b": {"c": 3}},
                                            "https://x.io/plan": "pro", "l": [1]}))
    assert claims is not None
    assert claim(claims, "sub") == "acme"
    assert claim(claims, "a.b.c") == 3
    assert claim(claims, "https://x.io/plan") == "pro"
    assert claim(claims, "a.b") is None  # objects are not values
    assert claim(claims, "l") is None
    assert claim(claims, "a.x.c") is None


def test_jwt_token_never_becomes_a_value() -> None:
    token = jwt({"sub": "acme"})
    s = settings(PRODLENS_CUSTOMER_FROM="jwt:sub", PRODLENS_COHORT_X_FROM="header:authorization")
    identity = resolve_early(View({"authorization": "Bearer " + token}), s)
    assert identity is not None
    assert identity.customer == "acme"
    # Only an explicit header:authorization source would copy the header (user's choice):
    assert all(token not in v or k == "prodlens.cohort.x" for k, v in identity.attributes.items())


def test_cookie_and_query_readers() -> None:
    assert cookie_value('a=1; b="q v"; c', "b") == "q v"
    assert cookie_value("ab=1", "a") is None
    assert cookie_value("x=" + "y" * 100_000 + "; a=1", "a") is None  # past the bound: unread
    assert cookie_value("a=1; " + "x=" + "y" * 100_000, "a") == "1"
    assert query_value("a=1&b=two+words&b=3", "b") == "two words"
    assert query_value("a%20b=1", "a b") == "1"
    assert query_value("", "a") is None


def test_strip_prodlens_members() -> None:
    assert strip_prodlens_members("a=1, prodlens.customer=x,prodlens.cohort.p=2,b=3") == "a=1,b=3"


class Exploding:
    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("boom")


def test_a_failing_view_never_raises() -> None:
    s = settings(PRODLENS_CUSTOMER_FROM="header:x,user")
    assert resolve_early(Exploding(), s) is None  # type: ignore[arg-type]
    assert resolve_late(Exploding(), s) is None  # type: ignore[arg-type]
