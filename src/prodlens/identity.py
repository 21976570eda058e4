"""The identity value: who a unit of work is for, and how one is built and merged.

An :class:`Identity` is immutable: a customer id, a read-only mapping of cohort name to value
and the read-only attribute mapping stamped on spans, built once from them. Identities are
shared across requests (the integrations cache them per customer), so nothing reachable from
one can be changed. They are only built here, normalised (valid names, bounded length and
cardinality, pseudonymised when configured), so an identity always agrees with its attributes.

Every function takes the settings (and the cardinality limiter) it applies explicitly: this
module reads no global state. Where the identity of a request is *held* is the scope's business
(:mod:`prodlens._scope`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, NoReturn

from prodlens import attributes
from prodlens._grammar import COHORT_NAME_GRAMMAR, valid_cohort_name
from prodlens._safety import internal_error, log_once
from prodlens.pseudonym import compute_pseudonym

if TYPE_CHECKING:
    from prodlens._runtime import CohortLimiter
    from prodlens.config import Settings

__all__ = ["Identity"]



class ReadOnlyDict(dict[str, str]):
    """A dict that refuses every change: the read-only mappings of an :class:`Identity`.

    A dict subclass rather than a ``MappingProxyType``: the SDK's attribute dict merges it at
    C speed (``dict.update`` of a proxy goes through the mapping protocol, which measured
    ~0.3 us more per span with bench/bench_core.py), and every mutating method raises.
    """

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("a prodlens identity is immutable: its mappings cannot be changed")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return ReadOnlyDict, (dict(self),)


_EMPTY: Final[Mapping[str, str]] = ReadOnlyDict()


def to_text(value: object, max_length: int) -> str | None:
    """A bounded string for ``value``, or None when it carries nothing usable.

    str is truncated; bytes are decoded as UTF-8 (replacing bad bytes) after truncation; bools
    become ``true``/``false``; numbers their decimal form; other objects their ``str()``, unless
    that raises. The result is always valid UTF-8: a surrogate pair held as two code points is
    joined, and a lone surrogate (a JWT ``sub`` of ``"\\ud800"``) becomes U+FFFD, so no
    exporter or backend rejects the span, or its batch, for it. Never raises.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value[:max_length]
    elif isinstance(value, (bytes, bytearray, memoryview)):
        text = bytes(value[: max_length * 4]).decode("utf-8", "replace")[:max_length]
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        try:
            text = str(value)[:max_length]
        except Exception as error:  # an object whose __str__ raises
            internal_error("value conversion", error)
            return None
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # surrogates: join pairs, replace lone ones
            text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text if text else None


class Identity:
    """Who a unit of work is for: a customer and cohorts. Immutable.

    Identities come from :func:`prodlens.identify`, ``prodlens.tag()`` and the integrations,
    already normalised; they cannot be constructed directly (an identity built by hand would
    not agree with the attributes it stamps). ``attributes`` is the exact, read-only mapping
    stamped on spans.

    Example::

        >>> import prodlens
        >>> with prodlens.tag("acme", plan="pro"):
        ...     identity = prodlens.current()
        >>> identity.customer, dict(identity.cohorts)
        ('acme', {'plan': 'pro'})
        >>> identity.attributes["enduser.id"] = "someone else"
        Traceback (most recent call last):
        ...
        TypeError: a prodlens identity is immutable: its mappings cannot be changed
    """

    __slots__ = ("attributes", "cohorts", "customer", "customer_attribute", "longest",
                 "pseudonymous")

    customer: str | None
    #: Cohort name -> value (read-only).
    cohorts: Mapping[str, str]
    #: True when ``customer`` is a pseudonym (written to ``enduser.pseudo.id``).
    pseudonymous: bool
    #: Span attribute -> value, exactly what is stamped on spans (read-only).
    attributes: Mapping[str, str]
    #: The length of the longest value in ``attributes`` (checked against span limits).
    longest: int
    #: The span attribute that carries the customer.
    customer_attribute: str

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise TypeError(
            "prodlens.Identity cannot be constructed directly: use prodlens.identify(), "
            "prodlens.tag() or prodlens.current()"
        )

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"prodlens.Identity is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"prodlens.Identity is immutable: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Identity):
            return NotImplemented
        return (self.customer == other.customer and self.pseudonymous == other.pseudonymous
                and self.attributes == other.attributes)

    def __hash__(self) -> int:
        return hash((self.customer, self.pseudonymous, frozenset(self.attributes.items())))

    def __repr__(self) -> str:
        return (f"Identity(customer={self.customer!r}, cohorts={dict(self.cohorts)!r}, "
                f"pseudonymous={self.pseudonymous!r})")

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _restore, (self.customer, dict(self.cohorts), self.pseudonymous,
                          dict(self.attributes), self.customer_attribute)

    def __copy__(self) -> Identity:
        return self

    def __deepcopy__(self, memo: object) -> Identity:
        return self


