"""``prodlens notify``: the Alertmanager webhook receiver that messages the affected customers.

Alertmanager POSTs its webhook (version 4) to ``/alertmanager``. The request is checked
(:mod:`prodlens.alerting._payload`: anything else is answered 400 with the reason and nothing is
sent), its ``ProdlensSubgroupFailing`` alerts are queued, and the answer (200) goes back at once:
resolving customers and delivering run on a worker thread, never inside Alertmanager's request
and its timeout. A full queue is answered 503, which Alertmanager retries.

For each firing alert the worker maps the labels back to the subgroup, reads the spans of the
alert's window (from ``startsAt`` minus the rules' long window, until now) from the span store
(OTLP/JSON files or ClickHouse, the engine of ``prodlens affected``) and hands the incident and
its customers to :mod:`prodlens.incidents`, the ledger and notifier ``prodlens watch`` uses: the
same operator and customer payloads, retries and idempotency. The incident's id is derived from
the subgroup and ``startsAt``, which are the same in Alertmanager's repeats and in every replica
of the receiver, so repeats and replicas sharing one ledger message each customer once. A
resolved alert resolves the incident and sends the resolve.

Listening on anything but loopback requires a bearer token (``--token`` or
``PRODLENS_NOTIFY_TOKEN``), which Alertmanager sends with ``http_config.authorization``.

Example::

    prodlens notify --listen 127.0.0.1:9099 --spans /var/lib/otel/spans \\
        --notify https://chat.example/hook --notify-customers https://msg.example/send
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from prodlens.alerting._payload import MAX_BODY_BYTES, PayloadError, SubgroupAlert, parse_webhook

__all__ = ["PATH", "AlertQueue", "NotifyServer", "ReceiverError", "check_listen"]

_LOG = logging.getLogger("prodlens.notify")
#: Where Alertmanager posts.
PATH: Final = "/alertmanager"
#: Alerts waiting for the worker; past it the webhook is answered 503 (Alertmanager retries).
MAX_QUEUED: Final = 10_000
#: Seconds a client has to send its request (a stalled client cannot hold a thread forever).
REQUEST_TIMEOUT: Final = 10.0


#: Requests handled at once; past it a new connection is closed unanswered (Alertmanager
#: retries), so a flood of slow clients cannot grow threads without bound.
MAX_CONNECTIONS: Final = 64


class _BoundedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class ReceiverError(ValueError):
    """The receiver cannot start as configured; the message names the option."""


def check_listen(text: str, token: str | None) -> tuple[str, int]:
    """``--listen HOST:PORT`` → ``(host, port)``; a non-loopback host needs a token.

    Raises:
        ReceiverError: not HOST:PORT, or not loopback without a token.

    Example::

        >>> check_listen("127.0.0.1:9099", None)
        ('127.0.0.1', 9099)
    """
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ReceiverError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9099")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not token:
        raise ReceiverError(f"--listen {text!r} is not a loopback address: give a bearer token "
                            "(--token or PRODLENS_NOTIFY_TOKEN) that Alertmanager sends")
    return host, int(port_text)


@dataclass(frozen=True, slots=True)
class _Key:
    fingerprint: str
    subgroup: str
    starts_at: float
    status: str


class AlertQueue:
    """Alerts waiting for the worker, each (alert, status) once while it waits.

    Alertmanager repeats a group (``repeat_interval``, retries) with the same alerts; a repeat
    that arrives while the first copy still waits adds nothing.
    """

    def __init__(self, maxsize: int = MAX_QUEUED) -> None:
        self._queue: queue.Queue[SubgroupAlert | None] = queue.Queue()
        self._waiting: set[_Key] = set()
        self._maxsize = maxsize
        self._lock = threading.Lock()

    @staticmethod
    def _key(alert: SubgroupAlert) -> _Key:
        return _Key(alert.fingerprint, json.dumps(dict(alert.subgroup), sort_keys=True),
                    alert.starts_at, alert.status)

    def offer(self, alerts: Iterable[SubgroupAlert]) -> bool:
        """Queue ``alerts`` (all or none); False when there is no room."""
        alerts = list(alerts)
        with self._lock:
            fresh = [a for a in alerts if self._key(a) not in self._waiting]
            if len(self._waiting) + len(fresh) > self._maxsize:
                return False
            for alert in fresh:
                self._waiting.add(self._key(alert))
                self._queue.put(alert)
        return True

    def take(self, timeout: float | None = None) -> SubgroupAlert | None:
        """The next alert (``None`` when stopped or after ``timeout``)."""
        try:
            alert = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if alert is not None:
            with self._lock:
                self._waiting.discard(self._key(alert))
        return alert

    def stop(self) -> None:
        """Wake the worker with the stop marker."""
        self._queue.put(None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiting)


class NotifyServer:
    """The HTTP server and its worker thread.

    Args:
        host: Address to listen on.
        port: Port (0: any free port; see :attr:`port`).
        handle: Called on the worker thread with each queued alert; its exceptions are logged
            and the worker carries on.
        token: Bearer token required on every request, if given.
        cohorts: Cohort names, to map labels that lost a ``.`` back (see ``_payload``).
        prefix: The cohort attribute prefix.
        default_window: Seconds of spans read back when an alert has no ``window`` annotation.
        max_queued: Alerts waiting at most.
    """

    def __init__(self, host: str, port: int, handle: Callable[[SubgroupAlert], None], *,
                 token: str | None = None, cohorts: Iterable[str] = (), prefix: str,
                 default_window: float = 3600.0, max_queued: int = MAX_QUEUED) -> None:
        self.queue = AlertQueue(max_queued)
        self._handle = handle
        self._token = token
        self._cohorts = tuple(cohorts)
        self._prefix = prefix
        self._default_window = default_window
        self._idle = threading.Condition()
        self._busy = 0
        self._http = _BoundedServer((host, port), self._handler_class())
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        """The port listened on."""
        return int(self._http.server_address[1])

    def start(self) -> NotifyServer:
        """Serve and work in background threads."""
        for target, name in ((self._http.serve_forever, "prodlens-notify-http"),
                             (self._work, "prodlens-notify-worker")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop serving, let the worker finish the alert it is on, and join both threads."""
        self._http.shutdown()
        self._http.server_close()
        self.queue.stop()
        for thread in self._threads:
            thread.join(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or being handled; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._busy and not len(self.queue), timeout)

    def _work(self) -> None:
        while True:
            alert = self.queue.take()
            if alert is None:
                return
            with self._idle:
                self._busy += 1
            try:
                self._handle(alert)
            except Exception:  # the worker outlives one alert's failure; the ledger retries
                _LOG.exception("prodlens notify: handling the alert for %s failed",
                               dict(alert.subgroup))
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

    def _accept(self, body: bytes) -> tuple[HTTPStatus, dict[str, object]]:
        try:
            alerts, ignored = parse_webhook(body, cohorts=self._cohorts, prefix=self._prefix,
                                            default_window=self._default_window)
        except PayloadError as error:
            _LOG.warning("prodlens notify: rejected a webhook: %s", error)
            return HTTPStatus.BAD_REQUEST, {"error": str(error)}
        if not self.queue.offer(alerts):
            return HTTPStatus.SERVICE_UNAVAILABLE, {"error": "the queue is full; retry later"}
        with self._idle:
            self._idle.notify_all()
        return HTTPStatus.OK, {"queued": len(alerts), "ignored": ignored}

    def _authorized(self, header: str | None) -> bool:
        if not self._token:
            return True
        expected = f"Bearer {self._token}".encode()
        return hmac.compare_digest((header or "").encode(), expected)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT
            server_version = "prodlens-notify"
            sys_version = ""

            def log_message(self, format: str, *args: object) -> None:
                _LOG.debug("prodlens notify: %s", format % args)

            def _answer(self, status: HTTPStatus, body: dict[str, object]) -> None:
                data = (json.dumps(body) + "\n").encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status >= 400:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/healthz":
                    self._answer(HTTPStatus.OK, {"status": "ok", "queued": len(server.queue)})
                else:
                    self._answer(HTTPStatus.NOT_FOUND, {"error": f"POST {PATH}"})

            def do_POST(self) -> None:
                if not server._authorized(self.headers.get("Authorization")):
                    self._answer(HTTPStatus.UNAUTHORIZED, {"error": "a bearer token is required"})
                    return
                if self.path.partition("?")[0] != PATH:
                    self._answer(HTTPStatus.NOT_FOUND, {"error": f"POST {PATH}"})
                    return
                length_text = self.headers.get("Content-Length", "")
                if not length_text.isdigit():
                    self._answer(HTTPStatus.BAD_REQUEST,
                                 {"error": "Content-Length is required (no chunked bodies)"})
                    return
                length = int(length_text)
                if length > MAX_BODY_BYTES:
                    # Not read: a huge body is refused before it is received.
                    self._answer(HTTPStatus.BAD_REQUEST, {
                        "error": f"the body is {length:,} bytes; at most {MAX_BODY_BYTES:,} "
                                 "are accepted"})
                    return
                try:
                    body = self.rfile.read(length)
                except OSError:
                    return
                status, answer = server._accept(body)
                self._answer(status, answer)

        return Handler
