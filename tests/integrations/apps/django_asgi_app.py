"""A Django project with sessions and ``django.contrib.auth``, served by uvicorn (ASGI), traced by
the real SDK with prodlens reading ``user`` sources. Run: ``django_asgi_app.py DB_PATH PORT``.

``/login`` logs ``alice`` in (a session cookie); ``/whoami`` (async view) and ``/whoami-sync``
(sync view, run by Django in a thread) answer with prodlens's current customer; ``/spans``
answers with the prodlens attributes of every server span so far."""

from __future__ import annotations

import sys

import django
from django.conf import settings

settings.configure(
    DEBUG=False, SECRET_KEY="prodlens-tests", ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__,
    MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware",
                "django.contrib.auth.middleware.AuthenticationMiddleware"],
    INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes",
                    "django.contrib.sessions"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": sys.argv[1]}},
    USE_TZ=True,
)

from opentelemetry.instrumentation.django import DjangoInstrumentor  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind  # noqa: E402

import prodlens  # noqa: E402
from prodlens.instrumentor import ProdlensInstrumentor  # noqa: E402

provider = TracerProvider()
exporter = InMemorySpanExporter()
provider.add_span_processor(SimpleSpanProcessor(exporter))
ProdlensInstrumentor().instrument(tracer_provider=provider, environ={
    "PRODLENS_CUSTOMER_FROM": "user:username", "PRODLENS_COHORT_PLAN_FROM": "user:first_name",
    "PRODLENS_METRICS": "false"})
DjangoInstrumentor().instrument(tracer_provider=provider)
django.setup()

from django.contrib.auth import aauthenticate, alogin  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

call_command("migrate", verbosity=0)
User.objects.create_user("alice", password="secret", first_name="gold")


def customer() -> JsonResponse:
    identity = prodlens.current()
    return JsonResponse({"customer": identity.customer if identity else None})


async def login(request: object) -> JsonResponse:
    user = await aauthenticate(request, username="alice", password="secret")
    await alogin(request, user)
    return JsonResponse({"ok": True})


async def whoami(request: object) -> JsonResponse:
    return customer()


def whoami_sync(request: object) -> JsonResponse:
    return customer()


def spans(request: object) -> JsonResponse:
    out = [{"name": s.name, "tags": {k: v for k, v in (s.attributes or {}).items()
                                     if k == "enduser.id" or k.startswith("prodlens.")}}
           for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    return JsonResponse(out, safe=False)


urlpatterns = [path("login", login), path("whoami", whoami), path("whoami-sync", whoami_sync),
               path("spans", spans)]

if __name__ == "__main__":
    import uvicorn
    from django.core.asgi import get_asgi_application

    uvicorn.run(get_asgi_application(), host="127.0.0.1", port=int(sys.argv[2]),
                log_level="warning", lifespan="off")