_set = object.__setattr__


def _restore(customer: str | None, cohorts: dict[str, str], pseudonymous: bool,
             stamp: dict[str, str], customer_attribute: str) -> Identity:
    identity = object.__new__(Identity)
    _set(identity, "customer", customer)
    _set(identity, "cohorts", ReadOnlyDict(cohorts) if cohorts else _EMPTY)
    _set(identity, "pseudonymous", pseudonymous)
    _set(identity, "attributes", ReadOnlyDict(stamp))
    _set(identity, "longest", max(map(len, stamp.values()), default=0))
    _set(identity, "customer_attribute", customer_attribute)
    return identity


def build(customer: str | None, cohorts: Mapping[str, str], pseudonymous: bool,
          settings: Settings) -> Identity:
    """An Identity from already-normalised parts, its span attributes built once."""
    customer_attribute = (attributes.PSEUDONYM_ATTRIBUTE if pseudonymous
                          else settings.customer_attribute)
    stamp: dict[str, str] = {}
    if customer is not None:
        stamp[customer_attribute] = customer
    prefix = settings.cohort_prefix
    for name, value in cohorts.items():
        stamp[prefix + name] = value
    return _restore(customer, dict(cohorts), pseudonymous, stamp, customer_attribute)


def normalize_customer(value: object, settings: Settings, *,
                       already_pseudonymous: bool = False) -> tuple[str | None, bool]:
    """(customer, pseudonymous) for a raw customer value under ``settings``."""
    if already_pseudonymous:
        return to_text(value, max(settings.max_value_length, 64)), True
    if settings.pseudonymize and settings.pseudonym_key:
        # Hash the whole id (bounded by the hash input limit), never a truncated one.
        text = to_text(value, 65536)
        if text is None:
            return None, True
        return compute_pseudonym(text, settings.pseudonym_key), True
    return to_text(value, settings.max_value_length), False


def normalize_cohorts(
    cohorts: Iterable[tuple[object, object]],
    settings: Settings,
    limiter: CohortLimiter,
    *,
    where: str,
) -> dict[str, str]:
    """Valid, bounded cohorts; bad names are dropped with one logged warning each."""
    result: dict[str, str] = {}
    for name, raw in cohorts:
        if not valid_cohort_name(name):
            shown = repr(name)[:80]
            log_once(
                f"bad-cohort-name:{shown}", logging.WARNING,
                "prodlens: cohort name %s from %s dropped: expected %s", shown, where,
                COHORT_NAME_GRAMMAR,
            )
            continue
        assert isinstance(name, str)
        text = to_text(raw, settings.max_value_length)
        if text is None:
            continue
        if len(result) >= settings.max_cohorts:
            log_once(
                "limit:cohorts-per-identity", logging.WARNING,
                "prodlens: more than %d cohorts on one identity; the rest are dropped. Raise "
                "PRODLENS_MAX_COHORTS to allow more.", settings.max_cohorts,
            )
            break
        admitted = limiter.admit(name, text)
        if admitted is not None:
            result[name] = admitted
    return result


def merge(base: Identity | None, update: Identity, settings: Settings) -> Identity:
    """``update`` laid over ``base``: its customer (if any) and cohorts win."""
    if base is None:
        return update
    if update.customer is None and not update.cohorts:
        return base
    customer, pseudonymous = (
        (update.customer, update.pseudonymous) if update.customer is not None
        else (base.customer, base.pseudonymous)
    )
    cohorts = dict(base.cohorts)
    cohorts.update(update.cohorts)
    return build(customer, cohorts, pseudonymous, settings)
