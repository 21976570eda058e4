"""A minimal FastAPI service tagged by prodlens with no prodlens import (zero-code set-up).

Run it under ``opentelemetry-instrument`` with the ``PRODLENS_*`` variables set (see README.md)::

    export PRODLENS_CUSTOMER_FROM=user,header:x-customer-id
    export PRODLENS_COHORT_PLAN_FROM=header:x-plan
    export PRODLENS_COHORT_TENANT_FROM=path:tenant
    opentelemetry-instrument python app.py

Routes:
    ``GET /t/{tenant}/orders``  lists the tenant's orders (one database span).
    ``GET /t/{tenant}/report``  a sync endpoint (runs in the thread pool), same query.

A request with ``Authorization: Basic`` credentials is authenticated by Starlette's
``AuthenticationMiddleware`` (any password; demo only): with ``PRODLENS_CUSTOMER_FROM=user`` its
user name becomes the customer, and tags the already open server span.

Environment:
    ``PORT``: port to listen on, on 127.0.0.1 only (default 8000).
"""

from __future__ import annotations

import base64
import binascii
import os
import sqlite3
from contextlib import closing
from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection


class BasicAuth(AuthenticationBackend):
    """Demo only: accepts any Basic credentials and trusts the user name."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        scheme, _, encoded = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            name = base64.b64decode(encoded).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return None
        return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None


app = FastAPI(title="orders")
app.add_middleware(AuthenticationMiddleware, backend=BasicAuth())


def _orders(tenant: str) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(":memory:")) as db:
        db.executescript("CREATE TABLE orders (tenant TEXT, sku TEXT);"
                         "INSERT INTO orders VALUES ('t1', 'beans'), ('t2', 'cups');")
        cursor = db.cursor()
        cursor.execute("SELECT sku FROM orders WHERE tenant = ?", (tenant,))
        return [{"sku": sku} for (sku,) in cursor.fetchall()]


@app.get("/t/{tenant}/orders")
async def orders(tenant: str) -> dict[str, Any]:
    return {"tenant": tenant, "orders": _orders(tenant)}


@app.get("/t/{tenant}/report")
def report(tenant: str) -> dict[str, Any]:
    return {"tenant": tenant, "count": len(_orders(tenant))}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")),
                log_level="warning")
