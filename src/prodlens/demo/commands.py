"""``prodlens demo``: a partial outage, found and explained, in one command.

It starts the demo shop (``prodlens.demo.shop``, shipped in the package) with the running
interpreter under OpenTelemetry's auto-instrumentation, exactly as ``opentelemetry-instrument``
would, configured only by ``PRODLENS_*`` and ``OTEL_*`` variables; drives traffic from a few
hundred customers at it (``prodlens.demo.traffic``); stops it so the SDK flushes every span to
OTLP/JSON files; then runs ``slice`` and ``affected`` over them and prints the failing subgroup,
the affected customers, the CSV written and the commands to look again. Needs
``pip install 'prodlens[demo]'``.

Example::

    prodlens demo                       # writes ./prodlens-demo/
    prodlens demo --out /tmp/demo --requests 1000 --seed 3
    prodlens demo --keep                # then send your own requests to the shop
    prodlens demo --live                # watch finds the outage and messages the customers
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import random
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final

from prodlens.demo._process import (
    EXTRA_HINT,
    HOST,
    LOG_FILE,
    DemoError,
    ShopProcess,
    check_installed,
    shop_environment,
    start_shop,
)
from prodlens.demo.traffic import (
    CUSTOMER_HEADER,
    PLANTED,
    Progress,
    Request,
    TrafficResult,
    make_customers,
    plan_sessions,
    run_traffic,
)

__all__ = ["DemoError", "add_commands", "run_demo", "shop_environment"]

_SPANS: Final = "spans"
_SPANS_FILE: Final = "spans.jsonl"
_CSV: Final = "affected-customers.csv"
_GROUND_TRUTH: Final = "ground-truth.json"
_COHORT_PREFIX: Final = "prodlens.cohort."


def add_commands(subparsers: Any) -> None:
    """Add ``demo`` to the ``prodlens`` command's sub-parsers."""
    parser = subparsers.add_parser(
        "demo", help="run a shop with a partial outage and find who is affected",
        description="Start a small shop (Flask, 127.0.0.1) under OpenTelemetry "
        "auto-instrumentation with prodlens configured by environment variables, send it "
        "traffic from a few hundred customers while its new checkout is broken for one "
        "region, then run 'prodlens slice' and 'prodlens affected' over the exported spans. "
        f"Needs {EXTRA_HINT}.",
    )
    parser.add_argument("--out", default="prodlens-demo", metavar="DIR",
                        help="folder for the spans, the CSV and the logs "
                             "(default: ./prodlens-demo)")
    parser.add_argument("--requests", type=_at_least(50), default=3000, metavar="N",
                        help="requests to send (default: 3000; below ~1000 the broken "
                             "subgroup may be too small to stand out)")
    parser.add_argument("--customers", type=_at_least(20), default=300, metavar="N",
                        help="customers in the population (default: 300)")
    parser.add_argument("--clients", type=_at_least(1), default=8, metavar="N",
                        help="concurrent clients (default: 8)")
    parser.add_argument("--seed", type=int, default=7,
                        help="seed of the traffic's random choices (default: 7)")
    parser.add_argument("--port", type=_port, default=0,
                        help="the shop's port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--live", action="store_true",
                        help="run 'prodlens watch' beside the shop instead: deploy the bug "
                             "mid-run, see the incident open and the affected customers "
                             "messaged (a local webhook prints what it gets), then the fix "
                             "and the resolve (about a minute)")
    parser.add_argument("--keep", action="store_true",
                        help="leave the shop running after the analysis, until Ctrl-C")
    parser.set_defaults(handler=run_demo)


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a number >= {minimum}")
        return value

    return parse


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 0 (any free port) to 65535")
    return value


# --- analysis -------------------------------------------------------------------------------


def _write_affected_csv(spans: Path, csv_path: Path) -> None:
    """Write the CSV ``prodlens affected`` writes: the analysis API and its CSV renderer."""
    from prodlens.analysis import affected_customers
    from prodlens.analysis._output import render_affected_csv

    report = affected_customers([spans])
    csv_path.write_text(render_affected_csv(report), encoding="utf-8", newline="")


def _read_affected(csv_path: Path) -> frozenset[str]:
    """The customers listed in the CSV."""
    with open(csv_path, encoding="utf-8", newline="") as stream:
        return frozenset(row["customer"] for row in csv.DictReader(stream))


# --- output ---------------------------------------------------------------------------------


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the current directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _prodlens_command() -> str:
    """How to run ``prodlens`` again: by name when on PATH, else the script beside Python."""
    found = shutil.which("prodlens")
    beside = Path(sys.executable).with_name("prodlens")
    if found and Path(found).resolve() == beside.resolve():
        return "prodlens"
    if beside.is_file():
        return shlex.quote(str(beside))
    if found:
        return "prodlens"
    return f"{shlex.quote(sys.executable)} -m prodlens"


