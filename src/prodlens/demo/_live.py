"""``prodlens demo --live``: watch finds an outage by itself and messages the customers in it.

The shop runs with its bug switched off and customers shopping; ``watch`` (the same
:class:`~prodlens.live.Watcher` the command runs) follows the spans the shop exports, with a
short window so the demo takes about a minute. Mid-run the bug is deployed; the incident opens,
the operator webhook and a customer-messaging webhook (a small receiver on 127.0.0.1, in this
process) get their messages, which are printed as they arrive; then the fix is deployed and the
incident resolves. At the end, the customers messaged are checked against what the traffic
driver saw: the customers of the failing subgroup who failed while the incident was open.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

from prodlens.demo._process import HOST, DemoError, ShopProcess, start_shop
from prodlens.demo.traffic import (
    PLANTED,
    Request,
    make_customers,
    plan_sessions,
    run_traffic,
)

#: Evaluation settings that make the demo take about a minute of wall time.
WINDOW: Final = 20.0
EVERY: Final = 1.0
RESOLVE_AFTER: Final = 5.0
_CLEAN_SECONDS: Final = 10.0
_JOIN_SECONDS: Final = 4.0
_WAIT: Final = 120.0
_COHORT_PREFIX: Final = "prodlens.cohort."


@dataclass
class _Inbox:
    """What the local webhooks received."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    operators: list[dict[str, Any]] = field(default_factory=list)
    batches: list[dict[str, Any]] = field(default_factory=list)


class _Receiver:
    """The team's webhooks, played by an HTTP server on 127.0.0.1 that prints what it gets."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.inbox = _Inbox()
        inbox = self.inbox

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with inbox.lock:
                    if self.path == "/customers":
                        inbox.batches.append(body)
                        shown = ", ".join(body["customers"][:6])
                        more = len(body["customers"]) - 6
                        say(f"customer webhook got a {body['status']} batch of "
                            f"{len(body['customers'])} customers: {shown}"
                            + (f" and {more} more" if more > 0 else ""))
                        say(f"    text: {body['text']}")
                    else:
                        inbox.operators.append(body)
                        say(f"operator webhook got: {body['text']}")
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{HOST}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                        name="demo-webhooks")
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


def _switch(shop: ShopProcess, state: str) -> None:
    """Deploy (``on``) or fix (``off``) the shop's bug."""
    connection = http.client.HTTPConnection(HOST, shop.port, timeout=10)
    try:
        connection.request("POST", "/_demo/outage", state.encode())
        response = connection.getresponse()
        response.read()
    except OSError as error:
        raise DemoError(f"cannot switch the shop's outage {state}: {error}") from None
    finally:
        connection.close()
    if response.status != 200:
        raise DemoError(f"the shop refused to switch its outage {state}: {response.status}")


