"""Bounded readers of one value of a request: bearer-token claims, a cookie, a query parameter.

What an integration exposes of a request is a :class:`RequestView`; the resolver
(:mod:`prodlens.integrations._sources`) reads sources through it and through these readers.
Every reader works on bounded input (tokens over 8 KiB are not decoded, cookie headers and query
strings are read on their first 16 KiB), returns None on anything malformed and never raises.

``jwt:CLAIM`` reads the payload of an ``Authorization: Bearer`` token WITHOUT verifying its
signature: prodlens only labels telemetry, the application authenticates. The token itself is
never stored, logged or put on a span: decoded claims are cached by a digest of the payload.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from typing import Final, Protocol
from urllib.parse import unquote_plus

__all__ = [
    "RequestView",
    "bearer_claims",
    "claim",
    "cookie_value",
    "environ_key",
    "query_value",
]

#: Bearer tokens longer than this are not decoded at all.
MAX_TOKEN_BYTES: Final = 8 * 1024
#: Only this many characters of a Cookie header / query string are scanned (bytes, where the
#: framework gives bytes: the cut comes before decoding).
MAX_COOKIE_CHARS: Final = 16 * 1024
MAX_QUERY_CHARS: Final = 16 * 1024
#: Dotted claim paths deeper than this are not followed.
MAX_CLAIM_DEPTH: Final = 16
#: Decoded token payloads remembered (by digest); cleared past this size.
MAX_CACHED_CLAIMS: Final = 512
_UNCACHEABLE: Final = object()
_claims_cache: dict[bytes, Mapping[str, object] | None] = {}
_SPECIAL_HEADERS: Final = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}


class RequestView(Protocol):
    """What an integration exposes of one request to the source resolver.

    Every method returns None when the value is absent or unavailable, and must not raise for
    ordinary absence (the resolver guards against exceptions anyway).
    """

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (given lower-case), or None."""

    def cookie(self, name: str) -> str | None:
        """The value of cookie ``name``, or None (use :func:`cookie_value` for bounded parsing)."""

    def query(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or None."""

    def path_param(self, name: str) -> object | None:
        """The route parameter ``name`` (Flask view_args, Django URL kwargs, path_params)."""

    def user(self, attr: str) -> object | None:
        """The authenticated user's ``attr`` (the framework's default when ``attr`` is empty),
        or None when no user is authenticated."""

    def baggage(self) -> str | None:
        """The raw inbound W3C ``baggage`` header, or None."""


def _b64url_decode(segment: str) -> bytes | None:
    try:
        raw = segment.encode("ascii")
        return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return None


def bearer_claims(authorization: str | None) -> Mapping[str, object] | None:
    """The (unverified) payload of an ``Authorization: Bearer <jwt>`` header, or None.

    None for: no header, another scheme, a token over 8 KiB, not three dot-separated parts, bad
    base64url, non-JSON, or a JSON value that is not an object. Never raises.

    Example::

        >>> import base64, json
        >>> body = base64.urlsafe_b64encode(json.dumps({"sub": "acme"}).encode()).decode()
        >>> bearer_claims("Bearer x." + body.rstrip("=") + ".sig")
        {'sub': 'acme'}
    """
    if not authorization or len(authorization) > MAX_TOKEN_BYTES + 16:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    if not token or len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
        return None
    segment = token.split(".")[1]
    # Claims are cached by a digest of the payload segment (a client sends the same token on
    # every request); the token itself is never kept.
    digest = hashlib.blake2b(segment.encode("utf-8", "replace"), digest_size=16).digest()
    cached = _claims_cache.get(digest, _UNCACHEABLE)
    if cached is not _UNCACHEABLE:
        return cached  # type: ignore[return-value]
    payload = _b64url_decode(segment)
    result: Mapping[str, object] | None = None
    if payload is not None:
        try:
            claims = json.loads(payload)
        except (ValueError, RecursionError):
            claims = None
        result = claims if isinstance(claims, dict) else None
    if len(_claims_cache) >= MAX_CACHED_CLAIMS:
        _claims_cache.clear()
    _claims_cache[digest] = result
    return result


def claim(claims: Mapping[str, object], path: str) -> object | None:
    """A claim by name, or by dotted path into nested objects (``org.plan``); scalars only."""
    value: object | None = claims.get(path)
    if value is None and "." in path:
        node: object = claims
        for depth, part in enumerate(path.split(".")):
            if depth >= MAX_CLAIM_DEPTH or not isinstance(node, dict):
                return None
            node = node.get(part)
        value = node
    if isinstance(value, (str, int, float, bool)):
        return value
    return None


def cookie_value(header: str | None, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header; only the first 16 KiB are read."""
    if not header:
        return None
    for part in header[:MAX_COOKIE_CHARS].split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip() == name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value
    return None


def query_value(query_string: str | None, name: str) -> str | None:
    """The first value of parameter ``name`` in a query string; only 16 KiB are read."""
    if not query_string:
        return None
    for part in query_string[:MAX_QUERY_CHARS].split("&"):
        key, _, value = part.partition("=")
        if key == name or (("%" in key or "+" in key) and unquote_plus(key) == name):
            return unquote_plus(value)
    return None


def environ_key(name: str) -> str:
    """The WSGI environ key of header ``name`` (lower-case), e.g. ``HTTP_X_CUSTOMER_ID``."""
    return _SPECIAL_HEADERS.get(name) or "HTTP_" + name.upper().replace("-", "_")
