"""What a Settings object asks of each request, computed once per Settings, and its caches.

A :class:`SourcePlan` says which sources are early (readable as the request arrives) or late
(``user``, ``path``: once routed and authenticated), whether inbound baggage is read, and, when
every early source reads only headers, a :class:`HeaderPlan`: the early identity is then a
function of a few raw header values and is cached by them. The per-request check of the plan is
one identity test on the Settings object.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final

from prodlens import _runtime
from prodlens._grammar import Source
from prodlens.config import Settings
from prodlens.identity import Identity
from prodlens.integrations._readers import environ_key

__all__ = [
    "EARLY_KINDS",
    "LATE_KINDS",
    "HeaderPlan",
    "SourcePlan",
    "header_plan",
    "late_sources_configured",
    "needs_late",
    "source_plan",
    "uses_baggage",
]

#: Sources readable from the request as it arrives.
EARLY_KINDS: Final = frozenset({"header", "cookie", "query", "jwt", "baggage"})
#: Sources known only once the framework has routed / authenticated the request.
LATE_KINDS: Final = frozenset({"user", "path"})
#: Identities cached per settings, by the texts they were built from; cleared past this size.
MAX_CACHED_IDENTITIES: Final = 1024
#: Early identities are cached by the raw header values they came from only while those
#: values total at most this many characters (the cache then holds at most ~4 MiB of keys).
MAX_RAW_KEY_CHARS: Final = 4096
#: Early source kinds that read nothing but request headers (jwt: ``authorization``).
_HEADER_KINDS: Final = frozenset({"header", "jwt", "baggage"})


class HeaderPlan:
    """Early resolution when every early source reads only headers (header, jwt, baggage).

    The early identity is then a function of a few raw header values, so it is cached by the
    tuple of those values as the framework holds them (WSGI environ strings, ASGI bytes): a
    request of a known customer costs one tuple and one dict look-up. The ``authorization``
    header is keyed by a digest instead: a bearer token is a credential, and is never kept.
    Built once per Settings; :func:`prodlens.integrations._sources.resolve_headers` uses it.
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
        #: Header values (the token's digest) -> identity.
        self.cache: dict[tuple[object, ...], Identity | None] = {}

    def key(self, raw: tuple[object, ...]) -> tuple[object, ...] | None:
        """The cache key of the header values ``raw`` (None where absent): the values, the
        bearer token replaced by its digest. None when they cannot key the cache: a value that
        is neither str nor bytes, or more than MAX_RAW_KEY_CHARS in all."""
        size = 0
        for value in raw:
            if value.__class__ is str or value.__class__ is bytes:
                size += len(value)
            elif value is not None:
                return None
        if size > MAX_RAW_KEY_CHARS:
            return None
        secret = self.secret
        if secret >= 0 and raw[secret] is not None:
            return (*raw[:secret], _digest(raw[secret]), *raw[secret + 1:])
        return raw

    def remember(self, key: tuple[object, ...], identity: Identity | None) -> None:
        """Cache ``identity`` under ``key`` (bounded: cleared past MAX_CACHED_IDENTITIES)."""
        if len(self.cache) >= MAX_CACHED_IDENTITIES:
            self.cache.clear()
        self.cache[key] = identity

    def __len__(self) -> int:
        return len(self.cache)


def _digest(value: object) -> bytes:
    """A 16-byte digest of a header value (str or bytes), to key caches without keeping it."""
    data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    assert isinstance(data, bytes)
    return hashlib.blake2b(data, digest_size=16).digest()


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
