"""The ledger: incidents, their customers and every delivery, in one SQLite file.

Why SQLite: a single file that survives a crash (WAL journal), that several processes can share
(the Alertmanager receiver runs replicas), and whose transactions and unique constraints give
the two guarantees notification needs:

* **never twice**: a customer is assigned to a batch of one incident, status and target by a row
  of ``delivery_customers`` under ``UNIQUE (incident_id, status, target, customer)``, in the same
  transaction that creates the batch; a delivery is sent only by the process that *claimed* it
  (an ``UPDATE ... WHERE state = 'pending'`` that changes one row), and a claim expires after a
  lease so a process killed mid-send does not strand it;
* **never forgotten**: incidents, customers and deliveries are written before anything is sent,
  in one transaction, and a delivery stays ``pending`` (retried with backoff) until a receiver
  answers 2xx.

Write transactions are ``BEGIN IMMEDIATE``: they take the write lock up front, so two processes
never both read "not yet claimed" and then both write. Each thread has its own connection.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from prodlens.incidents._model import Incident, Status

#: The ledger used when ``--ledger`` is not given: in the current directory.
DEFAULT_LEDGER: Final = "prodlens-ledger.sqlite3"
#: Customers inserted per statement (bounded memory with a million customers).
_CHUNK: Final = 1_000

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    subgroup_key TEXT NOT NULL,
    subgroup TEXT NOT NULL,
    rate REAL NOT NULL,
    rest_rate REAL NOT NULL,
    units INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    affected INTEGER NOT NULL DEFAULT 0,
    notified_affected INTEGER NOT NULL DEFAULT 0,
    started_at REAL NOT NULL,
    resolved_at REAL,
    status TEXT NOT NULL,
    last_failing_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS incidents_one_firing_per_subgroup
    ON incidents (subgroup_key) WHERE status = 'firing';
CREATE TABLE IF NOT EXISTS incident_customers (
    incident_id TEXT NOT NULL,
    customer TEXT NOT NULL,
    UNIQUE (incident_id, customer)
);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL,
    status TEXT NOT NULL,
    event TEXT NOT NULL,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    payload TEXT,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    claimed_by TEXT,
    claimed_until REAL,
    last_error TEXT,
    created_at REAL NOT NULL,
    delivered_at REAL,
    UNIQUE (incident_id, event, kind, target)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_attempt_at);
CREATE TABLE IF NOT EXISTS delivery_customers (
    delivery_id INTEGER NOT NULL,
    incident_id TEXT NOT NULL,
    status TEXT NOT NULL,
    target TEXT NOT NULL,
    customer TEXT NOT NULL,
    UNIQUE (incident_id, status, target, customer)
);
CREATE INDEX IF NOT EXISTS delivery_customers_batch ON delivery_customers (delivery_id);
"""

#: Delivery kinds: an operator webhook, an operator command, the customer-messaging webhook.
OPERATOR: Final = "operator"
COMMAND: Final = "command"
CUSTOMERS: Final = "customers"
#: Delivery states.
PENDING: Final = "pending"
CLAIMED: Final = "claimed"
DELIVERED: Final = "delivered"
DRY_RUN: Final = "dry-run"


class LedgerError(Exception):
    """The ledger file cannot be opened or is not a prodlens ledger."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message to send (or sent): an operator notification or a batch of customers.

    Attributes:
        id: Row id, increasing in the order deliveries were created.
        incident_id: The incident it is about.
        status: ``firing`` or ``resolved``.
        event: ``firing``, ``growth-N``, ``resolved`` (operators) or ``firing#N`` (a batch).
        kind: ``operator`` (webhook), ``command`` or ``customers``.
        target: The URL or the command line.
        state: ``pending``, ``claimed``, ``delivered`` or ``dry-run``.
        attempts: Failed attempts so far.
        next_attempt_at: Wall-clock time of the next attempt (Unix seconds).
        last_error: Why the last attempt failed.
        payload: The operator JSON body (customer batches are built when sent).
    """

    id: int
    incident_id: str
    status: Status
    event: str
    kind: str
    target: str
    state: str
    attempts: int
    next_attempt_at: float
    last_error: str | None
    payload: str | None


def incident_from_row(row: sqlite3.Row) -> Incident:
    return Incident(
        id=row["id"], subgroup=json.loads(row["subgroup"]), rate=row["rate"],
        rest_rate=row["rest_rate"], units=row["units"], failures=row["failures"],
        affected_customers=row["affected"], started_at=row["started_at"],
        resolved_at=row["resolved_at"], status=row["status"],
        last_failing_at=row["last_failing_at"],
    )


def _delivery(row: sqlite3.Row) -> Delivery:
    return Delivery(
        id=row["id"], incident_id=row["incident_id"], status=row["status"], event=row["event"],
        kind=row["kind"], target=row["target"], state=row["state"], attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"], last_error=row["last_error"],
        payload=row["payload"],
    )