def _say(text: str = "", stream: IO[str] | None = None) -> None:
    print(text, file=stream or sys.stdout, flush=True)


def _curl(url: str) -> str:
    headers = {CUSTOMER_HEADER: "cus_9999", "x-plan": "pro", "x-region": "eu-west",
               "x-app-version": "2.4.1", "x-flag-new-checkout": "on"}
    parts = [f"curl -i {url}/api/cart"]
    parts += [f"-H {shlex.quote(f'{key}: {value}')}" for key, value in headers.items()]
    return " ".join(parts)


# --- the command ----------------------------------------------------------------------------


def _prepare(out: Path) -> Path:
    """Create the folder and remove what an earlier run left (only the demo's own files)."""
    spans = out / _SPANS
    spans.mkdir(parents=True, exist_ok=True)
    for old in spans.glob(f"{_SPANS_FILE}*"):
        old.unlink()
    for name in (_CSV, _GROUND_TRUTH, LOG_FILE):
        (out / name).unlink(missing_ok=True)
    return spans


def run_demo(args: argparse.Namespace) -> int:
    """Handler of ``prodlens demo``; returns the exit status.

    0: the analysis named the planted subgroup; 1: it did not, or the demo failed; 2: the
    ``demo`` extra is missing; 130: interrupted.
    """
    started = time.monotonic()
    try:
        check_installed()
        out = Path(args.out).expanduser().resolve()
        spans = _prepare(out)
        env = shop_environment(spans / _SPANS_FILE)
    except DemoError as error:
        _say(f"prodlens demo: {error}", sys.stderr)
        return 2
    except OSError as error:
        _say(f"prodlens demo: cannot use {args.out}: {error}", sys.stderr)
        return 2
    try:
        if getattr(args, "live", False):
            from prodlens.demo._live import run_live

            _say("prodlens demo --live: prodlens watch follows a running shop's spans; a bug is "
                 "deployed mid-run,\nprodlens opens an incident by itself and messages the "
                 "affected customers; then the fix.")
            _say()
            return run_live(args, out, spans, env, started, _say)
        return _run(args, out, spans, env, started)
    except DemoError as error:
        _say(f"prodlens demo: {error}", sys.stderr)
        return 1
    except KeyboardInterrupt:
        _say("prodlens demo: interrupted; the shop is stopped", sys.stderr)
        return 130


def _run(args: argparse.Namespace, out: Path, spans: Path, env: Mapping[str, str],
         started: float) -> int:
    _say("prodlens demo: a shop has a partial outage; prodlens tags its spans, then finds the "
         "failing\nsubgroup and the customers affected.")
    _say()
    _say("The shop is a Flask app with no prodlens code, run under OpenTelemetry "
         "auto-instrumentation\n(as opentelemetry-instrument does) and configured only by "
         "these variables:")
    for key in sorted(env):
        if key.startswith("PRODLENS_") or key in ("OTEL_TRACES_EXPORTER", "OTEL_SERVICE_NAME"):
            value = _shown(Path(env[key])) if key == "PRODLENS_FILE_PATH" else env[key]
            _say(f"  {key}={value}")
    _say()

    rng = random.Random(args.seed)
    sessions = plan_sessions(rng, make_customers(rng, args.customers), args.requests)
    shop = start_shop(out, env, args.port)
    try:
        _say(f"  shop      listening on {shop.url} (pid {shop.process.pid}), ready in "
             f"{time.monotonic() - shop.started:.1f} s")
        traffic = _drive(shop, sessions, args.clients)
        traffic.write_ground_truth(out / _GROUND_TRUTH)
        port = shop.port
        status = shop.stop()
        if status != 0:
            raise DemoError(f"the shop exited with status {status}:\n{shop.log_tail()}")
        outcome = _analyse(out, spans, traffic, started)
        if args.keep:
            _keep(out, env, port, spans)
        return outcome
    finally:
        shop.stop()


