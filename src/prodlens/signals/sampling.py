"""Cohort-aware head sampling: keep every trace of watched customers and cohorts.

:class:`ProdlensSampler` keeps every trace whose root request belongs to a watched customer or
cohort (``PRODLENS_SAMPLE_ALWAYS=customer:acme,plan:enterprise``), samples the other traces at
``PRODLENS_SAMPLE_RATIO`` (deterministically by trace id, like ``TraceIdRatioBased``), and
follows the parent's decision for every span that has one, remote parents included, so a trace
is never cut in half. Forced "always" decisions are capped by a token bucket
(``PRODLENS_SAMPLE_ALWAYS_PER_SECOND``, default 100 per second per process): identity read from
headers or unverified tokens can be forged, and a client must not be able to force full
sampling. Past the cap, watched requests are sampled at the ratio like the rest.

Unsampled request roots (SERVER or CONSUMER spans without a local parent) are *recorded but not
exported* (``RECORD_ONLY``) while prodlens metrics are on, so the cohort metrics still count
them; their children are dropped. Exporting span processors export only sampled spans.

Select it without code (the factory never raises; a bad argument is logged once and the
settings' ratio is used)::

    export OTEL_TRACES_SAMPLER=prodlens
    export OTEL_TRACES_SAMPLER_ARG=0.1            # optional: overrides PRODLENS_SAMPLE_RATIO
    export PRODLENS_SAMPLE_ALWAYS=customer:acme,plan:enterprise
    export PRODLENS_SAMPLE_RATIO=0.1
    export PRODLENS_SAMPLE_ALWAYS_PER_SECOND=100

or in code (a ``TracerProvider`` built in code ignores ``OTEL_TRACES_SAMPLER``)::

    from opentelemetry.sdk.trace import TracerProvider
    from prodlens.signals.sampling import ProdlensSampler

    provider = TracerProvider(sampler=ProdlensSampler(ratio=0.1, always=["customer:acme"]))
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    Decision,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, get_current_span
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from prodlens import _runtime
from prodlens._safety import internal_error, log_once
from prodlens._scope import SCOPE
from prodlens.config import ConfigError, Settings, load_settings
from prodlens.pseudonym import compute_pseudonym

__all__ = ["ProdlensSampler", "TokenBucket", "sampler_factory"]

_TRACE_ID_MASK: Final = TraceIdRatioBased.TRACE_ID_LIMIT


class TokenBucket:
    """At most ``rate`` takes per second on average, bursts up to ``burst``; thread-safe.

    Args:
        rate: tokens added per second (0: never any token).
        burst: bucket size; default ``max(rate, 1)`` (one second's worth), 0 when rate is 0.
        clock: seconds as a float, monotonic (injectable for tests).

    Example::

        >>> now = [0.0]
        >>> bucket = TokenBucket(2, clock=lambda: now[0])
        >>> [bucket.take() for _ in range(3)]
        [True, True, False]
        >>> now[0] = 0.5
        >>> bucket.take()
        True
    """

    def __init__(self, rate: float, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else (max(rate, 1.0) if rate > 0 else 0.0)
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Take one token if there is one."""
        with self._lock:
            now = self._clock()
            elapsed = now - self._last
            self._last = now
            if elapsed > 0:
                self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False


@dataclass(frozen=True)
class _Policy:
    """The sampler's settings, resolved once per prodlens settings generation."""

    bound: int
    customers: frozenset[str]
    pseudonyms: frozenset[str]
    cohorts: frozenset[tuple[str, str]]
    rate: float
    record_unsampled_roots: bool

    @property
    def watching(self) -> bool:
        return bool(self.customers or self.pseudonyms or self.cohorts)


def _watch_list(always: Sequence[str] | Sequence[tuple[str, str]] | str) -> tuple[
        tuple[str, str], ...]:
    """Parse a watch list with the settings' own grammar (raises ConfigError)."""
    spec = always if isinstance(always, str) else ",".join(
        item if isinstance(item, str) else f"{item[0]}:{item[1]}" for item in always)
    return load_settings({}, {"sample_always": spec}).sample_always


class ProdlensSampler(Sampler):
    """Keep every trace of watched customers/cohorts (capped), the rest at a ratio.

    Arguments left as None follow the prodlens settings in force (``prodlens.configure()``, the
    instrumentor, or else the ``PRODLENS_*`` environment variables), re-read when they change.

    Args:
        ratio: share of other root traces kept (0 to 1); default ``PRODLENS_SAMPLE_RATIO``.
        always: watch list, ``"customer:acme,plan:enterprise"`` or pairs such as
            ``[("customer", "acme")]``; default ``PRODLENS_SAMPLE_ALWAYS``.
        always_per_second: budget of forced decisions per second; default
            ``PRODLENS_SAMPLE_ALWAYS_PER_SECOND``.
        record_unsampled_roots: record (not export) unsampled request roots so the cohort
            metrics count them; default: when ``PRODLENS_METRICS`` is on.
        clock: monotonic seconds for the budget (tests inject a fake one).

    Raises:
        ConfigError: an explicit argument is invalid (at construction only).

    Example::

        >>> from opentelemetry.sdk.trace import TracerProvider
        >>> provider = TracerProvider(sampler=ProdlensSampler(ratio=0.1, always="customer:acme"))
    """

    def __init__(
        self,
        ratio: float | None = None,
        always: Sequence[str] | Sequence[tuple[str, str]] | str | None = None,
        always_per_second: float | None = None,
        *,
        record_unsampled_roots: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ratio is not None and not 0.0 <= ratio <= 1.0:
            raise ConfigError(f"PRODLENS_SAMPLE_RATIO={ratio} (from ProdlensSampler(ratio=...)) "
                              "is not valid: expected a number from 0 to 1")
        if always_per_second is not None and not always_per_second >= 0.0:
            raise ConfigError(
                f"PRODLENS_SAMPLE_ALWAYS_PER_SECOND={always_per_second} (from ProdlensSampler("
                "always_per_second=...)) is not valid: expected a number >= 0")
        self._always = None if always is None else _watch_list(always)
        self._ratio = ratio
        self._record_roots = record_unsampled_roots
        self._per_second = always_per_second
        self._clock = clock
        self._env_settings: Settings | None = None
        self._policy: _Policy | None = None
        self._generation = -1
        self._bucket = TokenBucket(0.0, clock=clock)
        self._lock = threading.Lock()

    # -- settings ---------------------------------------------------------------------------

    def _settings(self) -> Settings:
        runtime = _runtime.current()
        if runtime.configured:
            return runtime.settings
        if self._env_settings is None:
            try:
                self._env_settings = load_settings()
            except ConfigError as error:
                log_once("sampler-config-error", logging.ERROR,
                         "prodlens sampler: %s. Using the default sampling settings (keep every "
                         "trace).", error)
                self._env_settings = Settings()
        return self._env_settings

    def policy(self) -> _Policy:
        """The resolved settings (re-read when prodlens's configuration changes)."""
        runtime = _runtime.current()
        policy = self._policy
        if policy is not None and self._generation == runtime.generation:
            return policy
        with self._lock:
            settings = self._settings()
            ratio = self._ratio if self._ratio is not None else settings.sample_ratio
            watched = self._always if self._always is not None else settings.sample_always
            rate = (self._per_second if self._per_second is not None
                    else settings.sample_always_per_second)
            customers = frozenset(v for n, v in watched if n == "customer")
            key = settings.pseudonym_key
            pseudonyms = (frozenset(compute_pseudonym(c, key) for c in customers) if key
                          else frozenset())
            cohorts = frozenset((n, v) for n, v in watched if n != "customer")
            policy = _Policy(
                bound=TraceIdRatioBased.get_bound_for_rate(ratio),
                customers=customers, pseudonyms=pseudonyms, cohorts=cohorts, rate=rate,
                record_unsampled_roots=(self._record_roots if self._record_roots is not None
                                        else settings.metrics and settings.enabled),
            )
            if self._bucket.rate != rate:
                self._bucket = TokenBucket(rate, clock=self._clock)
            self._policy = policy
            self._generation = runtime.generation
            return policy

    # -- decisions --------------------------------------------------------------------------

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        # The SDK builds the span's attributes from the result's: always pass them through.
        parent = get_current_span(parent_context).get_span_context()
        parent_state = parent.trace_state if parent.is_valid else None
        try:
            if parent.is_valid and not parent.is_remote:
                # A local child follows its parent: never a partial trace.
                decision = (Decision.RECORD_AND_SAMPLE if parent.trace_flags.sampled
                            else Decision.DROP)
                return SamplingResult(decision, attributes, parent_state)
            policy = self.policy()
            if parent.is_valid:
                sampled = parent.trace_flags.sampled  # a remote parent decided for the trace
            else:
                sampled = (trace_id & _TRACE_ID_MASK) < policy.bound or (
                    policy.watching and self._watched(policy) and self._bucket.take()
                )
            if sampled:
                return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, parent_state)
            if policy.record_unsampled_roots and kind in (SpanKind.SERVER, SpanKind.CONSUMER):
                # Recorded (the cohort metrics count it) but not exported; children drop.
                return SamplingResult(Decision.RECORD_ONLY, attributes, parent_state)
            return SamplingResult(Decision.DROP, None, parent_state)
        except Exception as error:
            internal_error("sampling", error)
            sampled = parent.trace_flags.sampled if parent.is_valid else True
            return SamplingResult(Decision.RECORD_AND_SAMPLE if sampled else Decision.DROP,
                                  attributes, parent_state)

    @staticmethod
    def _watched(policy: _Policy) -> bool:
        scope = SCOPE.get()
        identity = None if scope is None else scope.identity
        if identity is None or not _runtime.current().on:
            return False
        if identity.customer is not None:
            customers = policy.pseudonyms if identity.pseudonymous else policy.customers
            if identity.customer in customers:
                return True
        if policy.cohorts:
            cohorts = policy.cohorts
            return any(pair in cohorts for pair in identity.cohorts.items())
        return False

    def get_description(self) -> str:
        policy = self._policy
        ratio = self._ratio if policy is None or self._ratio is not None else None
        shown = ratio if ratio is not None else (
            "settings" if policy is None else f"{policy.bound / (_TRACE_ID_MASK + 1):g}")
        return f"ProdlensSampler{{ratio={shown}}}"


def sampler_factory(arg: str | None = None) -> Sampler:
    """The ``OTEL_TRACES_SAMPLER=prodlens`` entry point; never raises.

    Args:
        arg: ``OTEL_TRACES_SAMPLER_ARG``: empty, or a ratio from 0 to 1 that overrides
            ``PRODLENS_SAMPLE_RATIO``. Anything else is logged once and ignored.

    Example::

        >>> sampler_factory("0.25").get_description()
        'ProdlensSampler{ratio=0.25}'
    """
    ratio: float | None = None
    try:
        text = (arg or "").strip()
        if text:
            try:
                ratio = float(text)
            except ValueError:
                ratio = None
            if ratio is None or not 0.0 <= ratio <= 1.0:
                log_once("sampler-arg", logging.ERROR,
                         "prodlens sampler: OTEL_TRACES_SAMPLER_ARG=%r is not valid: expected "
                         "empty or a ratio from 0 to 1; using PRODLENS_SAMPLE_RATIO instead.",
                         text)
                ratio = None
        return ProdlensSampler(ratio=ratio)
    except Exception as error:
        internal_error("sampler_factory", error)
        return ProdlensSampler()