class Ledger:
    """The SQLite ledger. Safe to share between threads (one connection each) and processes.

    Example::

        >>> import tempfile, os
        >>> with Ledger(os.path.join(tempfile.mkdtemp(), "ledger.sqlite3")) as ledger:
        ...     ledger.incidents()
        []
    """

    def __init__(self, path: str | os.PathLike[str] = DEFAULT_LEDGER) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        try:
            if self.path.parent and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            # CREATE ... IF NOT EXISTS: idempotent, so processes opening one file together agree
            self._connection().executescript(_SCHEMA)
        except (sqlite3.DatabaseError, OSError) as error:
            self.close()
            raise LedgerError(f"{self.path}: cannot use as a prodlens ledger: {error}") from None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every thread's connection; using the ledger afterwards is a LedgerError."""
        with self._lock:
            self._closed = True
            for connection in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    connection.close()
            self._connections.clear()
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            if self._closed:
                # Reopening here would leave a connection that nothing closes.
                raise LedgerError(f"{self.path}: the ledger is closed")
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE); timeout: wait
            # for another process's write lock instead of failing at once.
            connection = sqlite3.connect(self.path, timeout=60, isolation_level=None,
                                         check_same_thread=False)
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a crash
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``), committed on success, else rolled back."""
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def read(self) -> sqlite3.Connection:
        """This thread's connection, for reads outside a transaction."""
        return self._connection()

    # -- incidents -------------------------------------------------------------------------

    def incidents(self, *, status: Status | None = None) -> list[Incident]:
        """Incidents, newest first; only those with ``status`` when given."""
        query = "SELECT * FROM incidents"
        arguments: tuple[Any, ...] = ()
        if status is not None:
            query += " WHERE status = ?"
            arguments = (status,)
        rows = self.read().execute(query + " ORDER BY started_at DESC, id", arguments)
        return [incident_from_row(row) for row in rows]

    def incident(self, incident_id: str) -> Incident | None:
        """One incident by id."""
        row = self.read().execute("SELECT * FROM incidents WHERE id = ?",
                                  (incident_id,)).fetchone()
        return incident_from_row(row) if row is not None else None

    def customers(self, incident_id: str) -> list[str]:
        """The incident's customers, in the order they joined."""
        rows = self.read().execute(
            "SELECT customer FROM incident_customers WHERE incident_id = ? ORDER BY rowid",
            (incident_id,))
        return [row[0] for row in rows]

    # -- deliveries ------------------------------------------------------------------------

    def deliveries(self, *, incident_id: str | None = None,
                   states: Sequence[str] | None = None) -> list[Delivery]:
        """Deliveries in creation order, optionally of one incident and in some states."""
        query = "SELECT * FROM deliveries WHERE 1 = 1"
        arguments: list[Any] = []
        if incident_id is not None:
            query += " AND incident_id = ?"
            arguments.append(incident_id)
        if states is not None:
            query += f" AND state IN ({','.join('?' * len(states))})"
            arguments.extend(states)
        return [_delivery(row) for row in self.read().execute(query + " ORDER BY id", arguments)]

    def pending(self) -> list[Delivery]:
        """Deliveries not yet delivered (``pending`` or ``claimed``)."""
        return self.deliveries(states=(PENDING, CLAIMED))

    def batch(self, delivery_id: int) -> list[str]:
        """The customers of one customer batch, in the order they joined the incident."""
        rows = self.read().execute(
            "SELECT customer FROM delivery_customers WHERE delivery_id = ? ORDER BY rowid",
            (delivery_id,))
        return [row[0] for row in rows]

    def claim(self, worker: str, now: float, lease: float) -> Delivery | None:
        """Claim the oldest due delivery for ``worker``, or ``None``.

        Due: pending and past its next attempt, or claimed by someone whose lease ran out (a
        process that died mid-send). A delivery waits while an older one to the same target
        for the same incident is undelivered, so a customer never hears "resolved" before
        "firing".
        """
        with self.write() as db:
            row = db.execute(
                """SELECT * FROM deliveries AS d
                   WHERE ((d.state = 'pending' AND d.next_attempt_at <= :now)
                          OR (d.state = 'claimed' AND d.claimed_until < :now))
                     AND NOT EXISTS (
                         SELECT 1 FROM deliveries AS e
                         WHERE e.incident_id = d.incident_id AND e.kind = d.kind
                           AND e.target = d.target AND e.id < d.id
                           AND e.state IN ('pending', 'claimed'))
                   ORDER BY d.next_attempt_at, d.id LIMIT 1""",
                {"now": now}).fetchone()
            if row is None:
                return None
            db.execute("UPDATE deliveries SET state = 'claimed', claimed_by = ?, "
                       "claimed_until = ? WHERE id = ?", (worker, now + lease, row["id"]))
        return _delivery(row)

    def finish(self, delivery_id: int, worker: str, *, state: str, now: float) -> bool:
        """Mark a claimed delivery ``delivered`` or ``dry-run``; False if the claim was lost."""
        with self.write() as db:
            changed = db.execute(
                "UPDATE deliveries SET state = ?, delivered_at = ?, claimed_by = NULL, "
                "claimed_until = NULL WHERE id = ? AND state = 'claimed' AND claimed_by = ?",
                (state, now, delivery_id, worker)).rowcount
        return changed == 1

    def retry(self, delivery_id: int, worker: str, *, error: str, at: float) -> None:
        """Put a claimed delivery back to ``pending`` after a failed attempt, due ``at``."""
        with self.write() as db:
            db.execute(
                "UPDATE deliveries SET state = 'pending', attempts = attempts + 1, "
                "next_attempt_at = ?, last_error = ?, claimed_by = NULL, claimed_until = NULL "
                "WHERE id = ? AND state = 'claimed' AND claimed_by = ?",
                (at, error[:500], delivery_id, worker))

    def release(self, worker: str) -> None:
        """Give back every claim of ``worker`` (a clean shutdown), without counting an attempt."""
        with self.write() as db:
            db.execute("UPDATE deliveries SET state = 'pending', claimed_by = NULL, "
                       "claimed_until = NULL WHERE state = 'claimed' AND claimed_by = ?",
                       (worker,))

    def next_due(self) -> float | None:
        """The earliest ``next_attempt_at`` (or lease end) among undelivered deliveries."""
        row = self.read().execute(
            "SELECT MIN(CASE WHEN state = 'pending' THEN next_attempt_at ELSE claimed_until END)"
            " FROM deliveries WHERE state IN ('pending', 'claimed')").fetchone()
        value = row[0] if row is not None else None
        return float(value) if value is not None else None


