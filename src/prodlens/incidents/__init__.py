"""Incidents and notification, shared by ``prodlens watch`` and the Alertmanager receiver.

An :class:`Incident` names a failing subgroup. The :class:`IncidentManager` opens, updates and
resolves incidents in a SQLite :class:`Ledger` and, in the same transaction, enqueues what must
be sent: operator notifications (``--notify`` webhooks, ``--notify-command``) on open, on growth
(affected customers doubled) and on resolve, and batches of at most 100 customers for the
customer-messaging webhook (``--notify-customers``), each customer once per incident and status.
A :class:`Deliverer` sends them from background threads with retries and backoff. Several
processes may share one ledger file. See docs/live.md for the payloads.

Example::

    from prodlens.incidents import (Deliverer, IncidentManager, Ledger, NotifyOptions,
                                    SubgroupStats)

    ledger = Ledger("prodlens-ledger.sqlite3")
    options = NotifyOptions.from_environment(operator_urls=["https://chat.example/hook"],
                                             customers_url="https://support.example/notify")
    deliverer = Deliverer(ledger, options)
    deliverer.start()
    manager = IncidentManager(ledger, options, deliverer=deliverer)
    manager.open_or_update({"plan": "enterprise", "region": "ap-south"},
                           SubgroupStats(rate=0.21, rest_rate=0.004, units=900, failures=189),
                           customers=["acme", "globex"], at=1_765_000_000.0)
    manager.resolve({"plan": "enterprise", "region": "ap-south"}, at=1_765_000_900.0)
    deliverer.stop()
    ledger.close()
"""

from __future__ import annotations

from prodlens.incidents._ledger import DEFAULT_LEDGER, Delivery, Ledger, LedgerError
from prodlens.incidents._manager import IncidentManager
from prodlens.incidents._model import (
    Incident,
    Status,
    SubgroupStats,
    incident_id,
    iso,
    subgroup_key,
    subgroup_label,
)
from prodlens.incidents._notify import (
    DEFAULT_CUSTOMER_TEMPLATE,
    DEFAULT_TEMPLATE,
    MAX_BATCH,
    NOTIFY_CUSTOMERS_URL_ENV,
    NOTIFY_URL_ENV,
    CustomerTemplate,
    Deliverer,
    DeliveryCounts,
    DeliveryError,
    NotifyOptions,
)
from prodlens.incidents._status import format_status

__all__ = [
    "DEFAULT_CUSTOMER_TEMPLATE",
    "DEFAULT_LEDGER",
    "DEFAULT_TEMPLATE",
    "MAX_BATCH",
    "NOTIFY_CUSTOMERS_URL_ENV",
    "NOTIFY_URL_ENV",
    "CustomerTemplate",
    "Deliverer",
    "Delivery",
    "DeliveryCounts",
    "DeliveryError",
    "Incident",
    "IncidentManager",
    "Ledger",
    "LedgerError",
    "NotifyOptions",
    "Status",
    "SubgroupStats",
    "format_status",
    "incident_id",
    "iso",
    "subgroup_key",
    "subgroup_label",
]
