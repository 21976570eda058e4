"""The grammar of every configurable value that is more than a number or a switch.

Configuration (``PRODLENS_*`` variables and ``configure()`` arguments) and identity (names given
to ``identify()``, ``tag()`` or read from baggage) accept exactly the same cohort names, so both
check them here, with one expression. Each parser raises :class:`Invalid` with what is accepted;
:mod:`prodlens.config` turns that into a ``ConfigError`` naming the variable and the value.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "COHORT_NAME_GRAMMAR",
    "MAX_COHORT_NAME",
    "PROPAGATE_GRAMMAR",
    "SOURCE_GRAMMAR",
    "SOURCE_KINDS",
    "WATCH_GRAMMAR",
    "Invalid",
    "Source",
    "parse_patterns",
    "parse_sources",
    "parse_watch_list",
    "split_list",
    "valid_cohort_name",
]

#: Cohort names are at most this long (they become attribute and metric label names).
MAX_COHORT_NAME: Final = 64
_COHORT_NAME_RE: Final = re.compile(rf"^[a-z0-9_][a-z0-9_.]{{0,{MAX_COHORT_NAME - 1}}}$")
COHORT_NAME_GRAMMAR: Final = (
    f"a cohort name of lowercase letters, digits, '_' and '.', at most {MAX_COHORT_NAME} "
    "characters (e.g. plan, app.version)"
)

#: Source kinds and whether they need a name after the colon.
SOURCE_KINDS: Final[Mapping[str, bool]] = {
    "header": True,
    "cookie": True,
    "query": True,
    "path": True,
    "jwt": True,
    "user": False,
    "baggage": False,
}
SOURCE_GRAMMAR: Final = (
    "a comma-separated list of header:NAME, cookie:NAME, query:NAME, path:PARAM, "
    "jwt:CLAIM (dotted for nested claims), user, user:ATTR, baggage, baggage:KEY"
)
PROPAGATE_GRAMMAR: Final = (
    "a comma-separated list of host globs (*.internal, localhost), CIDR ranges "
    "(10.0.0.0/8, 127.0.0.0/8) or *"
)
WATCH_GRAMMAR: Final = (
    "a comma-separated list of customer:ID or COHORT:VALUE, e.g. customer:acme,plan:pro"
)
_HOST_GLOB_RE: Final = re.compile(r"^[A-Za-z0-9*?.\-_\[\]]+$")


class Invalid(ValueError):
    """A value does not match its grammar; ``accepted`` says what would."""

    def __init__(self, accepted: str) -> None:
        super().__init__(accepted)
        self.accepted = accepted


@dataclass(frozen=True, slots=True)
class Source:
    """One place identity can be read from, e.g. ``header:x-customer-id`` or ``user``."""

    kind: str
    name: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}" if self.name else self.kind


def valid_cohort_name(name: object) -> bool:
    """Cohort names: lowercase letters, digits, ``_`` and ``.``; at most 64 characters.

    Example::

        >>> valid_cohort_name("app.version"), valid_cohort_name("Plan")
        (True, False)
    """
    return isinstance(name, str) and _COHORT_NAME_RE.match(name) is not None


def split_list(raw: str) -> list[str]:
    """The non-empty, stripped items of a comma-separated list."""
    return [part.strip() for part in raw.split(",") if part.strip()]


def parse_sources(raw: str) -> tuple[Source, ...]:
    """Parse a source list such as ``jwt:plan,header:x-plan``.

    Raises:
        Invalid: an unknown kind, a missing name, an empty entry.
    """
    sources: list[Source] = []
    parts = raw.split(",")
    for part in parts:
        item = part.strip()
        if not item:
            if len(parts) > 1:
                raise Invalid(SOURCE_GRAMMAR + " (an empty entry was found)")
            continue
        kind, _, name = item.partition(":")
        kind = kind.strip().lower()
        name = name.strip()
        if kind not in SOURCE_KINDS:
            raise Invalid(SOURCE_GRAMMAR + f" (unknown kind {kind!r})")
        if SOURCE_KINDS[kind] and not name:
            raise Invalid(SOURCE_GRAMMAR + f" ({kind} needs a name: {kind}:NAME)")
        if ":" in item and not name:
            raise Invalid(SOURCE_GRAMMAR + f" (empty name after {kind}:)")
        if kind == "header":  # header names are case-insensitive: compare lower-case
            name = name.lower()
        sources.append(Source(kind, name))
    return tuple(sources)


def parse_patterns(raw: str) -> tuple[str, ...]:
    """Parse destination patterns (host globs, CIDR ranges, ``*``), lower-cased.

    Raises:
        Invalid: an item that is neither a host glob nor a CIDR range.
    """
    patterns: list[str] = []
    for item in split_list(raw):
        if "/" in item:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise Invalid(PROPAGATE_GRAMMAR + f" ({item!r} is not a CIDR range)") from None
        elif not _HOST_GLOB_RE.match(item):
            raise Invalid(PROPAGATE_GRAMMAR + f" ({item!r} is not a host glob)")
        patterns.append(item.lower())
    return tuple(patterns)


def parse_watch_list(raw: str) -> tuple[tuple[str, str], ...]:
    """Parse ``customer:ID`` / ``COHORT:VALUE`` pairs.

    Raises:
        Invalid: an item without a value, or whose name is neither ``customer`` nor a cohort
            name.
    """
    watched: list[tuple[str, str]] = []
    for item in split_list(raw):
        name, sep, value = item.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not value or not (name == "customer" or valid_cohort_name(name)):
            raise Invalid(WATCH_GRAMMAR + f" ({item!r} does not match)")
        watched.append((name, value))
    return tuple(watched)
