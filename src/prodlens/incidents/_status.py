"""``prodlens incidents``: the ledger's incidents and undelivered deliveries, as text."""

from __future__ import annotations

from prodlens.incidents._ledger import Ledger
from prodlens.incidents._model import iso


def format_status(ledger: Ledger, *, limit: int = 50) -> str:
    """Incidents (newest first, at most ``limit``) and every pending delivery, one per line."""
    lines: list[str] = []
    incidents = ledger.incidents()
    lines.append(f"incidents: {len(incidents)} "
                 f"({sum(1 for i in incidents if i.status == 'firing')} firing)")
    for incident in incidents[:limit]:
        lines.append(f"  {incident.text()}")
    pending = ledger.pending()
    lines.append(f"pending deliveries: {len(pending)}")
    for delivery in pending:
        error = f", last error: {delivery.last_error}" if delivery.last_error else ""
        lines.append(f"  #{delivery.id} {delivery.incident_id} {delivery.event} "
                     f"{delivery.kind} -> {delivery.target}: {delivery.state}, "
                     f"{delivery.attempts} failed attempts, next at "
                     f"{iso(delivery.next_attempt_at)}{error}")
    return "\n".join(lines) + "\n"
