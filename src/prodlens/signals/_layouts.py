"""What the cohort-metrics processor derives from the settings, and its bounded caches.

:class:`Derived` holds, per settings generation, what the processor reads per request and its
caches: attribute :class:`Layout`s by key tuple (how to read the metric attributes of root
spans whose keys come in one order) and the series of each request shape seen before, so a
request like an earlier one costs a few dict look-ups. A settings change starts empty caches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Final

from opentelemetry.util.types import AttributeValue

from prodlens import attributes
from prodlens.config import Settings
from prodlens.pseudonym import compute_pseudonym
from prodlens.signals._series import Series
from prodlens.signals._topk import TopCustomers

__all__ = ["MAX_LAYOUTS", "MAX_SHAPES", "Derived", "Layout", "customer_label", "derive"]

_STATUS_KEYS: Final = ("http.response.status_code", "http.status_code")
#: Distinct attribute-key orders of request roots remembered (a handful per application).
MAX_LAYOUTS: Final = 64
#: Request shapes (raw attribute values -> series) remembered; the table is emptied when full.
MAX_SHAPES: Final = 4096


class Layout:
    """How to read the metric attributes of root spans whose attribute keys come in one order.

    Built once per distinct key tuple (one per framework and identity shape, in practice): the
    cohort keys (sorted by name), which route and HTTP status keys are there, where the repeat
    count and the customer are, and one getter that reads them all.
    """

    __slots__ = ("cohorts", "customer_at", "pseudonymous", "read", "repeat_at", "route_at",
                 "status_at", "width")

    def __init__(self, keys: tuple[str, ...], derived: Derived) -> None:
        present = set(keys)
        self.cohorts = tuple(sorted(k for k in present if k.startswith(derived.prefix)))
        read = list(self.cohorts)
        self.route_at = self.status_at = self.repeat_at = self.customer_at = -1
        if attributes.METRIC_ROUTE in present:
            self.route_at = len(read)
            read.append(attributes.METRIC_ROUTE)
        status_key = next((k for k in _STATUS_KEYS if k in present), None)
        if status_key is not None:
            self.status_at = len(read)
            read.append(status_key)
        #: Values up to here identify the series; the rest are read for other uses.
        self.width = len(read)
        if attributes.REPEAT_COUNT_ATTRIBUTE in present:
            self.repeat_at = len(read)
            read.append(attributes.REPEAT_COUNT_ATTRIBUTE)
        self.pseudonymous = attributes.PSEUDONYM_ATTRIBUTE in present
        if derived.per_customer:
            customer_key = (derived.customer_attribute if derived.customer_attribute in present
                            else attributes.PSEUDONYM_ATTRIBUTE if self.pseudonymous else None)
            if customer_key is not None:
                self.customer_at = len(read)
                read.append(customer_key)
        self.read: Callable[[Mapping[str, AttributeValue]], tuple[AttributeValue, ...]]
        if len(read) > 1:
            self.read = itemgetter(*read)
        elif read:
            only = read[0]
            self.read = lambda attrs: (attrs[only],)
        else:
            self.read = lambda attrs: ()


@dataclass(frozen=True, eq=False)
class Derived:
    """What the processor reads per request, derived once per settings generation.

    Also holds the per-generation caches (bounded): attribute layouts by key tuple, and the
    series of each request shape, so a request seen before costs a few dict look-ups. A
    settings change starts empty caches, so no cached budget decision outlives its settings.
    """

    generation: int
    prefix: str
    customer_attribute: str
    listed: frozenset[str]
    listed_pseudonyms: frozenset[str]
    top: TopCustomers | None
    threshold: int
    layouts: dict[tuple[str, ...], Layout] = field(default_factory=dict)
    shapes: dict[tuple[object, ...], Series] = field(default_factory=dict)

    @property
    def per_customer(self) -> bool:
        return bool(self.listed) or self.top is not None

    def layout(self, keys: tuple[str, ...]) -> Layout:
        """The layout for ``keys`` (built and remembered on first sight)."""
        found = self.layouts.get(keys)
        if found is None:
            found = Layout(keys, self)
            if len(self.layouts) >= MAX_LAYOUTS:
                self.layouts.clear()
            self.layouts[keys] = found
        return found

    def remember(self, shape: tuple[object, ...], series: Series) -> None:
        """Cache the series of a request shape (the table is emptied when full)."""
        shapes = self.shapes
        if len(shapes) >= MAX_SHAPES:
            shapes.clear()
        shapes[shape] = series


def derive(settings: Settings, generation: int) -> Derived:
    """What the processor needs of ``settings``, with empty caches."""
    listed = frozenset(settings.metrics_customers)
    key = settings.pseudonym_key
    pseudonyms = frozenset(compute_pseudonym(c, key) for c in listed) if key else frozenset()
    top = TopCustomers(settings.metrics_top_customers) if settings.metrics_top_customers else None
    return Derived(generation, settings.cohort_prefix, settings.customer_attribute, listed,
                    pseudonyms, top, settings.storm_threshold)


def customer_label(derived: Derived, layout: Layout, values: tuple[AttributeValue, ...]) -> str:
    """The ``customer`` metric label of a request: itself when listed or among the busiest,
    else ``__other__``."""
    value = values[layout.customer_at]
    customer = value if isinstance(value, str) else str(value)
    listed = derived.listed_pseudonyms if layout.pseudonymous else derived.listed
    if customer in listed:
        return customer
    if derived.top is not None:
        return derived.top.label(customer)
    return attributes.OTHER_VALUE
