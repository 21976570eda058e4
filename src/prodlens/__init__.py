"""prodlens: tag every OpenTelemetry span with the customer and their cohorts.

Most production failures are partial: one region, one plan, one app version, one feature-flag
variant. prodlens puts *who a request was for* on every span, so any tracing backend can slice
failures by subgroup, and ``prodlens slice`` / ``prodlens affected`` answer which subgroup is
failing and who exactly was affected.

Example::

    from opentelemetry.sdk.trace import TracerProvider
    import prodlens

    provider = TracerProvider()
    prodlens.configure(provider)

    with prodlens.tag("acme", plan="pro", region="eu-west"):
        ...  # every span started here carries enduser.id=acme, prodlens.cohort.plan=pro, ...

Integrations live in ``prodlens.integrations.<framework>`` and are imported from there.
"""

from prodlens._configure import configure
from prodlens._scope import current, identify
from prodlens.config import ConfigError, Settings
from prodlens.decorators import arg, tag
from prodlens.identity import Identity
from prodlens.processor import ProdlensSpanProcessor
from prodlens.pseudonym import pseudonym

__all__ = [
    "ConfigError",
    "Identity",
    "ProdlensSpanProcessor",
    "Settings",
    "arg",
    "configure",
    "current",
    "identify",
    "pseudonym",
    "tag",
]

__version__ = "0.1.0"
