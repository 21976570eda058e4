"""Fuzz: the Cookie header parser: never raises, reads at most 16 KiB, finds a cookie that is
plainly there."""

from __future__ import annotations

from fuzz_strategies import MIXED_TEXT, WSGI_TEXT
from hypothesis import given
from hypothesis import strategies as st

from prodlens.integrations._readers import MAX_COOKIE_CHARS, cookie_value
from prodlens.integrations.wsgi import EnvironView

#: RFC 6265 cookie-octets: printable ASCII but for '"', ',', ';' and '\\'.
COOKIE_OCTETS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '",;\\')


@given(header=st.one_of(MIXED_TEXT, WSGI_TEXT), name=MIXED_TEXT)
def test_cookie_value_never_raises(header: str, name: str) -> None:
    value = cookie_value(header, name)
    assert value is None or (isinstance(value, str) and len(value) <= MAX_COOKIE_CHARS)
    found = EnvironView({"HTTP_COOKIE": header}).cookie(name)
    assert found is None or isinstance(found, str)


@given(before=MIXED_TEXT.filter(lambda t: "sid" not in t and len(t) < 1000),
       value=st.text(COOKIE_OCTETS, min_size=1, max_size=40))
def test_a_plain_cookie_is_found_after_any_junk(before: str, value: str) -> None:
    header = f"{before}; sid={value}"
    assert cookie_value(header, "sid") == value
