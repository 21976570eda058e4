"""Where notifications go, what customers read, and the deliverer that sends them.

The deliverer is a background thread: evaluation only writes deliveries into the ledger and
wakes it, so a webhook that answers slowly (or not at all) never stalls ``watch``. A failed
attempt is retried with exponential backoff (capped, with jitter) and the delivery stays
``pending`` in the ledger until a receiver answers 2xx: a receiver down for ten minutes, or a
``watch`` restarted meanwhile, loses nothing.

Environment variables (read by :meth:`NotifyOptions.from_environment`)::

    export PRODLENS_NOTIFY_URL=https://hooks.example.com/a,https://hooks.example.com/b
    export PRODLENS_NOTIFY_CUSTOMERS_URL=https://support.example.com/prodlens
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shlex
import socket
import string
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Final

from prodlens.config import ConfigError
from prodlens.incidents._ledger import (
    COMMAND,
    CUSTOMERS,
    DELIVERED,
    DRY_RUN,
    OPERATOR,
    Delivery,
    Ledger,
)
from prodlens.incidents._model import Incident, iso, subgroup_label

_logger = logging.getLogger("prodlens.incidents")

NOTIFY_URL_ENV: Final = "PRODLENS_NOTIFY_URL"
NOTIFY_CUSTOMERS_URL_ENV: Final = "PRODLENS_NOTIFY_CUSTOMERS_URL"
#: Customers per batch at most.
MAX_BATCH: Final = 100

#: The default customer message; ``---`` on a line of its own separates the firing text from
#: the resolved one in a ``--customer-template`` file.
DEFAULT_TEMPLATE: Final = (
    "We are seeing errors on some of your requests ($subgroup) since $started_at. "
    "We know, and we are working on it; no action is needed on your side.\n"
    "---\n"
    "The errors affecting some of your requests ($subgroup) since $started_at were fixed at "
    "$resolved_at. Sorry for the trouble."
)
_PLACEHOLDERS: Final = ("subgroup", "started_at", "resolved_at", "incident", "status")


def check_url(value: str, setting: str, origin: str) -> str:
    """An ``http(s)://`` URL, or a :class:`ConfigError` naming the setting."""
    parsed = urllib.parse.urlsplit(value.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"{setting}={value!r} ({origin}) is not valid: "
                          "expected an http:// or https:// URL")
    return value.strip()


@dataclass(frozen=True, slots=True)
class CustomerTemplate:
    """The customer message, one text per status, with ``$placeholders`` (:mod:`string`).

    Placeholders: ``$subgroup`` (``plan=pro ∧ region=eu``), ``$started_at``, ``$resolved_at``
    (ISO-8601 UTC; empty while firing), ``$incident`` and ``$status``.

    Example::

        >>> template = CustomerTemplate("Trouble with $subgroup.", "Fixed ($subgroup).")
        >>> template.firing
        'Trouble with $subgroup.'
    """

    firing: str
    resolved: str

    def __post_init__(self) -> None:
        for text in (self.firing, self.resolved):
            try:
                string.Template(text).substitute({name: "" for name in _PLACEHOLDERS})
            except (KeyError, ValueError) as error:
                raise ConfigError(
                    f"customer template {text[:60]!r} is not valid: {error!r}; the "
                    f"placeholders are {', '.join('$' + p for p in _PLACEHOLDERS)}") from None

    @classmethod
    def parse(cls, text: str) -> CustomerTemplate:
        """A template from text: the firing part, a ``---`` line, the resolved part (or one
        text for both)."""
        lines = text.splitlines()
        for index, line in enumerate(lines):
            if line.strip() == "---":
                return cls("\n".join(lines[:index]).strip(),
                           "\n".join(lines[index + 1:]).strip())
        return cls(text.strip(), text.strip())

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> CustomerTemplate:
        """Read ``--customer-template FILE``; a :class:`ConfigError` if it cannot be read."""
        try:
            with open(path, encoding="utf-8") as stream:
                text = stream.read()
        except OSError as error:
            raise ConfigError(f"--customer-template={os.fspath(path)!r} is not valid: "
                              f"{error.strerror or error}") from None
        return cls.parse(text)

    def render(self, incident: Incident, status: str) -> str:
        """The message for ``incident`` in ``status``."""
        text = self.resolved if status == "resolved" else self.firing
        return string.Template(text).substitute(
            subgroup=subgroup_label(incident.subgroup), started_at=iso(incident.started_at),
            resolved_at=iso(incident.resolved_at) or "", incident=incident.id, status=status)


DEFAULT_CUSTOMER_TEMPLATE: Final = CustomerTemplate.parse(DEFAULT_TEMPLATE)


