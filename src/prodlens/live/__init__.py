"""``prodlens watch``: find failing subgroups continuously and open incidents by itself.

Spans are followed as they are written (files, like ``tail -F``, or ClickHouse), evaluated over
a sliding window of span time by the analysis engine, and persistent findings become incidents
(:mod:`prodlens.incidents`) that notify operators and the affected customers. Needs
``pip install 'prodlens[analyze]'``. See docs/live.md.

Example::

    from prodlens.incidents import Deliverer, IncidentManager, Ledger, NotifyOptions
    from prodlens.live import Watcher, WatchOptions

    ledger = Ledger("prodlens-ledger.sqlite3")
    options = NotifyOptions(customers_url="https://support.example/prodlens")
    manager = IncidentManager(ledger, options, deliverer=Deliverer(ledger, options))
    watcher = Watcher(["spans/"], WatchOptions(window=300, every=10), manager)
    for evaluation in watcher.step():
        print(evaluation.at, [incident.label() for incident in evaluation.opened])
"""

from __future__ import annotations

from prodlens.live._detect import DetectOptions, Detector, Evaluation
from prodlens.live._watch import Watcher, WatchOptions

__all__ = ["DetectOptions", "Detector", "Evaluation", "WatchOptions", "Watcher"]
