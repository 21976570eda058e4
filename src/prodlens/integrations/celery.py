"""Celery: identity given at ``.delay()`` / ``.apply_async()`` time reaches the worker's spans.

The producer's current identity (its request's customer and cohorts) is written into the task
message's headers (``prodlens_identity``, W3C-baggage encoded, at most 64 members and 8 KiB) by
a ``before_task_publish`` receiver. On the worker a ``task_prerun`` receiver restores it as a
prodlens scope around the task's execution, closed by ``task_postrun``: the task span of the
OpenTelemetry Celery instrumentation (``run/<task>``) and every span the task starts carry it,
with no configuration on the worker. A task without the header runs with no identity, never
with the previous task's.

The application's own queue is trusted by default (its own code put the identity there, unlike
inbound HTTP baggage, which a client controls). Turn it off, both ways, with::

    export PRODLENS_CELERY_PROPAGATE=false

Run the worker under ``opentelemetry-instrument celery -A app worker``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.sdk.trace import Span

from prodlens import _runtime, attributes
from prodlens._safety import guard
from prodlens._scope import apply, close_scope, current, open_scope
from prodlens.baggage import identity_from_members, merge_header, parse_header
from prodlens.integrations import _patching

__all__ = ["HEADER", "TARGET", "connect", "disconnect", "patch"]

TARGET: Final = "celery"
#: The task-message header that carries the identity.
HEADER: Final = attributes.CELERY_HEADER
#: Attribute of the worker's task request holding the open scope's token.
_TOKEN_ATTRIBUTE: Final = "_prodlens_scope_token"
_UID: Final = "prodlens.integrations.celery."


def _before_publish(sender: Any = None, headers: Any = None, **kwargs: Any) -> None:
    """Producer: put the current identity into the outgoing task message's headers."""
    with guard("Celery publish"):
        runtime = _runtime.current()
        if not runtime.on or not runtime.settings.celery_propagate:
            return
        if not isinstance(headers, dict):
            return
        identity = current()
        if identity is None or (identity.customer is None and not identity.cohorts):
            headers.pop(HEADER, None)  # e.g. a retry published outside any scope
            return
        headers[HEADER] = merge_header(None, identity)


def _header_of(request: Any) -> object | None:
    value = getattr(request, HEADER, None)
    if value is None:  # some protocols keep custom headers in ``request.headers``
        headers = getattr(request, "headers", None)
        if isinstance(headers, Mapping):
            value = headers.get(HEADER)
    return value


def _prerun(task_id: Any = None, task: Any = None, **kwargs: Any) -> None:
    """Worker: open the task's scope with the identity its message carried (or none)."""
    with guard("Celery task start"):
        request = getattr(task, "request", None)
        if request is None or getattr(request, "is_eager", False):
            return  # an eager task runs inline, in its caller's scope
        runtime = _runtime.current()
        if not runtime.on:
            return
        identity = None
        if runtime.settings.celery_propagate:
            raw = _header_of(request)
            if isinstance(raw, str) and raw:
                identity = identity_from_members(parse_header(raw))
        span = trace.get_current_span()
        if identity is not None and isinstance(span, Span) and span.is_recording():
            # The Celery instrumentation's prerun receiver ran before ours and its task span is
            # open: tag it, and the task's later spans, through apply().
            token = open_scope(None)
            apply(identity)
        else:
            # Ours ran first (the task span is stamped when it starts), or nothing to restore.
            # Always a fresh scope: a task never inherits what its worker thread saw before.
            token = open_scope(identity)
        setattr(request, _TOKEN_ATTRIBUTE, token)


def _postrun(task_id: Any = None, task: Any = None, **kwargs: Any) -> None:
    """Worker: close the task's scope."""
    with guard("Celery task end"):
        request = getattr(task, "request", None)
        token = getattr(request, _TOKEN_ATTRIBUTE, None)
        if token is None:
            return
        delattr(request, _TOKEN_ATTRIBUTE)
        close_scope(token)


def _signals() -> Any:
    from celery import signals  # type: ignore[import-untyped]

    return signals


def connect(signals: Any) -> None:
    """Connect the receivers to Celery's signals (idempotent: Celery dedups by uid)."""
    signals.before_task_publish.connect(_before_publish, weak=False,
                                        dispatch_uid=_UID + "publish")
    signals.task_prerun.connect(_prerun, weak=False, dispatch_uid=_UID + "prerun")
    signals.task_postrun.connect(_postrun, weak=False, dispatch_uid=_UID + "postrun")


def disconnect() -> None:
    """Disconnect the receivers (the undo of :func:`patch`)."""
    signals = _signals()
    signals.before_task_publish.disconnect(_before_publish, dispatch_uid=_UID + "publish")
    signals.task_prerun.disconnect(_prerun, dispatch_uid=_UID + "prerun")
    signals.task_postrun.disconnect(_postrun, dispatch_uid=_UID + "postrun")


def patch(module: ModuleType) -> None:
    """Connect prodlens's Celery signal receivers (idempotent; undone by uninstrument)."""
    connect(_signals())
    _patching.on_unpatch(disconnect)
