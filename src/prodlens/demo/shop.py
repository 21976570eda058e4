"""The demo shop: a small Flask app with a bug in its new checkout, and no prodlens code.

``prodlens demo`` runs it with the running interpreter under OpenTelemetry's auto-instrumentation
(what ``opentelemetry-instrument`` does), so everything about tracing comes from environment
variables: the Flask and sqlite3 instrumentations make the spans, prodlens tags them with the
customer and cohorts read from request headers, and prodlens's file exporter writes them as
OTLP/JSON. Run it by hand the same way::

    export OTEL_SERVICE_NAME=demo-shop
    export OTEL_TRACES_EXPORTER=prodlens_otlp_json_file OTEL_METRICS_EXPORTER=none
    export OTEL_LOGS_EXPORTER=none PRODLENS_FILE_PATH=spans/spans.jsonl
    export PRODLENS_CUSTOMER_FROM=header:x-customer-id
    export PRODLENS_COHORT_PLAN_FROM=header:x-plan
    export PRODLENS_COHORT_REGION_FROM=header:x-region
    export PRODLENS_COHORT_APP_VERSION_FROM=header:x-app-version
    export PRODLENS_COHORT_NEW_CHECKOUT_FROM=header:x-flag-new-checkout
    opentelemetry-instrument python -m prodlens.demo.shop --port 8000

The planted bug: the new checkout (``x-flag-new-checkout: on``) prices carts with a new tax
table that nobody filled in for ``eu-west``, so every cart and checkout of those customers fails
with a ``KeyError`` (HTTP 500). Everyone else is served, apart from a rare payment-gateway
timeout (HTTP 502) that the traffic driver triggers with a test card.

``prodlens demo --live`` deploys the bug and its fix while the shop runs: the shop starts with
the bug switched off when ``DEMO_SHOP_OUTAGE=off``, and ``POST /_demo/outage`` with the body
``on`` or ``off`` switches it (the new tax table without and with ``eu-west``).

The server listens on 127.0.0.1 only. SIGINT or SIGTERM stops it cleanly, so the SDK's exit
hook flushes every span; it also stops by itself when the process that started it goes away.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import Any, Final

from flask import Flask, Response, jsonify, request
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

__all__ = ["PRODUCTS", "TIMEOUT_CARD", "Database", "create_app", "main"]

HOST: Final = "127.0.0.1"

#: (id, name, price) of everything on sale.
PRODUCTS: Final[tuple[tuple[int, str, str], ...]] = (
    (1, "espresso beans 1kg", "24.00"),
    (2, "pour-over kettle", "59.00"),
    (3, "ceramic dripper", "29.50"),
    (4, "paper filters x100", "6.90"),
    (5, "hand grinder", "89.00"),
    (6, "travel mug", "19.00"),
)
#: Sales tax by region, as the old checkout prices carts.
TAX_RATES: Final = {"us-east": Decimal("0.07"), "us-west": Decimal("0.09"),
                    "eu-west": Decimal("0.20"), "ap-south": Decimal("0.18")}
#: The new checkout's tax table, migrated from the tax service: eu-west was forgotten.
NEW_TAX_RATES: Final = {"us-east": Decimal("0.07"), "us-west": Decimal("0.09"),
                        "ap-south": Decimal("0.18")}
#: eu-west's rate, once the fix has put it into the new tax table.
FIXED_TAX_RATE: Final = Decimal("0.20")
#: The card the payment gateway never answers for (a test card of the gateway's sandbox).
TIMEOUT_CARD: Final = "tok_gateway_timeout"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS products (id INTEGER PRIMARY KEY, name TEXT, price TEXT);
CREATE TABLE IF NOT EXISTS cart_items (customer TEXT, product INTEGER, quantity INTEGER);
CREATE INDEX IF NOT EXISTS cart_by_customer ON cart_items (customer);
CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY AUTOINCREMENT, customer TEXT,
                                   total TEXT, checkout TEXT);
"""


class PaymentGatewayTimeout(Exception):
    """The payment gateway did not answer in time."""


class Database:
    """One sqlite3 connection per request thread, over a file in a private directory; the app
    closes it when the request ends (:meth:`release`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        with sqlite3.connect(path) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(_SCHEMA)
            connection.executemany("INSERT OR REPLACE INTO products VALUES (?, ?, ?)", PRODUCTS)
        connection.close()

    def connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            # The timeout makes concurrent writers wait for the lock instead of failing.
            connection = sqlite3.connect(self.path, timeout=10)
            self._local.connection = connection
        return connection

    def release(self) -> None:
        """Close this thread's connection, if it opened one (the server runs each request on a
        thread of its own, so an unclosed one would stay open until garbage collection)."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            self._local.connection = None
            connection.close()

    def query(self, sql: str, parameters: Sequence[object] = ()) -> list[Any]:
        """Rows of one statement, through a cursor (the sqlite3 instrumentation traces those)."""
        cursor = self.connection().cursor()
        try:
            cursor.execute(sql, parameters)
            return cursor.fetchall()
        finally:
            cursor.close()

    def write(self, *statements: tuple[str, Sequence[object]]) -> int | None:
        """Run statements in one transaction; the last row id written."""
        connection = self.connection()
        cursor = connection.cursor()
        try:
            with connection:
                for sql, parameters in statements:
                    cursor.execute(sql, parameters)
            return cursor.lastrowid
        finally:
            cursor.close()


def _tax_rate(region: str, new_checkout: bool, outage: threading.Event) -> Decimal:
    if new_checkout:
        if not outage.is_set() and region == "eu-west":
            return FIXED_TAX_RATE
        return NEW_TAX_RATES[region]  # KeyError for eu-west: the planted bug
    return TAX_RATES.get(region, Decimal("0"))


