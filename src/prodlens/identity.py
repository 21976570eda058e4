"""The identity model: who a request is for, held per request in a context variable.

An :class:`Identity` is an immutable value: a customer id and a mapping of cohort name to value,
normalised (validated names, bounded length and cardinality, pseudonymised when configured) and
with its span attributes built once, so stamping a span costs one ``set_attributes`` call.

A *scope* holds the identity of one unit of work (a request, a ``tag()`` block, a task). It lives
in a :class:`contextvars.ContextVar`, so threads, asyncio tasks and generators each see their own.
``identify()`` inside a scope updates that scope, for as long as it lasts; outside any scope it
opens one in the current context.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from opentelemetry import trace
from opentelemetry.sdk.trace import Span

from prodlens import _runtime, attributes
from prodlens._open_spans import COMPACT_AT, compact_spans, tag_open_ancestors
from prodlens._safety import internal_error, log_once
from prodlens.pseudonym import compute_pseudonym

__all__ = ["Identity", "current", "identify"]

COHORT_NAME_RE: Final = re.compile(r"^[a-z0-9_][a-z0-9_.]{0,63}$")
_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})


def valid_cohort_name(name: object) -> bool:
    """Cohort names: lowercase letters, digits, ``_`` and ``.``; at most 64 characters."""
    return isinstance(name, str) and COHORT_NAME_RE.match(name) is not None


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


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a unit of work is for: a customer and cohorts. Immutable.

    Build one through :func:`identify`, ``prodlens.tag()`` or an integration; its values are
    already normalised. ``attributes`` is the exact dict stamped on spans.

    Example::

        >>> import prodlens
        >>> with prodlens.tag("acme", plan="pro"):
        ...     prodlens.current().customer, dict(prodlens.current().cohorts)
        ('acme', {'plan': 'pro'})
    """

    customer: str | None
    cohorts: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    #: True when ``customer`` is a pseudonym (written to ``enduser.pseudo.id``).
    pseudonymous: bool = False
    attributes: Mapping[str, str] = field(default_factory=lambda: _EMPTY, compare=False,
                                          repr=False)
    #: The length of the longest value in ``attributes`` (checked against span limits).
    longest: int = field(default=0, compare=False, repr=False)

    @property
    def customer_attribute(self) -> str:
        """The span attribute that carries this identity's customer."""
        if self.pseudonymous:
            return attributes.PSEUDONYM_ATTRIBUTE
        return _runtime.current().settings.customer_attribute


def build(
    customer: str | None,
    cohorts: Mapping[str, str],
    pseudonymous: bool,
) -> Identity:
    """An Identity from already-normalised parts, with its span attributes built once."""
    settings = _runtime.current().settings
    stamp: dict[str, str] = {}
    if customer is not None:
        key = attributes.PSEUDONYM_ATTRIBUTE if pseudonymous else settings.customer_attribute
        stamp[key] = customer
    prefix = settings.cohort_prefix
    for name, value in cohorts.items():
        stamp[prefix + name] = value
    # A plain dict (not a read-only proxy): the SDK iterates it for every span, and a dict is
    # the fastest to iterate. Identity never hands it out for mutation.
    return Identity(customer, MappingProxyType(dict(cohorts)), pseudonymous, stamp,
                    max(map(len, stamp.values()), default=0))