@dataclass(frozen=True, slots=True)
class NotifyOptions:
    """Where deliveries go and how they are retried.

    Attributes:
        operator_urls: ``--notify`` webhooks (open, growth, resolve).
        commands: ``--notify-command`` lines, run with the operator JSON on stdin.
        customers_url: ``--notify-customers`` webhook for customer batches, or ``None``.
        template: The customer message.
        dry_run: Print what would be sent; send nothing.
        timeout: Seconds an HTTP request or a command may take.
        retry_initial: First backoff after a failure, seconds.
        retry_max: Backoff cap, seconds.
        batch_size: Customers per batch (at most :data:`MAX_BATCH`).
    """

    operator_urls: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    customers_url: str | None = None
    template: CustomerTemplate = DEFAULT_CUSTOMER_TEMPLATE
    dry_run: bool = False
    timeout: float = 10.0
    retry_initial: float = 2.0
    retry_max: float = 60.0
    batch_size: int = MAX_BATCH

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ConfigError(f"batch size {self.batch_size} is not valid: expected 1 to "
                              f"{MAX_BATCH}")
        if self.retry_initial <= 0 or self.retry_max < self.retry_initial:
            raise ConfigError("retry backoff is not valid: expected 0 < initial <= max")

    @classmethod
    def from_environment(cls, *, operator_urls: Sequence[str] = (),
                         customers_url: str | None = None,
                         environ: Mapping[str, str] | None = None,
                         **options: object) -> NotifyOptions:
        """Command-line values first, then ``PRODLENS_NOTIFY_URL`` (comma list, added to
        ``--notify``) and ``PRODLENS_NOTIFY_CUSTOMERS_URL`` (when ``--notify-customers`` is
        not given). Raises :class:`ConfigError` on a URL that is not http(s)."""
        env = os.environ if environ is None else environ
        urls = [check_url(url, "--notify", "command line") for url in operator_urls]
        for url in env.get(NOTIFY_URL_ENV, "").split(","):
            if url.strip():
                checked = check_url(url, NOTIFY_URL_ENV, "environment")
                if checked not in urls:
                    urls.append(checked)
        customers = (check_url(customers_url, "--notify-customers", "command line")
                     if customers_url else None)
        if customers is None and env.get(NOTIFY_CUSTOMERS_URL_ENV, "").strip():
            customers = check_url(env[NOTIFY_CUSTOMERS_URL_ENV], NOTIFY_CUSTOMERS_URL_ENV,
                                  "environment")
        return cls(operator_urls=tuple(urls), customers_url=customers,
                   **options)  # type: ignore[arg-type]

    def operator_targets(self) -> list[tuple[str, str]]:
        """``(kind, target)`` of every operator destination."""
        return ([(OPERATOR, url) for url in self.operator_urls]
                + [(COMMAND, command) for command in self.commands])


class DeliveryError(Exception):
    """One attempt failed (the receiver said no, or could not be reached)."""


