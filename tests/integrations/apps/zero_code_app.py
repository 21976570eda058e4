"""A small Flask service with no prodlens or OpenTelemetry code: run it under
``opentelemetry-instrument``; it prints ``READY <port>`` once it listens on 127.0.0.1."""

from __future__ import annotations

import signal
import sqlite3
import sys
from typing import Any

import requests
from flask import Flask, request
from werkzeug.serving import make_server

app = Flask(__name__)


@app.route("/orders/<tenant>")
def orders(tenant: str) -> Any:
    db = sqlite3.connect(":memory:")
    db.cursor().execute("select 1").fetchall()
    db.close()
    echoed = None
    for url in request.args.getlist("call"):
        echoed = requests.get(url, timeout=5).text
    return {"tenant": tenant, "downstream": echoed}


def main() -> None:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # exit through atexit: spans flushed
    print("READY", server.server_port, flush=True)
    server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main()
