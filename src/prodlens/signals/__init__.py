"""Cohort signals: RED metrics by cohort, cohort-aware sampling, refresh-storm tagging.

``prodlens.configure()`` attaches the metrics processor itself when ``PRODLENS_METRICS`` is on;
importing this package registers nothing.

Example::

    from opentelemetry.sdk.trace import TracerProvider
    import prodlens
    from prodlens.signals import ProdlensSampler

    provider = TracerProvider(sampler=ProdlensSampler(ratio=0.1, always="plan:enterprise"))
    prodlens.configure(provider)  # tagging + cohort metrics (global meter provider) + storms
"""

from prodlens.signals.metrics import CohortMetricsProcessor
from prodlens.signals.sampling import ProdlensSampler, TokenBucket, sampler_factory
from prodlens.signals.storms import RepeatTracker, StormSpanProcessor

__all__ = [
    "CohortMetricsProcessor",
    "ProdlensSampler",
    "RepeatTracker",
    "StormSpanProcessor",
    "TokenBucket",
    "sampler_factory",
]
