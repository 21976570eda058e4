"""A minimal Django project in one module (settings, URLs, views, a late auth middleware)."""

from __future__ import annotations

import sqlite3
from types import SimpleNamespace
from typing import Any

import django
from django.conf import settings

MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    # Authentication placed last on purpose: prodlens must read request.user after it.
    "django_app.LateAuthMiddleware",
]


def setup() -> None:
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="prodlens-tests",
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF="django_app",
            MIDDLEWARE=list(MIDDLEWARE),
            INSTALLED_APPS=[],
            DATABASES={},
            USE_TZ=True,
        )
        django.setup()


class LateAuthMiddleware:
    """Authenticates from the ``x-user`` header (like RemoteUserMiddleware), placed late."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        uid = request.META.get("HTTP_X_USER")
        request.user = (SimpleNamespace(is_authenticated=True, pk=uid, plan="gold") if uid
                        else SimpleNamespace(is_authenticated=False, pk=None))
        return self.get_response(request)


def work(request: Any, tenant: str) -> Any:
    from django.http import JsonResponse

    import prodlens

    db = sqlite3.connect(":memory:")
    db.cursor().execute("select 1").fetchall()
    db.close()
    echoed = None
    downstream = request.GET.get("downstream")
    if downstream:
        import requests

        echoed = requests.get(downstream + "/echo", timeout=5).json()["baggage"]
    identity = prodlens.current()
    return JsonResponse({"customer": identity.customer if identity else None,
                         "baggage": echoed})


def _patterns() -> list[Any]:
    from django.urls import path

    return [path("t/<str:tenant>/work", work)]


def __getattr__(name: str) -> Any:
    if name == "urlpatterns":
        return _patterns()
    raise AttributeError(name)
