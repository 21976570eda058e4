"""RED metrics by cohort, recorded from local root spans as they end.

No per-framework code: every local root span of kind SERVER or CONSUMER (a request, a consumed
message; its parent is absent or remote) becomes one count on ``prodlens.requests`` and one
duration on ``prodlens.request.duration`` (seconds, semantic-conventions HTTP server buckets),
attributed by:

* every cohort on the span (``prodlens.cohort.<name>``, the configured prefix),
* ``http.route`` (the span's ``http.route``; a server span without one, such as a 404 or a
  plain WSGI/ASGI app, gets ``__unmatched__``, never its name, which may hold the raw path with
  ids or emails; a consumer span without one, its name: the task or destination),
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
meter provider collects). The histogram is synchronous, but a measurement costs ~10 us in the
SDK (it validates and hashes the attribute set every time): prodlens queues each request's
duration (at most ``MAX_PENDING_DURATIONS``; past it, it records at once) and records the queue
when the meter provider collects, before it reads the histogram, so every collection holds
every request that ended before it. The durations carry no exemplars: when a root span ends its
trace is no longer the current context, and an exemplar would point at the wrong span or none.
Environment variables::

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

import threading
from collections import deque
from collections.abc import Iterable
from typing import Final

from opentelemetry import metrics
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Histogram, MeterProvider, Observation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util.types import AttributeValue

from prodlens import _runtime, attributes
from prodlens._safety import guard, internal_error
from prodlens._stamp import attribute_dict
from prodlens.signals._layouts import (
    Derived,
    Layout,
    customer_label,
    derive,
)
from prodlens.signals._series import Point, Series, SeriesTable
from prodlens.signals.storms import RepeatTracker, StormTagger, is_request_root

__all__ = ["DURATION_BUCKETS", "CohortMetricsProcessor"]

#: Semantic-conventions buckets for ``http.server.request.duration`` (seconds).
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                           5.0, 7.5, 10.0)
_STATUS_CLASSES: Final = {n: f"{n}xx" for n in range(1, 6)}
_TRUE: Final = "true"
#: ``http.route`` of a server span that has none (unrouted: one series, whatever the path).
UNMATCHED_ROUTE: Final = "__unmatched__"
_FALSE: Final = "false"



#: Durations waiting for the next collection; past it, a duration is recorded at once.
MAX_PENDING_DURATIONS: Final = 4096
#: Durations are recorded outside any span (no exemplars: see the module docstring). Not an
#: empty Context: the SDK takes ``context or get_current()``, and an empty one is falsy.
_NO_CONTEXT: Final = Context({"prodlens.metrics": True})


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
        storms: also track refresh storms (``prodlens.repeat_count`` and the storm metric)
            while ``PRODLENS_STORMS`` is on; False: never.
        repeat_tracker: an explicit storm tracker (tests); default: built from the settings.
        duration: record the duration histogram (the costliest part: ~10 us per request in
            the SDK); False keeps the request and repeat counters only.

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
        duration: bool = True,
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
        self._duration: Histogram | None = meter.create_histogram(
            attributes.METRIC_DURATION, unit="s",
            description="Duration of requests by cohort, route and outcome.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        ) if duration else None
        meter.create_observable_counter(
            attributes.METRIC_REPEATS, callbacks=[self._observe_repeats], unit="{request}",
            description="Requests whose prodlens.repeat_count reached PRODLENS_STORM_THRESHOLD.",
        )
        self.storms = StormTagger(repeat_tracker) if storms else None
        #: (seconds, attribute set) per request, recorded into the histogram at collection.
        self._pending_durations: deque[tuple[float, Point]] = deque()
        self._derived: Derived | None = None
        #: The last span resource seen and its service.name (one per tracer provider).
        self._service_of: tuple[Resource | None, AttributeValue | None] = (None, None)
        self._lock = threading.Lock()

    def series_count(self) -> int:
        """Distinct attribute sets recorded so far (bounded by PRODLENS_METRICS_MAX_SERIES)."""
        return len(self._series)

    def cache_sizes(self) -> tuple[int, int]:
        """(attribute layouts, request shapes) cached now; bounded by MAX_LAYOUTS, MAX_SHAPES."""
        derived = self._derived
        return (0, 0) if derived is None else (len(derived.layouts), len(derived.shapes))

    def flush_durations(self) -> int:
        """Record the durations waiting for the next collection; how many there were.

        Called by the meter provider's collection (before it reads the histogram), by
        ``force_flush`` and ``shutdown``; call it before reading the histogram some other way.
        """
        duration = self._duration
        pending = self._pending_durations
        flushed = 0
        if duration is None:
            return flushed
        record = duration.record
        pop = pending.popleft
        # Only what is there now: requests keep appending while this runs.
        for _ in range(len(pending)):
            try:
                value, point = pop()
            except IndexError:
                break
            record(value, point, context=_NO_CONTEXT)
            flushed += 1
        return flushed

    def _observe_requests(self, options: CallbackOptions) -> Iterable[Observation]:
        # The SDK runs the asynchronous instruments' callbacks before it reads the synchronous
        # ones, so durations flushed here are in this very collection.
        with guard("cohort metrics: durations"):
            self.flush_durations()
        return [Observation(requests, point) for point, requests, _ in self._series.snapshot()]

    def _observe_repeats(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(repeats, point) for point, _, repeats in self._series.snapshot()
                if repeats]

    def _settings(self) -> Derived:
        runtime = _runtime.current()
        derived = self._derived
        if derived is not None and derived.generation == runtime.generation:
            return derived
        with self._lock:
            derived = self._derived
            if derived is None or derived.generation != runtime.generation:
                derived = self._derived = derive(runtime.settings, runtime.generation)
                self._series.limit = runtime.settings.metrics_max_series
            return derived

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        storms = self.storms
        if storms is None:
            return
        try:
            if _runtime.current().on:
                storms.start(span)
        except Exception as error:
            internal_error("storm tracking", error)

    def on_end(self, span: ReadableSpan) -> None:
        try:  # per span: see ProdlensSpanProcessor.on_start on guard
            if not is_request_root(span):  # most spans are children: the cheapest test first
                return
            runtime = _runtime.current()
            if not runtime.on:
                return
            derived = self._derived
            if derived is None or derived.generation != runtime.generation:
                derived = self._settings()
            self._record(span, derived)
        except Exception as error:
            internal_error("cohort metrics", error)

    def _record(self, span: ReadableSpan, derived: Derived) -> None:
        attrs = attribute_dict(span)
        # An ended span's attribute keys iterate as a plain dict: one tuple, one look-up.
        keys = tuple(attrs)
        layout = derived.layouts.get(keys)
        if layout is None:
            layout = derived.layout(keys)
        values = layout.read(attrs)
        error = span.status.status_code is StatusCode.ERROR
        resource = span.resource
        service_of = self._service_of  # one read: another provider's thread may replace it
        if service_of[0] is not resource:
            service_of = self._service_of = (
                resource, resource.attributes.get(attributes.METRIC_SERVICE))
        service = service_of[1]
        label = (customer_label(derived, layout, values) if layout.customer_at >= 0
                 else attributes.OTHER_VALUE if derived.per_customer else None)
        identifying = values[:layout.width] if layout.width < len(values) else values
        # A consumer's name stands in for its missing route, so it is part of the shape then.
        named = (layout.route_at < 0 or values[layout.route_at] is None) \
            and span.kind is SpanKind.CONSUMER
        shape = (layout, identifying, span.name if named else None, error, service, label)
        try:
            series = derived.shapes.get(shape)
            cacheable = True
        except TypeError:  # an unhashable attribute value (not from the SDK): no caching
            series, cacheable = None, False
        if series is None:
            series = self._series_of(span, derived, layout, values, error, service, label)
            if cacheable:
                derived.remember(shape, series)
        repeated = False
        storms = self.storms
        if storms is not None:
            if layout.repeat_at >= 0:
                repeats = values[layout.repeat_at]
                repeated = isinstance(repeats, int) and repeats >= derived.threshold
            else:
                # Not tagged while open (identity or route known late, no child span).
                counted = storms.count_untagged(span, attrs)
                repeated = counted is not None and counted >= derived.threshold
        with self._series.lock:
            series.requests += 1
            if repeated:
                series.repeats += 1
        duration = self._duration
        if duration is not None:
            start, end = span.start_time, span.end_time
            if start is not None and end is not None:
                seconds = max(end - start, 0) / 1e9
                pending = self._pending_durations
                if len(pending) < MAX_PENDING_DURATIONS:
                    pending.append((seconds, series.attributes))
                else:  # nobody collects (or not often enough): record now, memory stays bounded
                    duration.record(seconds, series.attributes, context=_NO_CONTEXT)

    def _series_of(self, span: ReadableSpan, derived: Derived, layout: Layout,
                   values: tuple[AttributeValue, ...], error: bool,
                   service: AttributeValue | None, label: str | None) -> Series:
        """The series of a request shape not seen before (builds its attribute set)."""
        items: list[tuple[str, AttributeValue]] = list(zip(layout.cohorts, values, strict=False))
        route = values[layout.route_at] if layout.route_at >= 0 else None
        if route is None:
            route = span.name if span.kind is SpanKind.CONSUMER else UNMATCHED_ROUTE
        items.append((attributes.METRIC_ROUTE, route))
        error_text = _TRUE if error else _FALSE
        items.append((attributes.METRIC_ERROR, error_text))
        if layout.status_at >= 0:
            status_class = _status_class(values[layout.status_at])
            if status_class is not None:
                items.append((attributes.METRIC_STATUS_CLASS, status_class))
        if service is not None:
            items.append((attributes.METRIC_SERVICE, service))
        if label is not None:
            items.append((attributes.METRIC_CUSTOMER, label))
        return self._series.get(tuple(items), error_text)

    def shutdown(self) -> None:
        with guard("cohort metrics: durations"):
            self.flush_durations()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        with guard("cohort metrics: durations"):
            self.flush_durations()
        return True


def _status_class(status: AttributeValue) -> str | None:
    try:
        code = int(status)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return _STATUS_CLASSES.get(code // 100)
