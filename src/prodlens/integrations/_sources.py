"""Request sources: resolving the customer and cohorts of a request into an Identity.

Every framework integration describes its request through a
:class:`~prodlens.integrations._readers.RequestView` and calls :func:`resolve_early` (or
:func:`resolve_headers`, with the header-keyed cache of the settings' plan) as the request
arrives, before the framework's OpenTelemetry server span opens, so a sampler sees the identity
at root start; then :func:`resolve_late` once routing and authentication ran (``path:PARAM`` and
``user``/``user:ATTR``), applying that result with ``prodlens._scope.apply`` so the already open
server span is tagged too. Reading one value is :mod:`prodlens.integrations._readers`' job;
what the settings ask for, and the caches, :mod:`prodlens.integrations._plan`'s.

Sources are configured per customer (``PRODLENS_CUSTOMER_FROM``) and per cohort
(``PRODLENS_COHORT_<NAME>_FROM``); in each ordered list the first source that yields wins::

    export PRODLENS_CUSTOMER_FROM=jwt:sub,header:x-customer-id
    export PRODLENS_COHORT_PLAN_FROM=jwt:plan,header:x-plan
    export PRODLENS_COHORT_TENANT_FROM=path:tenant
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, TypeVar

from prodlens import _runtime, attributes
from prodlens._grammar import Source
from prodlens._runtime import CohortLimiter
from prodlens._safety import guard
from prodlens.baggage import identity_from_members, parse_header
from prodlens.config import Settings
from prodlens.identity import Identity, build, normalize_cohorts, normalize_customer, to_text
from prodlens.integrations._plan import (
    EARLY_KINDS,
    LATE_KINDS,
    MAX_CACHED_IDENTITIES,
    HeaderPlan,
    source_plan,
)
from prodlens.integrations._readers import RequestView, bearer_claims, claim

__all__ = ["resolve_early", "resolve_headers", "resolve_late"]

_MISS: Final = object()
_R = TypeVar("_R")


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
        if kind == "header":  # the common case first: read directly, without _Reader.raw
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
    plan = source_plan(settings)
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
    hit = cache.get(frozen, _MISS)
    if hit is not _MISS:
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
    with guard("resolving request sources"):
        return _resolve(view, settings, late=False)
    return None


def resolve_headers(plan: HeaderPlan, raw: tuple[object, ...],
                    view: Callable[[_R], RequestView], request: _R) -> Identity | None:
    """:func:`resolve_early` for a request whose headers ``plan.names`` have the values ``raw``
    (None when absent), cached by those values: ``view(request)`` is built and read only when
    ``raw`` was not seen before. Never raises."""
    key = plan.key(raw)
    if key is None:
        return resolve_early(view(request), plan.settings)
    hit = plan.cache.get(key, _MISS)
    if hit is not _MISS:
        return hit  # type: ignore[return-value]
    identity = resolve_early(view(request), plan.settings)
    plan.remember(key, identity)
    return identity


def resolve_late(view: RequestView, settings: Settings) -> Identity | None:
    """The identity that ``user``/``path`` sources add once the framework knows them, or None.

    Each list containing a late source is evaluated again in order with everything available;
    when its first yielding source is an early one, the early result stands and nothing is
    returned for it. Apply the result with ``prodlens._scope.apply`` (it merges).
    Never raises.
    """
    with guard("resolving late request sources"):
        if not source_plan(settings).late:
            return None
        return _resolve(view, settings, late=True)
    return None