def post_json(url: str, body: bytes, *, timeout: float, key: str) -> None:
    """POST ``body`` as JSON; raises :class:`DeliveryError` unless the answer is 2xx.

    ``Idempotency-Key`` lets a receiver drop the repeat of a delivery whose 2xx answer was lost
    (the one case where at-least-once cannot be made exactly-once from this side).
    """
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "prodlens",
        "Idempotency-Key": key})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(1 << 16)
    except urllib.error.HTTPError as error:
        with contextlib.suppress(OSError):
            error.read(1 << 10)
        error.close()
        raise DeliveryError(f"HTTP {error.code} from {url}") from None
    except (TimeoutError, urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise DeliveryError(f"{url}: {reason}") from None


def run_command(command: str, body: bytes, *, timeout: float) -> None:
    """Run ``command`` (split like a shell line, not through a shell) with ``body`` on stdin."""
    try:
        finished = subprocess.run(shlex.split(command), input=body, capture_output=True,
                                  timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError, ValueError) as error:
        raise DeliveryError(f"{command}: {error}") from None
    if finished.returncode != 0:
        tail = finished.stderr.decode(errors="replace").strip()[-200:]
        raise DeliveryError(f"{command}: exit status {finished.returncode} {tail}".strip())


@dataclass
class DeliveryCounts:
    """What the deliverer has done since it started (for status lines)."""

    delivered: int = 0
    failed_attempts: int = 0
    last_error: str | None = None
    customers_sent: int = 0
    errors_by_target: dict[str, str] = field(default_factory=dict)


class Deliverer:
    """Sends the ledger's due deliveries from background threads, retrying with backoff.

    Several deliverers (threads, processes) may share one ledger: each delivery is claimed by
    exactly one of them. ``deliver_due()`` runs one pass synchronously (tests, ``--once``).

    Example::

        deliverer = Deliverer(ledger, NotifyOptions(operator_urls=("http://127.0.0.1:9/",)))
        deliverer.start()
        ...
        deliverer.stop()
    """

    def __init__(self, ledger: Ledger, options: NotifyOptions, *,
                 clock: Callable[[], float] = time.time, workers: int = 2,
                 out: IO[str] | None = None, on_delivered: Callable[[Delivery], None] | None = None
                 ) -> None:
        self.ledger = ledger
        self.options = options
        self.counts = DeliveryCounts()
        self._clock = clock
        self._workers = max(1, workers)
        self._out = out
        self._on_delivered = on_delivered
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._counts_lock = threading.Lock()
        self._random = random.Random()
        self._name = f"{socket.gethostname()}:{os.getpid()}:{self._random.getrandbits(32):08x}"
        self._lease = options.timeout * 2 + 5.0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker threads (daemons: a crash of the host loses no delivery anyway)."""
        for number in range(self._workers):
            thread = threading.Thread(target=self._run, name=f"prodlens-deliver-{number}",
                                      args=(f"{self._name}/{number}",), daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        """New deliveries are in the ledger: look now instead of at the next due time."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the threads; claims still held are given back for the next run."""
        self._stopping.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()
        for number in range(self._workers):
            with contextlib.suppress(Exception):
                self.ledger.release(f"{self._name}/{number}")

    def _run(self, worker: str) -> None:
        while not self._stopping.is_set():
            try:
                sent = self._deliver_one(worker)
            except Exception as error:  # the ledger itself failed (disk full, locked): retry
                _logger.warning("prodlens: delivery loop error (will retry): %s", error)
                sent = False
                self._stopping.wait(1.0)
            if sent:
                continue
            self._wake.clear()
            wait = 5.0
            with contextlib.suppress(Exception):
                due = self.ledger.next_due()
                if due is not None:
                    wait = min(wait, max(0.05, due - self._clock()))
            self._wake.wait(wait)

    def deliver_due(self, worker: str | None = None) -> int:
        """Send every delivery due now, once each, in this thread; returns the attempts made."""
        worker = worker or f"{self._name}/sync"
        attempts = 0
        while self._deliver_one(worker):
            attempts += 1
        return attempts

    # -- one delivery ----------------------------------------------------------------------

    def _deliver_one(self, worker: str) -> bool:
        delivery = self.ledger.claim(worker, self._clock(), self._lease)
        if delivery is None:
            return False
        try:
            body = self._body(delivery)
            if self.options.dry_run:
                self._print_dry_run(delivery, body)
                self.ledger.finish(delivery.id, worker, state=DRY_RUN, now=self._clock())
            else:
                self._send(delivery, body)
                self.ledger.finish(delivery.id, worker, state=DELIVERED, now=self._clock())
        except DeliveryError as error:
            self._failed(delivery, worker, str(error))
            return True
        with self._counts_lock:
            self.counts.delivered += 1
            self.counts.errors_by_target.pop(delivery.target, None)
            if delivery.kind == CUSTOMERS:
                self.counts.customers_sent += len(json.loads(body)["customers"])
        if self._on_delivered is not None:
            self._on_delivered(delivery)
        return True

    def _failed(self, delivery: Delivery, worker: str, error: str) -> None:
        attempts = delivery.attempts + 1
        backoff = min(self.options.retry_max, self.options.retry_initial * 2 ** (attempts - 1))
        backoff *= self._random.uniform(0.8, 1.2)  # replicas retrying a shared receiver spread out
        self.ledger.retry(delivery.id, worker, error=error, at=self._clock() + backoff)
        with self._counts_lock:
            self.counts.failed_attempts += 1
            self.counts.last_error = error
            first = delivery.target not in self.counts.errors_by_target
            self.counts.errors_by_target[delivery.target] = error
        if first:
            _logger.warning("prodlens: delivery to %s failed, retrying with backoff "
                            "(it stays pending in the ledger): %s", delivery.target, error)

    def _body(self, delivery: Delivery) -> bytes:
        if delivery.kind != CUSTOMERS:
            return (delivery.payload or "{}").encode()
        incident = self.ledger.incident(delivery.incident_id)
        if incident is None:  # pragma: no cover - deliveries are written with their incident
            raise DeliveryError(f"incident {delivery.incident_id} is not in the ledger")
        body = {
            "incident": incident.id,
            "status": delivery.status,
            "subgroup": dict(sorted(incident.subgroup.items())),
            "customers": self.ledger.batch(delivery.id),
            "text": self.options.template.render(incident, delivery.status),
        }
        return json.dumps(body, ensure_ascii=False).encode()

    def _send(self, delivery: Delivery, body: bytes) -> None:
        key = f"{delivery.incident_id}:{delivery.event}:{delivery.kind}"
        if delivery.kind == COMMAND:
            run_command(delivery.target, body, timeout=self.options.timeout)
        else:
            post_json(delivery.target, body, timeout=self.options.timeout, key=key)

    def _print_dry_run(self, delivery: Delivery, body: bytes) -> None:
        out = self._out or sys.stdout
        verb = "run" if delivery.kind == COMMAND else "POST to"
        out.write(f"dry run: would {verb} {delivery.target}: {body.decode()}\n")
        out.flush()