def create_app(database: Database, *, outage: bool = True) -> Flask:
    """The shop's Flask application: products, a cart per customer, and checkout.

    ``outage``: start with the bug deployed (``POST /_demo/outage`` switches it).
    """
    app = Flask("prodlens_demo_shop")
    deployed = threading.Event()
    if outage:
        deployed.set()

    @app.teardown_request
    def release_connection(error: BaseException | None) -> None:
        database.release()

    def customer() -> str:
        return request.headers.get("x-customer-id", "anonymous")

    def priced_cart() -> dict[str, Any]:
        rows = database.query(
            "SELECT p.id, p.name, p.price, c.quantity FROM cart_items c "
            "JOIN products p ON p.id = c.product WHERE c.customer = ?", (customer(),))
        subtotal = sum((Decimal(price) * quantity for _, _, price, quantity in rows),
                       Decimal("0"))
        new_checkout = request.headers.get("x-flag-new-checkout") == "on"
        rate = _tax_rate(request.headers.get("x-region", ""), new_checkout, deployed)
        tax = (subtotal * rate).quantize(Decimal("0.01"))
        return {"items": [{"id": i, "name": n, "quantity": q} for i, n, _, q in rows],
                "subtotal": str(subtotal), "tax": str(tax), "total": str(subtotal + tax)}

    @app.get("/health")
    def health() -> Response:
        return jsonify(status="ok")

    @app.post("/_demo/outage")
    def switch_outage() -> tuple[Response, int]:
        wanted = request.get_data(as_text=True).strip()
        if wanted not in ("on", "off"):
            return jsonify(error="expected on or off"), 400
        if wanted == "on":
            deployed.set()
        else:
            deployed.clear()
        return jsonify(outage=wanted), 200

    @app.get("/api/products")
    def products() -> Response:
        rows = database.query("SELECT id, name, price FROM products")
        return jsonify([{"id": i, "name": n, "price": p} for i, n, p in rows])

    @app.get("/api/products/<int:product_id>")
    def product(product_id: int) -> tuple[Response, int] | Response:
        rows = database.query("SELECT id, name, price FROM products WHERE id = ?", (product_id,))
        if not rows:
            return jsonify(error="no such product"), 404
        return jsonify(id=rows[0][0], name=rows[0][1], price=rows[0][2])

    @app.get("/api/cart")
    def cart() -> Response:
        return jsonify(priced_cart())

    @app.post("/api/cart/items")
    def add_to_cart() -> tuple[Response, int]:
        body = request.get_json(silent=True) or {}
        product_id, quantity = int(body.get("product", 0)), int(body.get("quantity", 1))
        database.write(("INSERT INTO cart_items VALUES (?, ?, ?)",
                        (customer(), product_id, quantity)))
        return jsonify(added=product_id), 201

    @app.post("/api/checkout")
    def checkout() -> tuple[Response, int]:
        body = request.get_json(silent=True) or {}
        priced = priced_cart()
        if body.get("card") == TIMEOUT_CARD:
            time.sleep(0.05)
            raise PaymentGatewayTimeout("payment gateway did not answer within 50 ms")
        flow = "new" if request.headers.get("x-flag-new-checkout") == "on" else "old"
        order = database.write(
            ("DELETE FROM cart_items WHERE customer = ?", (customer(),)),
            ("INSERT INTO orders (customer, total, checkout) VALUES (?, ?, ?)",
             (customer(), priced["total"], flow)),
        )
        return jsonify(order=order, total=priced["total"]), 201

    @app.errorhandler(PaymentGatewayTimeout)
    def gateway_timeout(error: PaymentGatewayTimeout) -> tuple[Response, int]:
        return jsonify(error=str(error)), 502

    return app


class _QuietHandler(WSGIRequestHandler):
    """No access log: the traffic would flood it. Errors are still logged."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


def _stop(signum: int, frame: FrameType | None) -> None:
    # serve_forever() returns on KeyboardInterrupt; the interpreter then exits normally and the
    # SDK's exit hook flushes the spans still queued.
    raise KeyboardInterrupt


def _watch_parent(parent: int) -> None:
    """Stop the shop if the process that started it dies, so no listener is left behind."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
            return


def _write_ready(path: Path, server: BaseWSGIServer) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"pid": os.getpid(), "host": HOST,
                                   "port": server.server_port}), encoding="utf-8")
    os.replace(partial, path)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the shop on 127.0.0.1 until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m prodlens.demo.shop",
                                     description="The prodlens demo shop (127.0.0.1 only).")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--ready-file", type=Path,
                        help="write {pid, host, port} here as JSON once listening")
    parser.add_argument("--db", type=Path, help="sqlite file (default: a private temp dir)")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="stop when the process that started the shop exits")
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    workdir = Path(tempfile.mkdtemp(prefix="prodlens-shop-"))
    try:
        database = Database(args.db or workdir / "shop.sqlite3")
        outage = os.environ.get("DEMO_SHOP_OUTAGE", "on") != "off"
        server = make_server(HOST, args.port, create_app(database, outage=outage), threaded=True,
                             request_handler=_QuietHandler)
        if args.exit_with_parent:
            threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True,
                             name="watch-parent").start()
        if args.ready_file:
            _write_ready(args.ready_file, server)
        print(f"demo shop listening on http://{HOST}:{server.server_port}", flush=True)
        server.serve_forever(poll_interval=0.1)  # returns on SIGINT/SIGTERM
    except KeyboardInterrupt:
        pass
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("demo shop stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
