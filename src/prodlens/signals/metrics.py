"""RED metrics by cohort, recorded from local root spans as they end.

No per-framework code: every local root span of kind SERVER or CONSUMER (a request, a consumed
message; its parent is absent or remote) becomes one count on ``prodlens.requests`` and one
duration on ``prodlens.request.duration`` (seconds, semantic-conventions HTTP server buckets),
attributed by:

* every cohort on the span (``prodlens.cohort.<name>``, the configured prefix),
* ``http.route`` (the span's ``http.route``, else its name),
* ``error`` (``"true"`` when the span's status is ERROR, else ``"false"``),
* ``http.status_class`` (``"2xx"`` … ``"5xx"``) when the span has an HTTP status code,
* ``service.name`` (from the span's resource),
* ``customer`` only when asked for: the customers in ``PRODLENS_METRICS_CUSTOMERS``, or the
  ``PRODLENS_METRICS_TOP_CUSTOMERS`` busiest ones; every other customer is ``__other__``.

Requests whose ``prodlens.repeat_count`` reaches ``PRODLENS_STORM_THRESHOLD`` are also counted on
``prodlens.requests.repeated`` (same attributes).

Series are bounded: at most ``PRODLENS_METRICS_MAX_SERIES`` distinct attribute sets (shared by
the three instruments); past it, points go to ``{otel.metric.overflow: true, error: ...}``
(logged once). The two counters are asynchronous (totalled by prodlens, reported when the
meter provider collects); the histogram is synchronous. Environment variables::

    export PRODLENS_METRICS=true
    export PRODLENS_METRICS_CUSTOMERS=acme,globex
    export PRODLENS_METRICS_TOP_CUSTOMERS=0
    export PRODLENS_METRICS_MAX_SERIES=2000

``prodlens.configure()`` and the instrumentor attach :class:`CohortMetricsProcessor` to the
tracer provider (it records through the global meter provider). With an explicit meter
provider::

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    import prodlens
    from prodlens.signals.metrics import CohortMetricsProcessor

    meter_provider = MeterProvider(metric_readers=[...])
    provider = TracerProvider(sampler=prodlens.signals.ProdlensSampler())
    prodlens.configure(provider, metrics=False)  # tagging only; metrics added explicitly below
    provider.add_span_processor(CohortMetricsProcessor(meter_provider=meter_provider))
"""

from __future__ import annotations

import heapq
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Final

from opentelemetry import metrics
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import StatusCode
from opentelemetry.util.types import AttributeValue

from prodlens import _runtime, attributes
from prodlens._configure import register_processor_factory
from prodlens._safety import internal_error, log_once
from prodlens.config import Settings
from prodlens.pseudonym import compute_pseudonym
from prodlens.signals.storms import REQUEST_KINDS, RepeatTracker, StormTagger, customer_of

__all__ = ["DURATION_BUCKETS", "CohortMetricsProcessor", "TopCustomers", "processor_factory"]

#: Semantic-conventions buckets for ``http.server.request.duration`` (seconds).
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                           5.0, 7.5, 10.0)
_STATUS_KEYS: Final = ("http.response.status_code", "http.status_code")
_STATUS_CLASSES: Final = {n: f"{n}xx" for n in range(1, 6)}
_TRUE: Final = "true"
_FALSE: Final = "false"

PointKey = tuple[tuple[str, AttributeValue], ...]
Point = Mapping[str, AttributeValue]


class TopCustomers:
    """The K busiest customers by request count (Space-Saving sketch; bounded, thread-safe).

    Counts are kept for at most ``8 * k`` customers (at least 64); when a new customer arrives
    and the table is full, it replaces the least-counted one and inherits its count (the
    Space-Saving algorithm, whose top entries are the true heavy hitters). The top-K set is
    recomputed after 1, 2, 4 … 1024 observations, then every 1024.

    Example::

        >>> top = TopCustomers(1)
        >>> [top.label(c) for c in ("acme", "acme", "globex")]
        ['acme', 'acme', '__other__']
    """

    def __init__(self, k: int) -> None:
        self._k = k
        self._capacity = max(8 * k, 64)
        self._counts: dict[str, int] = {}
        self._top: frozenset[str] = frozenset()
        self._seen = 0
        self._lock = threading.Lock()

    def label(self, customer: str) -> str:
        """Observe one request of ``customer``; its metric label (itself or ``__other__``)."""
        with self._lock:
            counts = self._counts
            if customer in counts:
                counts[customer] += 1
            elif len(counts) < self._capacity:
                counts[customer] = 1
            else:
                smallest = min(counts, key=counts.__getitem__)
                counts[customer] = counts.pop(smallest) + 1
            self._seen += 1
            seen = self._seen
            if seen & 1023 == 0 or (seen < 1024 and seen & (seen - 1) == 0):
                self._top = frozenset(heapq.nlargest(self._k, counts, key=counts.__getitem__))
        return customer if customer in self._top else attributes.OTHER_VALUE


