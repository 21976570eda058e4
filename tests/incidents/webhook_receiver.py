"""A real HTTP receiver on 127.0.0.1 that records every POST (for the incidents and live tests).

It can answer 503 (``failing``), hold requests until released (``hold``), and be stopped and
started again on the same port (a receiver that is down, then up).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self) -> None:
        self.arrivals: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.failing = False
        self.hold: threading.Event | None = None
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.hold is not None:
                    receiver.hold.wait(30)
                if receiver.failing:
                    self.send_response(503)
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.arrivals.append({"path": self.path, "body": json.loads(body),
                                              "key": self.headers.get("Idempotency-Key")})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(10)
            self._server = None

    def bodies(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [arrival["body"] for arrival in self.arrivals if arrival["path"] == path]

    def wait_for(self, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; arrivals: {self.arrivals[-5:]}")
            time.sleep(0.02)
