"""The embedded engine's records: a unit, a converted resource, a customer's failures.

Named, slotted records rather than positional tuples: the hot path reads a dozen of their
fields per root span, and a slot is as quick to read as a tuple index.
"""

from __future__ import annotations

from prodlens.analysis._table import Row, Signature


class Unit:
    """One unit, counted in its row when made; its failure is settled when it closes.

    Attributes:
        signature: Its candidate items (sorted item ids), as of ``epoch``.
        error: Its own root span failed (ERROR, or 5xx under ``failure=root``).
        epoch: The table's epoch when the signature was made (see :mod:`._table`).
        row: The row it was counted in.
        trace: Its trace id as decoded (failed traces are counted by its hash).
        customer: The customer, or ``""``.
        start: Start time (Unix nanoseconds), or 0 where nothing reads it (``slice`` with no
            time window).
        listed: ``affected`` only: its resource, the text of its wanted span attributes and
            its span name, from which a failure's route (or name) and cohorts are listed (for
            a unit that fails: most do not).
    """

    __slots__ = ("customer", "epoch", "error", "listed", "row", "signature", "start", "trace")

    def __init__(self, signature: Signature, error: bool, epoch: int, row: Row, trace: object,
                 customer: str, start: int,
                 listed: tuple[ResourceInfo, dict[str, str], str] | None) -> None:
        self.signature = signature
        self.error = error
        self.epoch = epoch
        self.row = row
        self.trace = trace
        self.customer = customer
        self.start = start
        self.listed = listed


class ResourceInfo:
    """A resource's attributes converted once: text, candidate items, service, cohorts."""

    __slots__ = ("cohorts", "items", "service", "texts")

    def __init__(self, texts: dict[str, str], items: dict[str, int], cohorts: dict[str, str]
                 ) -> None:
        self.texts = texts
        self.items = items
        self.service = texts.get("service.name", "")
        self.cohorts = cohorts


class CustomerFailures:
    """What ``affected`` keeps of a customer with failures."""

    __slots__ = ("cohorts", "failed_traces", "first", "last", "operations")

    def __init__(self, start: int) -> None:
        self.failed_traces: set[int] = set()
        self.first = start
        self.last = start
        self.operations: set[str] = set()
        self.cohorts: dict[str, set[str]] = {}