class Series:
    """One attribute set and its request and repeat totals (kept here, reported at collection)."""

    __slots__ = ("attributes", "repeats", "requests")

    def __init__(self, point: Point) -> None:
        self.attributes = point
        self.requests = 0
        self.repeats = 0


class SeriesTable:
    """Distinct metric attribute sets with their totals, bounded; thread-safe.

    Past ``limit`` sets, every new set is recorded under the overflow set
    ``{otel.metric.overflow: true, error: ...}`` (logged once, naming the setting).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._series: dict[PointKey, Series] = {}
        self.lock = threading.Lock()
        self._overflow: dict[str, Series] = {
            flag: Series({attributes.METRIC_OVERFLOW: True, attributes.METRIC_ERROR: flag})
            for flag in (_TRUE, _FALSE)
        }

    def __len__(self) -> int:
        return len(self._series)

    def get(self, key: PointKey, error: str) -> Series:
        """The series for ``key`` (an attribute-item tuple), or the overflow series."""
        found = self._series.get(key)
        if found is not None:
            return found
        with self.lock:
            found = self._series.get(key)
            if found is not None:
                return found
            if len(self._series) >= self.limit:
                log_once(
                    "limit:metrics_max_series", logging.WARNING,
                    "prodlens: the cohort metrics reached %d distinct attribute sets; further "
                    "new sets are recorded under %s=true. Raise PRODLENS_METRICS_MAX_SERIES to "
                    "allow more (each set is one time series per instrument in your backend).",
                    self.limit, attributes.METRIC_OVERFLOW,
                )
                return self._overflow[error]
            found = self._series[key] = Series(dict(key))
            return found

    def snapshot(self) -> list[tuple[Point, int, int]]:
        """(attributes, requests, repeats) of every series that recorded something."""
        with self.lock:
            every = [*self._series.values(), *self._overflow.values()]
            return [(x.attributes, x.requests, x.repeats) for x in every if x.requests]


@dataclass(frozen=True)
class _Derived:
    """What the processor reads per request, derived once per settings generation."""

    generation: int
    prefix: str
    customer_attribute: str
    listed: frozenset[str]
    listed_pseudonyms: frozenset[str]
    top: TopCustomers | None
    threshold: int


def _derive(settings: Settings, generation: int) -> _Derived:
    listed = frozenset(settings.metrics_customers)
    key = settings.pseudonym_key
    pseudonyms = frozenset(compute_pseudonym(c, key) for c in listed) if key else frozenset()
    top = TopCustomers(settings.metrics_top_customers) if settings.metrics_top_customers else None
    return _Derived(generation, settings.cohort_prefix, settings.customer_attribute, listed,
                    pseudonyms, top, settings.storm_threshold)


class CohortMetricsProcessor(SpanProcessor):
    """Records RED metrics by cohort (and the storm metric) from request root spans.

    Also writes ``prodlens.repeat_count`` on request roots (see :mod:`prodlens.signals.storms`).
    Add it after prodlens's tagging processor, so cohorts are on the span when it starts.
    Settings come from the prodlens configuration in force (``prodlens.configure()`` or the
    environment) and are re-read when it changes. Inert while prodlens is disabled.

    Every request counts whatever the sampling decision, provided the sampler records the
    unsampled request roots instead of dropping them (the SDK calls no processor for a DROP):
    :class:`prodlens.signals.sampling.ProdlensSampler` does.

    Args:
        meter_provider: where to record; default: the global meter provider.
        storms: also track refresh storms (``prodlens.repeat_count`` and the storm metric).
        repeat_tracker: an explicit storm tracker (tests); default: built from the settings.

    Example::

        >>> from opentelemetry.sdk.metrics import MeterProvider
        >>> from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        >>> from opentelemetry.sdk.trace import TracerProvider
        >>> import prodlens
        >>> reader = InMemoryMetricReader()
        >>> provider = TracerProvider()
        >>> _ = prodlens.configure(provider, environ={}, metrics=False)
        >>> provider.add_span_processor(
        ...     CohortMetricsProcessor(meter_provider=MeterProvider(metric_readers=[reader])))
    """

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        *,
        storms: bool = True,
        repeat_tracker: RepeatTracker | None = None,
    ) -> None:
        from prodlens import __version__

        provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        meter = provider.get_meter("prodlens", __version__)
        # The two counters are totalled here and reported at collection (asynchronous
        # counters): a synchronous SDK measurement costs ~10 us with 8 attributes, a dict
        # look-up and an increment well under 1 us. Durations need the SDK's histogram.
        self._series = SeriesTable(_runtime.current().settings.metrics_max_series)
        meter.create_observable_counter(
            attributes.METRIC_REQUESTS, callbacks=[self._observe_requests], unit="{request}",
            description="Requests (local root server/consumer spans) by cohort, route, outcome.",
        )
        self._duration = meter.create_histogram(
            attributes.METRIC_DURATION, unit="s",
            description="Duration of requests by cohort, route and outcome.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        meter.create_observable_counter(
            attributes.METRIC_REPEATS, callbacks=[self._observe_repeats], unit="{request}",
            description="Requests whose prodlens.repeat_count reached PRODLENS_STORM_THRESHOLD.",
        )
        self.storms = StormTagger(repeat_tracker) if storms else None
        self._derived: _Derived | None = None
        self._lock = threading.Lock()

    def series_count(self) -> int:
        """Distinct attribute sets recorded so far (bounded by PRODLENS_METRICS_MAX_SERIES)."""
        return len(self._series)

    def _observe_requests(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(requests, point) for point, requests, _ in self._series.snapshot()]

    def _observe_repeats(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(repeats, point) for point, _, repeats in self._series.snapshot()
                if repeats]

    def _settings(self) -> _Derived:
        runtime = _runtime.current()
        derived = self._derived
        if derived is not None and derived.generation == runtime.generation:
            return derived
        with self._lock:
            derived = self._derived
            if derived is None or derived.generation != runtime.generation:
                derived = self._derived = _derive(runtime.settings, runtime.generation)
                self._series.limit = runtime.settings.metrics_max_series
            return derived

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            if self.storms is not None and _runtime._current.on:
                self.storms.start(span)
        except Exception as error:
            internal_error("storm tracking", error)

    def on_end(self, span: ReadableSpan) -> None:
        try:
            parent = span.parent
            if (parent is not None and not parent.is_remote) or span.kind not in REQUEST_KINDS:
                return
            if not _runtime._current.on:
                return
            self._record(span)
        except Exception as error:
            internal_error("cohort metrics", error)

    def _record(self, span: ReadableSpan) -> None:
        derived = self._settings()
        attrs: Mapping[str, AttributeValue] = span.attributes or {}
        prefix = derived.prefix
        # Keys first: iterating an ended span's attribute keys is a plain dict iteration,
        # while items() goes through the Mapping ABC (several times slower).
        items: list[tuple[str, AttributeValue]] = [
            (key, attrs[key]) for key in attrs if key.startswith(prefix)
        ]
        if len(items) > 1:
            items.sort(key=itemgetter(0))  # one key per set, whatever the identity's order
        route = attrs.get(attributes.METRIC_ROUTE)
        items.append((attributes.METRIC_ROUTE, route if route is not None else span.name))
        error = _TRUE if span.status.status_code is StatusCode.ERROR else _FALSE
        items.append((attributes.METRIC_ERROR, error))
        for status_key in _STATUS_KEYS:
            status = attrs.get(status_key)
            if status is not None:
                status_class = _status_class(status)
                if status_class is not None:
                    items.append((attributes.METRIC_STATUS_CLASS, status_class))
                break
        service = span.resource.attributes.get(attributes.METRIC_SERVICE)
        if service is not None:
            items.append((attributes.METRIC_SERVICE, service))
        if derived.listed or derived.top is not None:
            items.append((attributes.METRIC_CUSTOMER, self._customer_label(derived, attrs)))
        series = self._series.get(tuple(items), error)
        repeated = False
        if self.storms is not None:
            repeats = self.storms.end(span, attrs)
            repeated = repeats is not None and repeats >= derived.threshold
        with self._series.lock:
            series.requests += 1
            if repeated:
                series.repeats += 1
        start, end = span.start_time, span.end_time
        if start is not None and end is not None:
            self._duration.record(max(end - start, 0) / 1e9, series.attributes)

    @staticmethod
    def _customer_label(derived: _Derived, attrs: Mapping[str, AttributeValue]) -> str:
        customer = customer_of(attrs, derived.customer_attribute)
        if customer is None:
            return attributes.OTHER_VALUE
        pseudonymous = attributes.PSEUDONYM_ATTRIBUTE in attrs
        listed = derived.listed_pseudonyms if pseudonymous else derived.listed
        if customer in listed:
            return customer
        if derived.top is not None:
            return derived.top.label(customer)
        return attributes.OTHER_VALUE

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _status_class(status: AttributeValue) -> str | None:
    try:
        code = int(status)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return _STATUS_CLASSES.get(code // 100)


def processor_factory(settings: Settings, provider: TracerProvider) -> SpanProcessor | None:
    """The processor ``prodlens.configure()`` attaches: metrics (with storms) when
    ``PRODLENS_METRICS`` is on, recording through the global meter provider."""
    if not settings.metrics:
        return None
    return CohortMetricsProcessor()


register_processor_factory(processor_factory)
