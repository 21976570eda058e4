"""Fuzz: the query-string parser: never raises, reads at most 16 KiB, decodes percent-escapes
into valid text."""

from __future__ import annotations

from urllib.parse import quote_plus

from fuzz_strategies import ANY_TEXT, MIXED_TEXT, WSGI_TEXT
from hypothesis import given
from hypothesis import strategies as st

from prodlens.integrations._readers import query_value
from prodlens.integrations.wsgi import EnvironView


@given(query=st.one_of(MIXED_TEXT, WSGI_TEXT), name=MIXED_TEXT)
def test_query_value_never_raises(query: str, name: str) -> None:
    value = query_value(query, name)
    assert value is None or isinstance(value, str)
    found = EnvironView({"QUERY_STRING": query}).query(name)
    assert found is None or isinstance(found, str)


@given(junk=MIXED_TEXT.filter(lambda t: "plan" not in t), value=ANY_TEXT)
def test_an_encoded_parameter_round_trips(junk: str, value: str) -> None:
    clean = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    query = f"{quote_plus(junk, errors='surrogatepass')}=1&plan={quote_plus(clean)}"
    assert query_value(query, "plan") == clean
