"""What prodlens will be able to do in this environment, for ``prodlens config``.

Detects (without importing them) the frameworks prodlens integrates with and the OpenTelemetry
instrumentations installed, and says for each configured source what it can read here: a
``user`` source, for instance, yields nothing unless an authentication framework (or the
server's ``REMOTE_USER``) provides a user.
"""

from __future__ import annotations

import importlib.util
from importlib import metadata
from typing import Final

from prodlens.config import Settings

__all__ = ["describe_environment"]

#: Integration -> (what it is for, the modules whose presence it needs: any of them).
_FRAMEWORKS: Final = (
    ("flask", "Flask", ("flask",)),
    ("django", "Django", ("django",)),
    ("starlette", "Starlette / FastAPI", ("starlette",)),
    ("asgi", "any ASGI app traced by OpenTelemetry's ASGI middleware",
     ("opentelemetry.instrumentation.asgi",)),
    ("celery", "Celery", ("celery",)),
    ("openfeature", "OpenFeature", ("openfeature",)),
    ("outbound", "outbound HTTP (requests/urllib3, httpx, aiohttp)",
     ("urllib3", "httpcore", "aiohttp")),
)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken install
        return False


def _instrumentations() -> list[str]:
    names = {entry.name for entry in metadata.entry_points(group="opentelemetry_instrumentor")}
    return sorted(names - {"prodlens"})


def _source_notes(settings: Settings) -> list[str]:
    kinds = {source.kind for source in settings.customer_from}
    for sources in settings.cohort_sources.values():
        kinds.update(source.kind for source in sources)
    flask_login, django, starlette = (_installed(m) for m in ("flask_login", "django",
                                                              "starlette"))
    notes: list[str] = []
    if kinds & {"header", "cookie", "query", "jwt"}:
        notes.append("header, cookie, query, jwt: read from every request by each framework "
                     "integration (jwt claims are not verified: prodlens only labels telemetry)")
    if "baggage" in kinds:
        notes.append("baggage: read from the inbound `baggage` header; a client controls it, so "
                     "use it only behind your own services")
    if "path" in kinds:
        routers = [name for name, present in (("Flask", _installed("flask")), ("Django", django),
                                              ("Starlette/FastAPI", starlette)) if present]
        notes.append("path: read from the routed URL's parameters in " + ", ".join(routers)
                     if routers else "path: yields nothing here: no routing framework (Flask, "
                     "Django, Starlette/FastAPI) is installed")
    if "user" in kinds:
        providers = [name for name, present in (("Flask-Login", flask_login),
                                                ("Django auth", django),
                                                ("Starlette AuthenticationMiddleware",
                                                 starlette)) if present]
        notes.append(
            "user: read from " + ", ".join(providers) + " (and a WSGI server's REMOTE_USER)"
            if providers else
            "user: yields nothing unless the WSGI server sets REMOTE_USER: no authentication "
            "framework (Flask-Login, Django auth, Starlette's AuthenticationMiddleware) is "
            "installed. Call prodlens.identify(user_id) after login, or configure another "
            "source (e.g. PRODLENS_CUSTOMER_FROM=jwt:sub)")
    return notes


def describe_environment(settings: Settings) -> list[str]:
    """Lines describing the integrations, instrumentations and sources in this environment."""
    lines = ["Integrations (a framework found is patched under opentelemetry-instrument):"]
    for name, what, modules in _FRAMEWORKS:
        present = any(_installed(module) for module in modules)
        if name in settings.disabled_integrations:
            state = "disabled by PRODLENS_DISABLED_INTEGRATIONS"
        else:
            state = "found" if present else "not installed"
        lines.append(f"  {name:<12} {state:<14} {what}")
    found = _instrumentations()
    lines.append("OpenTelemetry instrumentations installed: "
                 + (", ".join(found) if found else
                    "none (install them with `opentelemetry-bootstrap -a install`)"))
    lines.append("Sources:")
    lines.extend(f"  {note}" for note in _source_notes(settings))
    return lines