def normalize_customer(value: object, *, already_pseudonymous: bool = False) -> tuple[str | None,
                                                                                     bool]:
    """(customer, pseudonymous) for a raw customer value under the current settings."""
    settings = _runtime.current().settings
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
    *,
    where: str,
) -> dict[str, str]:
    """Valid, bounded cohorts; bad names are dropped with one logged warning each."""
    runtime = _runtime.current()
    settings = runtime.settings
    result: dict[str, str] = {}
    for name, raw in cohorts:
        if not valid_cohort_name(name):
            shown = repr(name)[:80]
            log_once(
                f"bad-cohort-name:{shown}", logging.WARNING,
                "prodlens: cohort name %s from %s dropped: names are lowercase letters, digits, "
                "'_' and '.', at most 64 characters", shown, where,
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
        admitted = runtime.limiter.admit(name, text)
        if admitted is not None:
            result[name] = admitted
    return result


def merge(base: Identity | None, update: Identity) -> Identity:
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
    return build(customer, cohorts, pseudonymous)


class Scope:
    """The identity of one unit of work. Shared by every context copied from where it opened,
    so ``identify()`` in a thread-pool callback or a child task of a request still reaches the
    request's later spans."""

    __slots__ = ("boundary", "compact_at", "identity", "outer", "spans")

    def __init__(self, identity: Identity | None, boundary: int | None,
                 outer: Scope | None = None) -> None:
        self.identity = identity
        #: Span id that was current when a ``tag()`` scope opened; identify() stops below it.
        self.boundary = boundary
        #: The scope that was current when this one opened (its spans may be ancestors).
        self.outer = outer
        #: Spans started in this scope, so late identification can reach the open ones: the
        #: processor appends, :meth:`compact` drops ended ones (bounded; see prodlens._open_spans).
        self.spans: list[Span] = []
        #: Length of ``spans`` at which the processor next calls :meth:`compact`.
        self.compact_at = COMPACT_AT

    def compact(self, limit: int) -> None:
        """Forget ended spans, and the oldest open ones past ``limit``. A span another thread
        appends while the list is being rebuilt may be left out: it then only misses late tags
        as an ancestor, as a span past ``limit`` does."""
        self.spans = compact_spans(self.spans, limit)
        self.compact_at = max(COMPACT_AT, 2 * len(self.spans))


SCOPE: Final[contextvars.ContextVar[Scope | None]] = contextvars.ContextVar(
    "prodlens_scope", default=None
)


def current() -> Identity | None:
    """The identity of the current unit of work, or None.

    Example::

        >>> import prodlens
        >>> prodlens.current() is None
        True
    """
    scope = SCOPE.get()
    return None if scope is None else scope.identity


def open_scope(identity: Identity | None, *, isolate_ancestors: bool) -> contextvars.Token[
        Scope | None]:
    """Open a scope in the current context; close it with :func:`close_scope`.

    Args:
        identity: the scope's identity (merged with nothing; callers merge if they want to).
        isolate_ancestors: True for ``tag()`` scopes: ``identify()`` inside never reaches the
            spans open when the scope opened. Integrations' request scopes pass False, so late
            identification tags the server span.
    """
    boundary: int | None = None
    if isolate_ancestors:
        span = trace.get_current_span()
        context = span.get_span_context()
        if context.is_valid:
            boundary = context.span_id
    return SCOPE.set(Scope(identity, boundary, SCOPE.get()))


def close_scope(token: contextvars.Token[Scope | None]) -> None:
    """Close a scope opened by :func:`open_scope` in this context."""
    try:
        SCOPE.reset(token)
    except ValueError:  # closed from another context (e.g. a generator resumed elsewhere)
        SCOPE.set(token.old_value if token.old_value is not contextvars.Token.MISSING else None)


def apply(update: Identity) -> None:
    """Merge ``update`` into the current scope (opening one if none) and tag open spans."""
    scope = SCOPE.get()
    if scope is None:
        scope = Scope(None, None)
        SCOPE.set(scope)
    merged = merge(scope.identity, update)
    scope.identity = merged
    span = trace.get_current_span()
    if isinstance(span, Span) and span.is_recording() and _runtime.current().enabled:
        tag_open_ancestors(
            span, merged.attributes, merged.customer_attribute, merged.customer, scope.boundary,
            scope,
        )


def identify(customer: object = None, **cohorts: object) -> Identity | None:
    """Say who the current request is for, e.g. right after authentication.

    Merges into the current identity: a customer replaces the customer, cohorts are added or
    replaced. Inside a scope (an integration's request, a ``tag()`` block) it lasts exactly as
    long as that scope; outside any scope it changes the current context (the thread's, or the
    asyncio task's) until that context ends or another ``identify()``.

    The current span and every still-open ancestor span in this process (up to the server span)
    are tagged at once; spans that already ended are not changed. Never raises: bad cohort names
    and unusable values are dropped with one logged warning.

    Args:
        customer: the customer id (str, int, bytes...; None keeps the current customer).
        **cohorts: cohort name to value, e.g. ``plan="pro", region="eu-west"``.

    Returns:
        The identity now in force, or None if prodlens failed internally (logged).

    Example::

        >>> import prodlens
        >>> with prodlens.tag():
        ...     prodlens.identify("acme", plan="pro").customer
        'acme'
    """
    try:
        if SCOPE.get() is None:
            _warn_on_pool_worker()
        name, pseudo = normalize_customer(customer)
        update = build(name, normalize_cohorts(cohorts.items(), where="identify()"), pseudo)
        apply(update)
        return current()
    except Exception as error:
        internal_error("identify()", error)
        return None


def _warn_on_pool_worker() -> None:
    """Warn (once) that identify() outside any scope on a pool's worker thread sticks to that
    thread: every later job it runs would carry this identity."""
    thread = threading.current_thread()
    if thread is threading.main_thread():
        return
    # A ThreadPoolExecutor worker (asyncio's default executor is one) runs the module's
    # ``_worker`` loop; its registry of workers is filled only after a worker starts its first
    # job, so the thread's target is what tells, with the default name as a fallback.
    pool = sys.modules.get("concurrent.futures.thread")
    worker_loop = getattr(pool, "_worker", None)
    if thread.name.startswith("ThreadPoolExecutor-") or (
            worker_loop is not None and getattr(thread, "_target", None) is worker_loop):
        log_once("identify:pool-worker", logging.WARNING,
                 "prodlens: identify() ran outside any scope on thread-pool worker %s: the "
                 "identity stays with that thread, so its later jobs carry it too. Run the job "
                 "inside `with prodlens.tag(customer, ...)` (a scope that ends with the job), "
                 "or wrap it with @prodlens.tag. Logged once.", thread.name)
