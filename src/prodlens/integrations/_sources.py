"""Request sources: reading the customer and cohorts from a request, bounded and never raising.

Every framework integration describes its request through a :class:`RequestView` and calls
:func:`resolve_early` as the request arrives (before the framework's OpenTelemetry server span
opens, so a sampler sees the identity at root start), then :func:`resolve_late` once routing and
authentication ran (``path:PARAM`` and ``user``/``user:ATTR``), applying that result with
``prodlens._scope.apply`` so the already open server span is tagged too.

Sources are configured per customer (``PRODLENS_CUSTOMER_FROM``) and per cohort
(``PRODLENS_COHORT_<NAME>_FROM``); in each ordered list the first source that yields wins::

    export PRODLENS_CUSTOMER_FROM=jwt:sub,header:x-customer-id
    export PRODLENS_COHORT_PLAN_FROM=jwt:plan,header:x-plan
    export PRODLENS_COHORT_TENANT_FROM=path:tenant

``jwt:CLAIM`` reads the payload of an ``Authorization: Bearer`` token WITHOUT verifying its
signature: prodlens only labels telemetry, the application authenticates. The token itself is
never stored, logged or put on a span. Every reader here works on bounded input (tokens over
8 KiB, cookie headers past 16 KiB and query strings past 16 KiB are not read in full) and
returns None on anything malformed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol, TypeVar

from prodlens import _runtime, attributes
from prodlens._grammar import Source
from prodlens._runtime import CohortLimiter
from prodlens.baggage import identity_from_members, parse_header, strip_members
from prodlens.config import Settings
from prodlens.identity import Identity, build, normalize_cohorts, normalize_customer, to_text

__all__ = [
    "EARLY_KINDS",
    "LATE_KINDS",
    "HeaderPlan",
    "RequestView",
    "SourcePlan",
    "bearer_claims",
    "claim",
    "cookie_value",
    "environ_key",
    "header_plan",
    "late_sources_configured",
    "needs_late",
    "query_value",
    "resolve_early",
    "resolve_late",
    "source_plan",
    "strip_prodlens_members",
    "uses_baggage",
]

#: Sources readable from the request as it arrives.
EARLY_KINDS: Final = frozenset({"header", "cookie", "query", "jwt", "baggage"})
#: Sources known only once the framework has routed / authenticated the request.
LATE_KINDS: Final = frozenset({"user", "path"})

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
_R = TypeVar("_R")
_claims_cache: dict[bytes, Mapping[str, object] | None] = {}


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


# --------------------------------------------------------------------------- bounded readers


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
    from urllib.parse import unquote_plus

    for part in query_string[:MAX_QUERY_CHARS].split("&"):
        key, _, value = part.partition("=")
        if key == name or (("%" in key or "+" in key) and unquote_plus(key) == name):
            return unquote_plus(value)
    return None


def strip_prodlens_members(header: str) -> str:
    """A ``baggage`` header without prodlens members (:func:`prodlens.baggage.strip_members`)."""
    return strip_members(header)


# --------------------------------------------------------------------------- resolution


#: Identities cached per settings, by the texts they were built from; cleared past this size.
MAX_CACHED_IDENTITIES: Final = 1024
#: Early identities are cached by the raw header values they came from only while those
#: values total at most this many characters (the cache then holds at most ~4 MiB of keys).
MAX_RAW_KEY_CHARS: Final = 4096
#: Early source kinds that read nothing but request headers (jwt: ``authorization``).
_HEADER_KINDS: Final = frozenset({"header", "jwt", "baggage"})
_SPECIAL_HEADERS: Final = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}


def environ_key(name: str) -> str:
    """The WSGI environ key of header ``name`` (lower-case), e.g. ``HTTP_X_CUSTOMER_ID``."""
    return _SPECIAL_HEADERS.get(name) or "HTTP_" + name.upper().replace("-", "_")


class HeaderPlan:
    """Early resolution when every early source reads only headers (header, jwt, baggage).

    The early identity is then a function of a few raw header values, so it is cached by the
    tuple of those values as the framework holds them (WSGI environ strings, ASGI bytes): a
    request of a known customer costs one tuple and one dict look-up. The ``authorization``
    header is keyed by a digest instead: a bearer token is a credential, and is never kept.
    Built once per Settings.
    """

    __slots__ = ("asgi_baggage", "asgi_names", "cache", "environ_keys", "names", "secret",
                 "settings")

    def __init__(self, settings: Settings, names: tuple[str, ...]) -> None:
        self.settings = settings
        #: Lower-case header names, in key order.
        self.names = names
        #: The same headers as WSGI environ keys, in key order.
        self.environ_keys = tuple(environ_key(name) for name in names)
        #: ASGI header name (lower-case bytes) -> position in the key.
        self.asgi_names = {name.encode("latin-1"): i for i, name in enumerate(names)}
        #: Position of ``baggage`` in the key (its repeated values are joined), or -1.
        self.asgi_baggage = self.asgi_names.get(b"baggage", -1)
        #: Position of ``authorization`` in the key (keyed by its digest), or -1.
        self.secret = names.index("authorization") if "authorization" in names else -1
        #: Header values (the token's digest) -> identity; only :meth:`resolve` uses it.
        self.cache: dict[tuple[object, ...], Identity | None] = {}

    def resolve(self, raw: tuple[object, ...], view: Callable[[_R], RequestView],
                request: _R) -> Identity | None:
        """The early identity of a request whose headers ``names`` have the values ``raw``
        (None when absent); ``view(request)`` is built and read only when ``raw`` was not seen
        before. Never raises."""
        key = raw
        size = 0
        for value in raw:
            if value.__class__ is str or value.__class__ is bytes:
                size += len(value)
            elif value is not None:  # an unusual value: resolved, never kept as a key
                return resolve_early(view(request), self.settings)
        secret = self.secret
        if secret >= 0 and raw[secret] is not None:
            key = (*raw[:secret], _digest(raw[secret]), *raw[secret + 1:])
        cache = self.cache
        hit = cache.get(key, _UNCACHEABLE)
        if hit is not _UNCACHEABLE:
            return hit  # type: ignore[return-value]
        identity = resolve_early(view(request), self.settings)
        if size <= MAX_RAW_KEY_CHARS:
            if len(cache) >= MAX_CACHED_IDENTITIES:
                cache.clear()
            cache[key] = identity
        return identity

    def __len__(self) -> int:
        return len(self.cache)


@dataclass(frozen=True, slots=True)
class SourcePlan:
    """What a Settings object asks of a request, computed once per Settings."""

    customer: tuple[Source, ...]
    cohorts: tuple[tuple[str, tuple[Source, ...]], ...]
    late_customer: bool
    late_cohorts: tuple[tuple[str, tuple[Source, ...]], ...]
    late: bool
    baggage: bool
    #: Some source reads the authenticated user (``user`` / ``user:ATTR``).
    user: bool
    #: Set when every early source reads only headers (see :class:`HeaderPlan`).
    headers: HeaderPlan | None
    #: Built identities by (late?, customer text, cohort texts...): requests of a customer
    #: repeat, and normalising, bounding and building an identity costs more than reading it.
    identities: dict[tuple[object, ...], Identity | None] = field(
        default_factory=dict, compare=False
    )


_plans: dict[int, tuple[Settings, SourcePlan]] = {}
#: The plan of the settings asked for last: one identity check on the per-request path.
_last: tuple[Settings | None, SourcePlan | None] = (None, None)


def _header_plan(settings: Settings, every: list[Source]) -> HeaderPlan | None:
    names: list[str] = []
    for source in every:
        kind = source.kind
        if kind in LATE_KINDS:
            continue  # not read by early resolution
        if kind not in _HEADER_KINDS:
            return None  # cookie, query: keyed on values that vary per request; no cache
        name = (source.name if kind == "header" else
                "authorization" if kind == "jwt" else "baggage")
        if name not in names:
            names.append(name)
    return HeaderPlan(settings, tuple(names))


def _plan(settings: Settings) -> SourcePlan:
    global _last
    last_settings, last_plan = _last
    if last_settings is settings and last_plan is not None:
        return last_plan
    cached = _plans.get(id(settings))
    if cached is not None and cached[0] is settings:
        _last = cached
        return cached[1]
    cohorts = tuple(settings.cohort_sources.items())
    every = [*settings.customer_from, *(s for _, sources in cohorts for s in sources)]
    late_customer = any(s.kind in LATE_KINDS for s in settings.customer_from)
    late_cohorts = tuple((n, ss) for n, ss in cohorts if any(s.kind in LATE_KINDS for s in ss))
    plan = SourcePlan(
        customer=settings.customer_from,
        cohorts=cohorts,
        late_customer=late_customer,
        late_cohorts=late_cohorts,
        late=late_customer or bool(late_cohorts),
        baggage=any(s.kind == "baggage" for s in every),
        user=any(s.kind == "user" for s in every),
        headers=_header_plan(settings, every),
    )
    if len(_plans) > 8:
        _plans.clear()
    _plans[id(settings)] = _last = (settings, plan)
    return plan


def source_plan(settings: Settings) -> SourcePlan:
    """What ``settings`` asks of each request (late sources? baggage? header-only early
    sources?), computed once per Settings; the per-request check is one identity test."""
    last_settings, last_plan = _last
    if last_settings is settings and last_plan is not None:
        return last_plan
    return _plan(settings)


def needs_late(settings: Settings) -> bool:
    """True if any configured source is ``user`` or ``path`` (resolve_late has work to do)."""
    return _plan(settings).late


def late_sources_configured() -> bool:
    """True if the settings in force have a ``user`` or ``path`` source (for conditional
    patches: the integrations' late hooks are installed only then)."""
    return needs_late(_runtime.current().settings)


def uses_baggage(settings: Settings) -> bool:
    """True if inbound baggage is a configured source (so it is read, and then stripped)."""
    return _plan(settings).baggage


def header_plan(settings: Settings) -> HeaderPlan | None:
    """The raw-header-keyed early resolver for ``settings``, or None when an early source
    reads a cookie or the query string (then call :func:`resolve_early`)."""
    return _plan(settings).headers


class _Reader:
    """Reads sources from one view, decoding the JWT and baggage at most once."""

    __slots__ = ("_claims", "_members", "baggage_header", "view")

    def __init__(self, view: RequestView) -> None:
        self.view = view
        self._claims: Mapping[str, object] | bool | None = False
        self._members: Mapping[str, str] | None = None
        self.baggage_header: str | None = None

    def claims(self) -> Mapping[str, object] | None:
        if self._claims is False:
            self._claims = bearer_claims(self.view.header("authorization"))
        return self._claims if not isinstance(self._claims, bool) else None

    def members(self) -> Mapping[str, str]:
        if self._members is None:
            self.baggage_header = self.view.baggage()
            self._members = parse_header(self.baggage_header)
        return self._members

    def raw(self, source: Source, cohort: str | None) -> object | None:
        """The raw value of one source (the customer's when ``cohort`` is None)."""
        kind, name = source.kind, source.name
        if kind == "header":
            return self.view.header(name)
        if kind == "jwt":
            claims = self.claims()
            return None if claims is None else claim(claims, name)
        if kind == "cookie":
            return self.view.cookie(name)
        if kind == "query":
            return self.view.query(name)
        if kind == "path":
            return self.view.path_param(name)
        if kind == "user":
            return self.view.user(name)
        if kind == "baggage":
            key = name or (attributes.BAGGAGE_COHORT_PREFIX + cohort if cohort else "")
            return self.members().get(key) if key else None
        return None


_CUSTOMER_KEYS: Final = (attributes.BAGGAGE_CUSTOMER_KEY, attributes.BAGGAGE_PSEUDO_CUSTOMER_KEY)


def _first(
    reader: _Reader, sources: tuple[Source, ...], cohort: str | None, late: bool, limit: int
) -> tuple[object | None, str | None, Source | None]:
    """The first yielding source of a list: (raw value, bounded text, source), or Nones.

    Early: late kinds are skipped. Late: every kind is read, and the winner reported, so the
    caller can ignore a winner the early pass already applied. The whole prodlens identity in
    baggage (``baggage`` in the customer list) yields its members, keyed by the header text.
    """
    for source in sources:
        kind = source.kind
        if kind == "header":  # the common case, inlined: this runs for every request
            header = reader.view.header(source.name)
            if header:
                return header, header[:limit], source
            continue
        if not late and kind in LATE_KINDS:
            continue
        if cohort is None and kind == "baggage" and not source.name:
            members = reader.members()
            if any(members.get(key) for key in _CUSTOMER_KEYS):
                header = reader.baggage_header or ""
                # Keyed apart from any text, so no header value can alias a baggage identity.
                return members, None if len(header) > 1024 else header, source
            continue
        value = reader.raw(source, cohort)
        text = to_text(value, limit)
        if text is not None:
            return value, text, source
    return None, None, None


def _digest(value: object) -> bytes:
    """A 16-byte digest of a header value (str or bytes), to key caches without keeping it."""
    data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    assert isinstance(data, bytes)
    return hashlib.blake2b(data, digest_size=16).digest()


def _build(
    customer: tuple[object | None, str | None, Source | None],
    cohorts: list[tuple[str, object, str]],
    settings: Settings,
    limiter: CohortLimiter,
) -> Identity | None:
    value, _, source = customer
    base: Identity | None = None
    name: str | None = None
    pseudo = False
    if source is not None:
        if source.kind == "baggage" and not source.name and isinstance(value, Mapping):
            base = identity_from_members(value, settings=settings, limiter=limiter)
        else:
            name, pseudo = normalize_customer(value, settings)
    normalized = (
        normalize_cohorts(((n, v) for n, v, _ in cohorts), settings, limiter,
                          where="request sources")
        if cohorts else {}
    )
    if base is not None:
        merged = dict(base.cohorts)
        merged.update(normalized)
        return build(base.customer, merged, base.pseudonymous, settings)
    if name is None and not normalized:
        return None
    return build(name, normalized, pseudo, settings)


def _resolve(view: RequestView, settings: Settings, late: bool) -> Identity | None:
    plan = _plan(settings)
    reader = _Reader(view)
    limit = settings.max_value_length

    customer: tuple[object | None, str | None, Source | None] = (None, None, None)
    whole_baggage = False
    # The cache key; a text as long as the limit may have been cut, so such identities are
    # built without the cache (a pseudonym hashes the whole id).
    key: list[object] = [late]
    cacheable = True
    if not late or plan.late_customer:
        found = _first(reader, plan.customer, None, late, limit)
        source = found[2]
        if source is not None and not (late and source.kind in EARLY_KINDS):
            customer = found
            text = found[1]
            whole_baggage = source.kind == "baggage" and not source.name
            if text is None or (not whole_baggage and len(text) >= limit):
                cacheable = False
            key.append(whole_baggage)
            key.append(text)
    cohorts: list[tuple[str, object, str]] = []
    for name, sources in plan.late_cohorts if late else plan.cohorts:
        value, text, source = _first(reader, sources, name, late, limit)
        if source is not None and text is not None and not (late and source.kind in EARLY_KINDS):
            cohorts.append((name, value, text))
            key.append(name)
            key.append(text)
            if len(text) >= limit:
                cacheable = False
    if customer[2] is None and not cohorts:
        return None
    limiter = _runtime.current().limiter  # the process's bound on cohort values
    if not cacheable:
        return _build(customer, cohorts, settings, limiter)
    cache = plan.identities
    frozen = tuple(key)
    hit = cache.get(frozen, _UNCACHEABLE)
    if hit is not _UNCACHEABLE:
        return hit  # type: ignore[return-value]
    identity = _build(customer, cohorts, settings, limiter)
    if len(cache) >= MAX_CACHED_IDENTITIES:
        cache.clear()
    cache[frozen] = identity
    return identity


def resolve_early(view: RequestView, settings: Settings) -> Identity | None:
    """The identity from sources readable as the request arrives (header, cookie, query, jwt,
    baggage), or None. Call it before the framework's server span opens.

    Never raises: an internal failure is logged once and yields None.
    """
    try:
        return _resolve(view, settings, late=False)
    except Exception as error:
        from prodlens._safety import internal_error

        internal_error("resolving request sources", error)
        return None


def resolve_late(view: RequestView, settings: Settings) -> Identity | None:
    """The identity that ``user``/``path`` sources add once the framework knows them, or None.

    Each list containing a late source is evaluated again in order with everything available;
    when its first yielding source is an early one, the early result stands and nothing is
    returned for it. Apply the result with ``prodlens.identity.apply`` (it merges).
    Never raises.
    """
    try:
        if not needs_late(settings):
            return None
        return _resolve(view, settings, late=True)
    except Exception as error:
        from prodlens._safety import internal_error

        internal_error("resolving late request sources", error)
        return None