def _drive(shop: ShopProcess, sessions: Sequence[Sequence[Request]],
           clients: int) -> TrafficResult:
    total = sum(len(session) for session in sessions)
    progress = Progress(total, "traffic")
    stop = threading.Event()

    def tick(done: int) -> None:
        progress.update(done)
        if not shop.alive():  # no point in knocking on a closed door
            stop.set()

    try:
        traffic = run_traffic(HOST, shop.port, sessions, clients=clients, progress=tick,
                              stop=stop)
    finally:
        progress.close()
    if not shop.alive():
        raise DemoError(f"the shop exited with status {shop.process.returncode} during the "
                        f"traffic, after {traffic.sent:,} requests:\n{shop.log_tail()}")
    rate = traffic.sent / traffic.seconds if traffic.seconds else 0.0
    _say(f"  traffic   {traffic.sent:,} requests from {len(traffic.customers):,} customers, "
         f"{clients} concurrent clients, {traffic.seconds:.1f} s ({rate:,.0f} req/s); "
         f"{traffic.failed:,} failed")
    if traffic.unanswered:
        _say(f"  traffic   {traffic.unanswered:,} requests got no answer")
    return traffic


def _analyse(out: Path, spans: Path, traffic: TrafficResult, started: float) -> int:
    from prodlens.analysis import slice_failures

    report = slice_failures([spans])
    spans_file = spans / _SPANS_FILE
    accounted = ("every request is there" if report.units == traffic.sent else
                 f"WARNING: {report.units:,} requests in the spans, {traffic.sent:,} sent")
    _say(f"  spans     {report.input.spans:,} spans in {_shown(spans_file)}, "
         f"{report.units:,} requests ({accounted})")
    _say()

    planted = {f"{_COHORT_PREFIX}{name}": value for name, value in PLANTED.items()}
    command = _prodlens_command()
    found: Mapping[str, str] = {}
    _say("Failing subgroup (prodlens slice)")
    if report.findings:
        top = report.findings[0]
        found = dict(top.subgroup)
        _say(f"  {top.label()}")
        rest_units = report.units - top.units
        rest_failures = report.failures - top.failures
        _say(f"  {top.rate:.1%} of its {top.units:,} requests failed ({top.failures:,}), vs "
             f"{top.rest_rate:.1%} of the other {rest_units:,} ({rest_failures:,}); "
             f"{top.customers:,} customers; p = {top.p_value:.1e}")
        if found == planted:
            _say("  That is the bug planted in the shop: the new checkout's tax table has no "
                 "rate for eu-west.")
    else:
        _say(f"  {report.verdict()}")
    if found != planted:
        _say("  NOT the planted failure ("
             + " ∧ ".join(f"{key}={value}" for key, value in planted.items()) + ")")
    _say()

    csv_path = out / _CSV
    _write_affected_csv(spans, csv_path)
    affected = _read_affected(csv_path)
    truth = frozenset(traffic.failed_customers)
    _say("Affected customers (prodlens affected)")
    in_subgroup = report.findings[0].customers if report.findings else 0
    others = len(affected) - in_subgroup
    why = " (payment-gateway timeouts)" if found == planted and others else ""
    _say(f"  {len(affected):,} customers saw at least one failure: "
         f"{in_subgroup:,} in the failing subgroup, {others:,} elsewhere{why}")
    check = ("the same customers the traffic driver saw fail" if affected == truth
             else f"WARNING: the traffic driver saw {len(truth):,} customers fail")
    _say(f"  CSV: {_shown(csv_path)} ({check})")
    _say()

    shown_spans = shlex.quote(_shown(spans))
    where = " ".join(f"--where {shlex.quote(f'{key}={value}')}"
                     for key, value in (found or planted).items())
    _say("Look at the data again")
    _say(f"  {command} slice {shown_spans}")
    _say(f"  {command} affected {shown_spans} > affected.csv")
    _say(f"  {command} affected {shown_spans} {where} --format table")
    _say(f"  (ground truth of this run: {_shown(out / _GROUND_TRUTH)}; shop log: "
         f"{_shown(out / LOG_FILE)})")
    _say()
    _say(f"Done in {time.monotonic() - started:.1f} s.")
    ok = found == planted and affected == truth and report.units == traffic.sent
    return 0 if ok else 1


def _keep(out: Path, env: Mapping[str, str], port: int, spans: Path) -> None:
    """Run the shop again (same port when free) until Ctrl-C."""
    try:
        shop = start_shop(out, env, port)
    except DemoError:
        shop = start_shop(out, env, 0)
    try:
        _say()
        _say(f"The shop is running at {shop.url}; Ctrl-C stops it. Try your own headers:")
        _say(f"  {_curl(shop.url)}")
        _say(f"Its spans are appended to {_shown(spans / _SPANS_FILE)}; run "
             f"'{_prodlens_command()} slice {shlex.quote(_shown(spans))}' once it is stopped.")
        with contextlib.suppress(KeyboardInterrupt):
            while shop.alive():
                time.sleep(0.5)
    finally:
        shop.stop()
    _say("The shop is stopped.")
