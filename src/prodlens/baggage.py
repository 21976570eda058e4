"""Encoding identity to and from W3C baggage, within W3C's limits.

Identity stays inside the process unless configured otherwise: these are building blocks, used
by the integrations only for allowlisted destinations (``PRODLENS_PROPAGATE_TO``) and sources
(``baggage`` in ``PRODLENS_CUSTOMER_FROM``). Nothing here trusts inbound data by itself.

Keys: ``prodlens.customer`` (or ``prodlens.pseudo_customer`` when the value is already a
pseudonym, so that a downstream service with pseudonymisation on does not hash it twice) and
``prodlens.cohort.<name>``. A header never exceeds 64 members or 8192 bytes, and a member is
never cut in half: what does not fit is left out (logged once).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Final
from urllib.parse import quote, unquote, unquote_plus

from opentelemetry import baggage as otel_baggage
from opentelemetry import context as otel_context
from opentelemetry.context import Context

from prodlens import _runtime, attributes
from prodlens._runtime import CohortLimiter
from prodlens._safety import log_once
from prodlens.config import Settings
from prodlens.identity import Identity, build, normalize_cohorts, normalize_customer

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_MEMBERS",
    "identity_from_members",
    "identity_members",
    "is_prodlens_key",
    "may_hold_prodlens",
    "merge_header",
    "parse_header",
    "strip_current_context",
    "strip_identity",
    "strip_members",
    "with_identity",
]

MAX_MEMBERS: Final = 64
MAX_HEADER_BYTES: Final = 8192
_PRODLENS_PREFIX: Final = "prodlens."
#: Inbound headers are read on at most this many characters (bounded work on hostile input).
_MAX_INBOUND_CHARS: Final = 2 * MAX_HEADER_BYTES
#: W3C baggage: keys are RFC 7230 tokens; values are baggage-octets (percent-encoded beyond).
_TOKEN_RE: Final = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}$")
_VALUE_RE: Final = re.compile(r"^[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*$")


def is_prodlens_key(key: str) -> bool:
    """True if baggage key ``key`` (raw, as in a header, or decoded, as in a context) names a
    prodlens member once decoded as any reader decodes it.

    OpenTelemetry's propagator percent-decodes keys (``%70rodlens.customer`` becomes
    ``prodlens.customer`` in the context) and strips blanks, so the test does the same, and
    ignores case: no key that some reader could take for a prodlens member passes.
    """
    name = key.strip()
    if "%" in name or "+" in name:
        name = unquote_plus(name).strip()
    return name[:len(_PRODLENS_PREFIX)].lower() == _PRODLENS_PREFIX


def may_hold_prodlens(header: str) -> bool:
    """A cheap pre-check: False only when ``header`` cannot hold a prodlens member."""
    return "%" in header or "prodlens." in header.lower()


def strip_members(header: str) -> str:
    """A ``baggage`` header without prodlens's members; also without any member that is not
    ASCII, which W3C baggage never holds and no propagator accepts (so the rewritten header
    decodes as UTF-8 anywhere). Other members are kept as they are, in order."""
    kept = []
    for member in header.split(","):
        if not member.strip() or not member.isascii():
            continue
        if not is_prodlens_key(member.split("=", 1)[0]):
            kept.append(member)
    return ",".join(kept)


def identity_members(identity: Identity) -> list[tuple[str, str]]:
    """(key, value) baggage members for ``identity``, customer first."""
    members: list[tuple[str, str]] = []
    if identity.customer is not None:
        key = (attributes.BAGGAGE_PSEUDO_CUSTOMER_KEY if identity.pseudonymous
               else attributes.BAGGAGE_CUSTOMER_KEY)
        members.append((key, identity.customer))
    for name, value in identity.cohorts.items():
        members.append((attributes.BAGGAGE_COHORT_PREFIX + name, value))
    return members


def _encode_member(key: str, value: str) -> str:
    return f"{key}={quote(value, safe='')}"


def parse_header(header: str | Iterable[str] | None) -> dict[str, str]:
    """Members of one or more ``baggage`` header values, bounded and never raising.

    Reads at most 16 KiB and the first 64 well-formed members; malformed members are skipped;
    properties (``;...``) are ignored; values are percent-decoded.
    """
    if header is None:
        return {}
    text = header if isinstance(header, str) else ",".join(header)
    if len(text) > _MAX_INBOUND_CHARS:
        log_once("baggage:inbound-too-long", logging.INFO,
                 "prodlens: an inbound baggage header over %d characters was read only in part",
                 _MAX_INBOUND_CHARS)
        text = text[:_MAX_INBOUND_CHARS]
    members: dict[str, str] = {}
    for raw in text.split(","):
        if len(members) >= MAX_MEMBERS:
            break
        member = raw.split(";", 1)[0]
        key, sep, value = member.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not _TOKEN_RE.match(key) or not _VALUE_RE.match(value):
            continue
        try:
            members[key] = unquote(value, errors="strict")
        except UnicodeDecodeError:
            continue
    return members


def merge_header(existing: str | None, identity: Identity) -> str:
    """An outgoing ``baggage`` header: ``existing`` members with prodlens's replaced.

    Existing non-prodlens members come first and are kept as they are (but for members that
    are not ASCII, which W3C baggage never holds); prodlens members are added while they fit
    within 64 members and 8192 bytes.
    """
    kept: list[str] = []
    if existing:
        for raw in existing[:_MAX_INBOUND_CHARS].split(","):
            member = raw.strip()
            if member and member.isascii() and not is_prodlens_key(member.split("=", 1)[0]):
                kept.append(member)
    size = len(",".join(kept).encode("utf-8"))
    for key, value in identity_members(identity):
        encoded = _encode_member(key, value)
        extra = len(encoded.encode("utf-8")) + (1 if kept else 0)
        if len(kept) >= MAX_MEMBERS or size + extra > MAX_HEADER_BYTES:
            log_once("baggage:outbound-full", logging.WARNING,
                     "prodlens: outgoing baggage is full (64 members / 8192 bytes); some prodlens "
                     "members were left out")
            break
        kept.append(encoded)
        size += extra
    return ",".join(kept)


def identity_from_members(members: Mapping[str, str], key: str = "", *,
                          settings: Settings | None = None,
                          limiter: CohortLimiter | None = None) -> Identity | None:
    """The identity carried in baggage members.

    Args:
        members: decoded baggage members (from :func:`parse_header` or OpenTelemetry's context).
        key: with ``baggage:KEY`` sources, the single member to read as the customer; empty for
            the prodlens keys (customer and every ``prodlens.cohort.*``).
        settings: the settings to normalise with (default: those in force).
        limiter: the cohort-cardinality limiter (default: the process's).
    """
    runtime = _runtime.current()
    settings = settings if settings is not None else runtime.settings
    limiter = limiter if limiter is not None else runtime.limiter
    if key:
        value = members.get(key)
        if value is None:
            return None
        customer, pseudo = normalize_customer(value, settings)
        return build(customer, {}, pseudo, settings) if customer is not None else None
    pseudo_value = members.get(attributes.BAGGAGE_PSEUDO_CUSTOMER_KEY)
    if pseudo_value is not None:
        customer, pseudo = normalize_customer(pseudo_value, settings, already_pseudonymous=True)
    else:
        customer, pseudo = normalize_customer(members.get(attributes.BAGGAGE_CUSTOMER_KEY),
                                              settings)
    prefix = attributes.BAGGAGE_COHORT_PREFIX
    cohorts = normalize_cohorts(
        ((k[len(prefix):], v) for k, v in members.items() if k.startswith(prefix)),
        settings, limiter, where="inbound baggage",
    )
    if customer is None and not cohorts:
        return None
    return build(customer, cohorts, pseudo, settings)


def strip_identity(context: Context | None = None) -> Context:
    """``context`` without prodlens's baggage keys, so OpenTelemetry's propagator does not pass
    identity a service received on to every destination."""
    entries = otel_baggage.get_all(context)
    result = context
    for key in entries:
        if is_prodlens_key(key):
            result = otel_baggage.remove_baggage(key, result)
    return result if result is not None else Context()


def strip_current_context() -> object | None:
    """Attach the current context without prodlens's baggage keys, when it has any (a server
    instrumentation outside prodlens's request scope already extracted a client's baggage).

    Returns:
        The token to pass to ``opentelemetry.context.detach`` when the request ends, or None
        when the context held no prodlens member (nothing attached).
    """
    entries = otel_baggage.get_all()
    if not entries or not any(is_prodlens_key(key) for key in entries):
        return None
    return otel_context.attach(strip_identity(otel_context.get_current()))


def with_identity(identity: Identity, context: Context | None = None) -> Context:
    """``context`` with ``identity`` in OpenTelemetry baggage (for ``PRODLENS_PROPAGATE_TO=*``)."""
    result = strip_identity(context)
    for key, value in identity_members(identity):
        result = otel_baggage.set_baggage(key, value, result)
    return result
