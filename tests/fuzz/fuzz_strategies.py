"""Shared strategies for the fuzz targets (one test module per parser, test_fuzz_*.py).

Every target runs at hypothesis's default example count (100) in the normal suite, so CI runs
them; for a long run (10,000 examples per target; lift pytest-timeout's 300 s per test)::

    pytest tests/fuzz --hypothesis-profile=long --timeout=0
    pytest tests/fuzz --hypothesis-profile=long --timeout=0 --hypothesis-seed=7  # reproducible

The profiles are registered in ``tests/conftest.py``. Import this module by name (``from
fuzz_strategies import ...``): pytest puts this directory on ``sys.path``.
"""

from __future__ import annotations

from hypothesis import strategies as st

#: Bytes a hostile client can put in a header value (HTTP forbids CR, LF and NUL there).
HEADER_BYTES = st.binary(max_size=400).map(
    lambda raw: raw.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b""))
#: What a WSGI server hands over: those bytes as latin-1 text (PEP 3333).
WSGI_TEXT = HEADER_BYTES.map(lambda raw: raw.decode("latin-1"))
#: Any code point, surrogates included (text() leaves them out).
ANY_TEXT = st.lists(st.one_of(st.characters(exclude_categories=()),
                              st.sampled_from("\ud800\udfff\ud83d\ude00")),
                    max_size=60).map("".join)
#: Fragments that steer inputs towards what the parsers look for.
TOKENS = st.sampled_from([
    "prodlens.", "prodlens.customer", "prodlens.cohort.plan", "%70rodlens.customer",
    "PRODLENS.customer", "=", ",", ";", "%", "%ZZ", "%C3%A9", "%ff", "\\", "\\u12", " ", "\t",
    "\"", "+", "&", "sid", "plan", "Bearer ", ".", "\u00e9", "\xff", "\ud800", "eyJ"])
MIXED_TEXT = st.lists(st.one_of(TOKENS, ANY_TEXT), max_size=12).map("".join)