def add_customers(db: sqlite3.Connection, incident_id: str, customers: Iterable[str]) -> int:
    """Add customers to an incident (known ones are ignored); returns the incident's count."""
    chunk: list[tuple[str, str]] = []
    for customer in customers:
        chunk.append((incident_id, customer))
        if len(chunk) >= _CHUNK:
            db.executemany("INSERT OR IGNORE INTO incident_customers VALUES (?, ?)", chunk)
            chunk = []
    if chunk:
        db.executemany("INSERT OR IGNORE INTO incident_customers VALUES (?, ?)", chunk)
    row = db.execute("SELECT COUNT(*) FROM incident_customers WHERE incident_id = ?",
                     (incident_id,)).fetchone()
    return int(row[0])


def enqueue(db: sqlite3.Connection, *, incident_id: str, status: Status, event: str, kind: str,
            target: str, payload: str | None, now: float) -> int | None:
    """Add a delivery unless the same one exists; returns its id, or ``None`` if it existed."""
    cursor = db.execute(
        "INSERT OR IGNORE INTO deliveries (incident_id, status, event, kind, target, payload, "
        "next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (incident_id, status, event, kind, target, payload, now, now))
    return cursor.lastrowid if cursor.rowcount == 1 else None


def enqueue_batches(db: sqlite3.Connection, *, incident_id: str, status: Status, target: str,
                    size: int, now: float) -> int:
    """Batch every customer of the incident not yet in a batch for this status and target.

    Returns the number of batches made. The unique constraint on ``delivery_customers`` makes a
    second assignment of one customer fail loudly instead of sending twice.
    """
    made = 0
    while True:
        customers = [row[0] for row in db.execute(
            """SELECT customer FROM incident_customers AS c
               WHERE c.incident_id = :incident AND NOT EXISTS (
                   SELECT 1 FROM delivery_customers AS d
                   WHERE d.incident_id = c.incident_id AND d.status = :status
                     AND d.target = :target AND d.customer = c.customer)
               ORDER BY c.rowid LIMIT :size""",
            {"incident": incident_id, "status": status, "target": target, "size": size})]
        if not customers:
            return made
        number = db.execute(
            "SELECT COUNT(*) FROM deliveries WHERE incident_id = ? AND status = ? AND kind = ? "
            "AND target = ?", (incident_id, status, CUSTOMERS, target)).fetchone()[0] + 1
        delivery_id = enqueue(db, incident_id=incident_id, status=status,
                              event=f"{status}#{number}", kind=CUSTOMERS, target=target,
                              payload=None, now=now)
        if delivery_id is None:  # pragma: no cover - numbering is inside this transaction
            raise sqlite3.IntegrityError(f"batch {status}#{number} of {incident_id} exists")
        db.executemany("INSERT INTO delivery_customers VALUES (?, ?, ?, ?, ?)",
                       [(delivery_id, incident_id, status, target, customer)
                        for customer in customers])
        made += 1
