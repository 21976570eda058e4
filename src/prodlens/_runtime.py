"""The process-wide runtime: the effective settings and the cohort-cardinality limiter.

Settings are process-wide because identity is normalised where the application calls
``identify()``, which knows nothing of tracer providers; span processors are per provider and
read the runtime on every span (through :func:`current`, the one accessor), so ``configure()``
or the instrumentor's ``_uninstrument`` take effect at once. This holds no per-request state.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from prodlens import _stamp, attributes
from prodlens._safety import guard, log_once
from prodlens.config import Settings


class CohortLimiter:
    """Bounds the distinct values per cohort name, and the number of cohort names.

    A value seen before passes at the cost of two dict/set look-ups; a new value past
    ``max_values`` becomes ``__other__`` (logged once, naming the setting).
    """

    def __init__(self, max_values: int, max_names: int) -> None:
        self._max_values = max_values
        self._max_names = max_names
        self._seen: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def admit(self, name: str, value: str) -> str | None:
        """The value to record for ``name``: itself, ``__other__``, or None to drop the name."""
        values = self._seen.get(name)
        if values is not None and value in values:
            return value
        with self._lock:
            values = self._seen.get(name)
            if values is None:
                if len(self._seen) >= self._max_names:
                    log_once(
                        "limit:names", logging.WARNING,
                        "prodlens: more than %d cohort names in this process; cohort %r and "
                        "further new names are dropped. Raise PRODLENS_MAX_COHORTS to allow more.",
                        self._max_names, name,
                    )
                    return None
                values = self._seen[name] = set()
            if value in values:
                return value
            if len(values) >= self._max_values:
                log_once(
                    f"limit:values:{name}", logging.WARNING,
                    "prodlens: cohort %r has reached %d distinct values in this process; new "
                    "values are recorded as %r. Raise PRODLENS_MAX_COHORT_VALUES to allow more.",
                    name, self._max_values, attributes.OTHER_VALUE,
                )
                return attributes.OTHER_VALUE
            values.add(value)
            return value


@dataclass
class Runtime:
    """What every prodlens component reads at request time."""

    settings: Settings
    limiter: CohortLimiter
    #: False after the instrumentor's ``_uninstrument``: processors become inert.
    active: bool = True
    #: Incremented by every :func:`install`: identities cached under older settings are stale.
    generation: int = 0
    #: True once ``configure()`` or the instrumentor installed settings (not the defaults).
    configured: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: ``active and settings.enabled``, precomputed for the per-span check.
    on: bool = True
    #: ``settings.max_open_spans``, copied for the per-span check.
    max_open_spans: int = 20000

    def __post_init__(self) -> None:
        self.on = self.active and self.settings.enabled
        self.max_open_spans = self.settings.max_open_spans


def _make(settings: Settings, generation: int, configured: bool) -> Runtime:
    return Runtime(
        settings=settings,
        limiter=CohortLimiter(settings.max_cohort_values, settings.max_cohorts),
        generation=generation,
        configured=configured,
    )


_current: Runtime = _make(Settings(), 0, configured=False)


def current() -> Runtime:
    """The runtime in force (defaults until ``configure()`` or the instrumentor ran)."""
    return _current


#: Called with the new runtime after every :func:`install` (see :func:`on_install`).
_listeners: list[Callable[[Runtime], None]] = []


def on_install(callback: Callable[[Runtime], None]) -> None:
    """Call ``callback(runtime)`` whenever new settings are installed (once per callback).

    For state derived from the settings outside the per-span path, e.g. patches that are only
    needed for some sources. A callback that raises is logged and does not stop the others.
    """
    if callback not in _listeners:
        _listeners.append(callback)


def install(settings: Settings) -> Runtime:
    """Make ``settings`` the process's settings, with a fresh cardinality limiter."""
    global _current
    runtime = _make(settings, _current.generation + 1, configured=True)
    _current = runtime
    for callback in tuple(_listeners):
        with guard("applying new settings"):
            callback(runtime)
    _stamp.use_direct(settings.direct_stamp)
    return runtime


#: Set once prodlens's processor is attached to some SDK tracer provider.
_attached = False


def note_attached() -> None:
    """Record that a tracer provider now has prodlens's processor (:func:`warn_if_unattached`)."""
    global _attached
    _attached = True


def warn_if_unattached(what: str) -> None:
    """Warn once when ``what`` (``identify()``, ``tag()``) is used while no tracer provider has
    prodlens's processor: the identity is kept, but no span will carry it."""
    if not _attached:
        log_once(
            "unattached", logging.WARNING,
            "prodlens: %s was called, but prodlens is attached to no tracer provider, so no "
            "span will carry the identity. Call prodlens.configure(provider) with your SDK "
            "TracerProvider, or run under `opentelemetry-instrument`.", what,
        )


def reset() -> None:
    """Back to the defaults, unconfigured and unattached (see :func:`prodlens.testing.reset`)."""
    global _current, _attached
    _current = _make(Settings(), 0, configured=False)
    _attached = False
    _stamp.use_direct(True)


def set_active(active: bool) -> None:
    """Turn every prodlens processor on or off without touching the providers."""
    _current.active = active
    _current.on = active and _current.settings.enabled
