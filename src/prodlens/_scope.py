"""The scope: where the identity of one unit of work is held, and its one enter/exit API.

A scope holds the identity of a request, a ``tag()`` block or a task, in a
:class:`contextvars.ContextVar`, so threads, asyncio tasks and generators each see their own.
Integrations, ``prodlens.tag`` and the decorators open and close scopes only through
:func:`open_scope` / :func:`close_scope`; ``identify()`` (and the integrations' late sources)
change the current scope's identity through :func:`apply`, which also tags the spans of the
request that are still open (through :mod:`prodlens._stamp`, the one span writer).

A scope must be closed in the context that opened it. Closing it anywhere else is a prodlens
bug: it is reported once as an internal error and the context is left as it is, never
"repaired" into some other scope (that would hand one request's identity to another).
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
from typing import Final

from opentelemetry import trace
from opentelemetry.sdk.trace import Span

from prodlens import _runtime
from prodlens._open_spans import COMPACT_AT, compact_spans, tag_open_ancestors
from prodlens._safety import guard, internal_error, log_once
from prodlens.identity import Identity, build, merge, normalize_cohorts, normalize_customer

__all__ = ["SCOPE", "Scope", "ScopeToken", "apply", "close_owned", "close_scope", "current",
           "identify", "open_scope", "resume_scope", "tag_open_spans"]


class Scope:
    """The identity of one unit of work. Shared by every context copied from where it opened,
    so ``identify()`` in a thread-pool callback or a child task of a request still reaches the
    request's later spans."""

    __slots__ = ("boundary", "compact_at", "identity", "outer", "owner", "spans", "token")

    def __init__(self, identity: Identity | None, boundary: int | None,
                 outer: Scope | None = None, owner: object = None) -> None:
        self.identity = identity
        #: Span id that was current when a ``tag()`` scope opened; identify() stops below it.
        self.boundary = boundary
        #: The scope that was current when this one opened (its spans may be ancestors).
        self.outer = outer
        #: What opened the scope (a ``tag`` instance), so it closes its own scope and no other.
        self.owner = owner
        #: The token that closes this scope, in the context that opened it.
        self.token: ScopeToken | None = None
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


ScopeToken = contextvars.Token["Scope | None"]

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


def open_scope(identity: Identity | None, *, isolate_ancestors: bool = False,
               owner: object = None) -> ScopeToken:
    """Open a scope in the current context; close it with :func:`close_scope`, in this context.

    Args:
        identity: the scope's identity (merged with nothing; callers merge if they want to).
        isolate_ancestors: True for ``tag()`` scopes: ``identify()`` inside never reaches the
            spans open when the scope opened. Integrations' request scopes pass False, so late
            identification tags the server span.
        owner: what opens the scope, for :func:`close_owned`.
    """
    boundary: int | None = None
    if isolate_ancestors:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            boundary = context.span_id
    scope = Scope(identity, boundary, SCOPE.get(), owner)
    token = scope.token = SCOPE.set(scope)
    return token


def close_scope(token: ScopeToken) -> None:
    """Close a scope opened by :func:`open_scope`. Never raises.

    A token from another context (or used twice) is a prodlens bug: reported once as an
    internal error, and the current context is left as it is.
    """
    try:
        SCOPE.reset(token)
    except (ValueError, RuntimeError) as error:
        internal_error("closing a prodlens scope outside the context that opened it", error)


def resume_scope(scope: Scope) -> ScopeToken:
    """Make ``scope`` current again for one step of a generator the scope belongs to; close
    it with :func:`close_scope` before the generator yields (a scope is never left open
    across a ``yield``)."""
    return SCOPE.set(scope)


def close_owned(owner: object) -> None:
    """Close the current scope if ``owner`` opened it (in this context). Never raises.

    This is how one ``tag`` instance, shared by many threads and tasks, closes the scope it
    opened in *this* context: the token lives in the context's own scope, not on the instance.
    """
    scope = SCOPE.get()
    if scope is None or scope.owner is not owner or scope.token is None:
        log_once("scope:unmatched-exit", logging.WARNING,
                 "prodlens: internal error: a prodlens.tag() block ended in a context where it "
                 "had not started (or inside a scope it did not open); the scope is left as it "
                 "is. Further errors of this kind are not logged.")
        return
    close_scope(scope.token)


def apply(update: Identity) -> None:
    """Merge ``update`` into the current scope (opening one if none) and tag its open spans."""
    runtime = _runtime.current()
    scope = SCOPE.get()
    if scope is None:
        # identify() outside any scope: it lasts as long as the current context.
        scope = Scope(None, None)
        SCOPE.set(scope)
    merged = merge(scope.identity, update, runtime.settings)
    scope.identity = merged
    tag_open_spans(merged, scope)


def tag_open_spans(identity: Identity, scope: Scope | None) -> None:
    """Stamp ``identity`` on the current span and its open ancestors (up to ``scope``'s
    boundary), when prodlens is on."""
    span = trace.get_current_span()
    if isinstance(span, Span) and span.is_recording() and _runtime.current().on:
        tag_open_ancestors(span, identity, None if scope is None else scope.boundary, scope)


_KEEP: Final = object()


def identify(customer: object = _KEEP, **cohorts: object) -> Identity | None:
    """Say who the current request is for, e.g. right after authentication.

    Merges into the current identity: a customer replaces the customer, cohorts are added or
    replaced. Inside a scope (an integration's request, a ``tag()`` block) it lasts exactly as
    long as that scope; outside any scope it changes the current context (the thread's, or the
    asyncio task's) until that context ends or another ``identify()``.

    ``identify(None)`` starts over instead: the customer and every cohort are cleared (after a
    logout, say), and ``identify(None, plan="free")`` leaves only the cohorts given. Spans that
    already carry the old identity keep it.

    The current span and every still-open ancestor span in this process (up to the server span)
    are tagged at once; spans that already ended are not changed. Never raises: bad cohort names
    and unusable values are dropped with one logged warning.

    Args:
        customer: the customer id (str, int, bytes...); omitted, the current customer stays;
            None clears the identity.
        **cohorts: cohort name to value, e.g. ``plan="pro", region="eu-west"``.

    Returns:
        The identity now in force, or None if there is none (or prodlens failed internally,
        which is logged).

    Example::

        >>> import prodlens
        >>> with prodlens.tag():
        ...     prodlens.identify("acme", plan="pro").customer
        'acme'
    """
    with guard("identify()"):
        runtime = _runtime.current()
        _runtime.warn_if_unattached("prodlens.identify()")
        if SCOPE.get() is None:
            _warn_on_pool_worker()
        settings = runtime.settings
        clear = customer is None
        name, pseudo = (None, False) if customer is _KEEP or clear \
            else normalize_customer(customer, settings)
        update = build(name, normalize_cohorts(cohorts.items(), settings, runtime.limiter,
                                               where="identify()"), pseudo, settings)
        if clear:
            scope = SCOPE.get()
            if scope is None:
                scope = Scope(None, None)
                SCOPE.set(scope)
            scope.identity = update if update.cohorts else None
            if update.cohorts:
                tag_open_spans(update, scope)
        else:
            apply(update)
        return current()
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
