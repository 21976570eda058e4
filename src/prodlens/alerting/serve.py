"""``prodlens notify`` as a process: options checked, the receiver, resolver and deliverer wired,
served until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from dataclasses import replace
from typing import Final

from prodlens.alerting._resolve import AlertResolver, SpanStore
from prodlens.alerting.receiver import PATH, NotifyServer, ReceiverError, check_listen
from prodlens.alerting.rules import RulesError, parse_duration
from prodlens.analysis import SliceOptions
from prodlens.config import ConfigError, load_settings
from prodlens.incidents import (
    DEFAULT_LEDGER,
    CustomerTemplate,
    Deliverer,
    IncidentManager,
    Ledger,
    LedgerError,
    NotifyOptions,
)

__all__ = ["TOKEN_ENV", "NotifyError", "serve"]

#: The bearer token, when ``--token`` is not given.
TOKEN_ENV: Final = "PRODLENS_NOTIFY_TOKEN"


class NotifyError(ValueError):
    """``prodlens notify`` cannot start as configured; the message says why."""


def serve(args: argparse.Namespace, *, ready: threading.Event | None = None,
          stop: threading.Event | None = None) -> int:
    """Run the receiver until SIGINT/SIGTERM (or ``stop``); returns the exit status.

    Raises:
        NotifyError: an option or the configuration is invalid.
    """
    try:
        settings = load_settings()
        token = args.token or os.environ.get(TOKEN_ENV) or None
        host, port = check_listen(args.listen, token)
        if bool(args.spans) == bool(args.clickhouse):
            raise NotifyError("give the span store: --spans PATH (repeatable) or "
                              "--clickhouse URL, one of them")
        window = parse_duration(args.window, "--window")
        options = NotifyOptions.from_environment(
            operator_urls=args.notify, customers_url=args.notify_customers,
            commands=tuple(args.notify_command), dry_run=args.dry_run)
        if args.customer_template:
            options = replace(options,
                              template=CustomerTemplate.from_file(args.customer_template))
        ledger = Ledger(args.ledger or DEFAULT_LEDGER)
    except (ConfigError, ReceiverError, RulesError, LedgerError, OSError) as error:
        raise NotifyError(str(error)) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    deliverer = Deliverer(ledger, options)
    manager = IncidentManager(ledger, options, deliverer=deliverer)
    slice_options = (SliceOptions(customer_attributes=tuple(args.customer_attribute))
                     if args.customer_attribute else SliceOptions())
    store = SpanStore(paths=tuple(args.spans), clickhouse=args.clickhouse, table=args.table,
                      options=slice_options)
    resolver = AlertResolver(store, manager)
    try:
        server = NotifyServer(host, port, resolver.handle, token=token,
                              cohorts=args.cohort or sorted(settings.cohort_sources),
                              prefix=settings.cohort_prefix, default_window=window)
    except OSError as error:
        ledger.close()
        raise NotifyError(f"--listen {args.listen}: {error}") from None
    stopping = stop or threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for number in (signal.SIGINT, signal.SIGTERM):
            previous[number] = signal.signal(number, lambda *_: stopping.set())
    deliverer.start()
    server.start()
    print(f"prodlens notify: listening on http://{host}:{server.port}{PATH}", flush=True)
    if ready is not None:
        ready.set()
    try:
        stopping.wait()
    finally:
        server.stop()
        deliverer.stop()
        ledger.close()
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 0
