"""A Celery app with no prodlens import: the worker's task spans carry the identity of the
request that queued the task, with no configuration on the worker (zero-code).

Broker: ``CELERY_BROKER_URL`` (e.g. ``redis://localhost:6379/0``); by default a filesystem
broker in ``BROKER_DIR`` (default ``./broker``), so the demo needs no broker daemon.

    opentelemetry-instrument celery -A tasks worker --pool=solo -l warning
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

from celery import Celery

app = Celery("shop")
if os.environ.get("CELERY_BROKER_URL"):
    app.conf.broker_url = os.environ["CELERY_BROKER_URL"]
else:
    folder = Path(os.environ.get("BROKER_DIR", "broker")).resolve()
    (folder / "processed").mkdir(parents=True, exist_ok=True)
    app.conf.broker_url = "filesystem://"
    app.conf.broker_transport_options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "processed_folder": str(folder / "processed"),
        "control_folder": str(folder / "control"),
        "polling_interval": 0.1,
    }
app.conf.broker_connection_retry_on_startup = True


@app.task(name="send_receipt")
def send_receipt(order_id: int) -> str:
    """Look the order up (a database span in the task) and 'send' its receipt."""
    with closing(sqlite3.connect(":memory:")) as db:
        cursor = db.cursor()
        cursor.execute("SELECT ?", (order_id,))
        cursor.fetchall()
    return f"receipt {order_id} sent"