def _until(condition: Callable[[], bool], what: str, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + _WAIT
    while not condition():
        if not alive():
            raise DemoError(f"the shop exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise DemoError(f"no {what} within {_WAIT:.0f} s")
        time.sleep(0.1)


def run_live(args: argparse.Namespace, out: Path, spans: Path, env: Mapping[str, str],
             started: float, say: Callable[[str], None]) -> int:
    """The live demo; returns 0 when the incident named the planted subgroup and exactly the
    right customers were messaged, once each per status."""
    from prodlens.incidents import Deliverer, IncidentManager, Ledger, NotifyOptions
    from prodlens.live import DetectOptions, Watcher, WatchOptions

    ledger_path = out / "ledger.sqlite3"
    for old in (ledger_path, ledger_path.with_name(ledger_path.name + "-wal"),
                ledger_path.with_name(ledger_path.name + "-shm")):
        old.unlink(missing_ok=True)
    clock = time.monotonic()
    printing = threading.Lock()  # lines come from the webhook, watch and main threads

    def stamp(text: str) -> None:
        elapsed = time.monotonic() - clock
        with printing:
            say(f"{int(elapsed) // 60:02d}:{elapsed % 60:04.1f}  {text}")

    receiver = _Receiver(stamp)
    ledger = Ledger(ledger_path)
    notify = NotifyOptions(operator_urls=(receiver.url + "/operators",),
                           customers_url=receiver.url + "/customers", retry_initial=0.5,
                           retry_max=2.0)
    deliverer = Deliverer(ledger, notify)
    manager = IncidentManager(ledger, notify, deliverer=deliverer)

    class _Out:
        def write(self, text: str) -> int:
            for line in text.splitlines():
                if " OPEN " in line or " RESOLVED " in line:
                    kind = "OPEN" if " OPEN " in line else "RESOLVED"
                    stamp(f"watch: incident {kind}: {line.split(f' {kind} ', 1)[1]}")
            return len(text)

        def flush(self) -> None:
            pass

    options = WatchOptions(window=WINDOW, every=EVERY, recent=0.0, grace=1.0, poll=0.2,
                           detect=DetectOptions(resolve_after=RESOLVE_AFTER))
    watcher = Watcher([str(spans)], options, manager, out=_Out())  # type: ignore[arg-type]
    rng = random.Random(args.seed)
    # No payment-gateway timeouts here: the checkout route's own chronic failures would be an
    # incident of their own (a true one), and this demo is about the outage.
    sessions = plan_sessions(rng, make_customers(rng, args.customers), 60_000,
                             timeout_share=0.0)
    failures: list[tuple[float, str]] = []
    planted_customers: set[str] = set()
    record_lock = threading.Lock()

    def on_response(request: Request, status: int, sent_at: float) -> None:
        if request.customer.planted and (status == 0 or status >= 500):
            with record_lock:
                failures.append((sent_at, request.customer.id))
                planted_customers.add(request.customer.id)

    stop_watch = threading.Event()
    stop_traffic = threading.Event()
    shop = start_shop(out, {**env, "DEMO_SHOP_OUTAGE": "off"}, args.port)
    watch_thread = threading.Thread(target=watcher.run, args=(stop_watch,),
                                    kwargs={"status_every": 3600.0}, daemon=True,
                                    name="demo-watch")
    traffic_thread = threading.Thread(
        target=run_traffic, args=(HOST, shop.port, sessions),
        kwargs={"clients": args.clients, "stop": stop_traffic, "deadline": 600.0,
                "on_response": on_response}, daemon=True, name="demo-traffic")
    planted = {f"{_COHORT_PREFIX}{name}": value for name, value in PLANTED.items()}
    try:
        say(f"  shop      listening on {shop.url} (pid {shop.process.pid}), its bug switched "
            "off")
        say(f"  watch     following {spans} (window {WINDOW:g} s, every {EVERY:g} s, "
            f"resolve after {RESOLVE_AFTER:g} s healthy); ledger {ledger_path}")
        say(f"  webhooks  operators {receiver.url}/operators, customers "
            f"{receiver.url}/customers")
        say("")
        deliverer.start()
        watch_thread.start()
        traffic_thread.start()
        stamp(f"traffic from {args.customers} customers, {args.clients} concurrent clients")
        time.sleep(_CLEAN_SECONDS)
        _switch(shop, "on")
        onset = time.time()
        stamp("OUTAGE deployed: the new checkout's tax table has no rate for eu-west")
        _until(lambda: bool(ledger.incidents()), "incident", shop.alive)
        detected = time.time()
        _until(lambda: bool(receiver.inbox.batches), "customer batch", shop.alive)
        time.sleep(_JOIN_SECONDS)  # customers who fail from now on are messaged later
        _switch(shop, "off")
        stamp("FIX deployed: eu-west is back in the tax table")
        _until(lambda: not manager.firing(), "resolve", shop.alive)
        _until(lambda: not ledger.pending(), "deliveries", shop.alive)
        incidents = ledger.incidents()
    finally:
        stop_traffic.set()
        traffic_thread.join(15)
        stop_watch.set()
        watch_thread.join(15)
        deliverer.stop()
        receiver.close()
        status = shop.stop()
        ledger.close()
    if status != 0:
        raise DemoError(f"the shop exited with status {status}:\n{shop.log_tail()}")
    return _summary(incidents, receiver.inbox, failures, planted, onset, detected, ledger_path,
                    started, say)


def _summary(incidents: list[Any], inbox: _Inbox, failures: list[tuple[float, str]],
             planted: Mapping[str, str], onset: float, detected: float, ledger: Path,
             started: float, say: Callable[[str], None]) -> int:
    say("")
    say("Summary")
    matching = [incident for incident in incidents if dict(incident.subgroup) == planted]
    for incident in incidents:
        say(f"  incident   {incident.label()}"
            + ("  (the planted bug)" if incident in matching else "  NOT the planted bug"))
    if not matching:
        return 1
    incident = matching[0]
    right = len(incidents) == 1
    resolved_at = incident.resolved_at or float("inf")
    truth = {customer for at, customer in failures
             if incident.started_at <= at <= resolved_at}
    ours = [batch for batch in inbox.batches if batch["incident"] == incident.id]
    firing = [c for batch in ours if batch["status"] == "firing" for c in batch["customers"]]
    resolved = [c for batch in ours if batch["status"] == "resolved"
                for c in batch["customers"]]
    say(f"  detection  {detected - onset:.0f} s after the outage was deployed (wall time)")
    once = len(firing) == len(set(firing)) and len(resolved) == len(set(resolved))
    exact = set(firing) == truth and set(resolved) == truth
    say(f"  customers  {len(set(firing))} messaged while firing, {len(set(resolved))} when "
        f"resolved{', each once' if once else ', SOME TWICE'}, in "
        f"{len(ours)} batches; the traffic driver saw {len(truth)} customers of the subgroup "
        "fail while it was open"
        + ("" if exact else "  (MISMATCH)"))
    say(f"  ledger     {ledger}  (prodlens incidents --ledger {ledger})")
    say(f"Done in {time.monotonic() - started:.1f} s.")
    return 0 if right and once and exact else 1


__all__ = ["run_live"]
