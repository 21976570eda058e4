"""Every attribute, baggage key and metric name prodlens writes, in one place.

The customer goes on ``enduser.id`` (OpenTelemetry semantic conventions) or, when pseudonymised,
on ``enduser.pseudo.id``; cohorts go under ``prodlens.cohort.<name>``. The customer attribute and
the cohort prefix are configurable (``PRODLENS_CUSTOMER_ATTRIBUTE``, ``PRODLENS_COHORT_PREFIX``);
everything else here is fixed.
"""

from __future__ import annotations

from typing import Final

#: Default span attribute for the customer id (semantic conventions ``enduser.id``).
DEFAULT_CUSTOMER_ATTRIBUTE: Final = "enduser.id"
#: Span attribute for a pseudonymised customer id (semantic conventions ``enduser.pseudo.id``).
PSEUDONYM_ATTRIBUTE: Final = "enduser.pseudo.id"
#: Default prefix of cohort attributes: ``plan`` becomes ``prodlens.cohort.plan``.
DEFAULT_COHORT_PREFIX: Final = "prodlens.cohort."
#: Value recorded instead of a cohort value past ``PRODLENS_MAX_COHORT_VALUES``.
OTHER_VALUE: Final = "__other__"

#: Number of requests the same customer made to the same route in the storm window.
REPEAT_COUNT_ATTRIBUTE: Final = "prodlens.repeat_count"

#: W3C baggage keys. The customer travels under ``prodlens.customer`` (or
#: ``prodlens.pseudo_customer`` when it is already a pseudonym, so that a downstream service does
#: not hash it twice); cohorts under ``prodlens.cohort.<name>``.
BAGGAGE_CUSTOMER_KEY: Final = "prodlens.customer"
BAGGAGE_PSEUDO_CUSTOMER_KEY: Final = "prodlens.pseudo_customer"
BAGGAGE_COHORT_PREFIX: Final = "prodlens.cohort."

#: Celery task-message header that carries identity from the producer to its own workers.
CELERY_HEADER: Final = "prodlens_identity"

#: Metric instrument names (RED metrics by cohort and refresh-storm signal).
METRIC_REQUESTS: Final = "prodlens.requests"
METRIC_DURATION: Final = "prodlens.request.duration"
METRIC_REPEATS: Final = "prodlens.requests.repeated"

#: Metric attribute names besides the cohorts.
METRIC_ROUTE: Final = "http.route"
METRIC_ERROR: Final = "error"
METRIC_STATUS_CLASS: Final = "http.status_class"
METRIC_SERVICE: Final = "service.name"
METRIC_CUSTOMER: Final = "customer"
#: Metric attribute of the overflow series, past ``PRODLENS_METRICS_MAX_SERIES`` (the
#: OpenTelemetry specification's name for it).
METRIC_OVERFLOW: Final = "otel.metric.overflow"
