"""The app of the alerting end-to-end test: Flask, no prodlens code, a switchable fault.

Run under OpenTelemetry's auto-instrumentation (what ``opentelemetry-instrument`` does) with
``OTEL_METRICS_EXPORTER=prometheus``: the Flask instrumentation makes the server spans, prodlens
tags them from headers, writes them as OTLP/JSON files and counts them on its cohort metrics,
which opentelemetry-exporter-prometheus serves for Prometheus to scrape.

``GET /checkout`` fails (HTTP 500) for ``x-plan: enterprise`` in ``x-region: eu`` while the file
given by ``--fault-file`` exists: the test creates it (the onset) and removes it (the fix).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from pathlib import Path
from types import FrameType

from flask import Flask, Response, jsonify, request
from werkzeug.serving import make_server


def create_app(fault_file: Path) -> Flask:
    app = Flask("alerting-app")

    @app.get("/checkout")
    def checkout() -> tuple[Response, int]:
        if (fault_file.exists() and request.headers.get("x-plan") == "enterprise"
                and request.headers.get("x-region") == "eu"):
            return jsonify(error="no tax table for eu"), 500
        return jsonify(ok=True), 200

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fault-file", type=Path, required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    args = parser.parse_args()
    server = make_server("127.0.0.1", args.port, create_app(args.fault_file), threaded=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    args.ready_file.write_text(json.dumps({"pid": os.getpid()}))
    server.serve_forever()


if __name__ == "__main__":
    main()
