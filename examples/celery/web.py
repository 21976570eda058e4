"""The producer: a FastAPI endpoint that queues a Celery task. No prodlens import: under
``opentelemetry-instrument`` with ``PRODLENS_CUSTOMER_FROM`` set, the request's identity travels
in the task message to the worker.

    PORT=8000 opentelemetry-instrument python web.py
"""

from __future__ import annotations

import os
from typing import Any

import uvicorn
from fastapi import FastAPI
from tasks import send_receipt

app = FastAPI(title="checkout")


@app.post("/orders/{order_id}")
def place_order(order_id: int) -> dict[str, Any]:
    send_receipt.delay(order_id)  # the worker's spans carry this request's customer
    return {"order": order_id, "queued": True}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")),
                log_level="warning")
