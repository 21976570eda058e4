"""A minimal Flask shop, tagged by prodlens with no prodlens import (zero-code set-up).

Run it under ``opentelemetry-instrument`` with the ``PRODLENS_*`` variables set (see README.md);
every span of a request then carries the customer and the cohorts read from its headers::

    export PRODLENS_CUSTOMER_FROM=header:x-customer-id
    export PRODLENS_COHORT_PLAN_FROM=header:x-plan
    export PRODLENS_COHORT_REGION_FROM=header:x-region
    export PRODLENS_COHORT_APP_VERSION_FROM=header:x-app-version
    opentelemetry-instrument python app.py

Routes:
    ``GET /catalog``   lists the products (one database span).
    ``POST /checkout`` prices a JSON body ``{"sku": "...", "quantity": n}`` and stores the order.

Planted partial failure, on purpose, so there is something to find: ``POST /checkout`` fails with
HTTP 500 (an unhandled ``CheckoutError``) when the request has ``X-Region: eu-west`` *and*
``X-App-Version: 2.3.0``. Every other combination succeeds, and ``GET /catalog`` never fails.

Each request opens its own in-memory SQLite database, so requests share no state and the
``sqlite3`` instrumentation records a database span inside the request's server span.

Environment:
    ``PORT``: port to listen on, on 127.0.0.1 only (default 8000).
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from typing import Any

from flask import Flask, abort, jsonify, request

#: The request data that triggers the planted failure (documented in the module docstring).
FAILING_REGION = "eu-west"
FAILING_APP_VERSION = "2.3.0"

_SCHEMA = """
CREATE TABLE products (sku TEXT PRIMARY KEY, name TEXT NOT NULL, price_cents INTEGER NOT NULL);
CREATE TABLE orders (sku TEXT NOT NULL, quantity INTEGER NOT NULL, total_cents INTEGER NOT NULL);
INSERT INTO products VALUES
    ('sku-beans', 'Espresso beans, 1 kg', 2400),
    ('sku-grinder', 'Burr grinder', 12900),
    ('sku-cups', 'Cups, set of 4', 3200);
"""

app = Flask(__name__)


class CheckoutError(RuntimeError):
    """The planted failure: the 2.3.0 client's tax payload is rejected in eu-west."""


def _open_shop() -> sqlite3.Connection:
    """Open a fresh in-memory shop database.

    ``executescript`` is not traced by the sqlite3 instrumentation, so seeding adds no spans;
    the queries each route runs through ``cursor.execute`` are traced.
    """
    connection = sqlite3.connect(":memory:")
    connection.executescript(_SCHEMA)
    return connection


@app.get("/catalog")
def catalog() -> Any:
    with closing(_open_shop()) as shop:
        cursor = shop.cursor()
        cursor.execute("SELECT sku, name, price_cents FROM products ORDER BY sku")
        rows = cursor.fetchall()
    return jsonify([{"sku": sku, "name": name, "price_cents": price} for sku, name, price in rows])


@app.post("/checkout")
def checkout() -> Any:
    order = request.get_json(silent=True) or {}
    sku = str(order.get("sku", ""))
    quantity = order.get("quantity", 1)
    if not isinstance(quantity, int) or not 1 <= quantity <= 100:
        abort(400, "quantity must be a whole number from 1 to 100")
    with closing(_open_shop()) as shop:
        cursor = shop.cursor()
        cursor.execute("SELECT price_cents FROM products WHERE sku = ?", (sku,))
        found = cursor.fetchone()
        if found is None:
            abort(404, f"unknown sku {sku!r}")
        if (
            request.headers.get("x-region") == FAILING_REGION
            and request.headers.get("x-app-version") == FAILING_APP_VERSION
        ):
            raise CheckoutError("tax service rejected the 2.3.0 VAT payload")
        total = found[0] * quantity
        cursor.execute(
            "INSERT INTO orders (sku, quantity, total_cents) VALUES (?, ?, ?)",
            (sku, quantity, total),
        )
        shop.commit()
    return jsonify({"sku": sku, "quantity": quantity, "total_cents": total}), 201


if __name__ == "__main__":
    # Loopback only; threaded so a slow request does not hold up the others.
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8000")), threaded=True)
