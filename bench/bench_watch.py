"""Benchmark ``prodlens watch``: detection delay, false incidents, and ingest cost.

1. **Detection delay** (span time, so independent of this machine's speed): a subgroup with 2%
   of the traffic (``plan=enterprise`` and ``region=ap-south``) starts failing at 20% against a
   0.5% baseline everywhere. Spans are written through the real SDK and the ``prodlens_file``
   exporter, followed by the real :class:`~prodlens.live.Watcher` with ``watch``'s defaults
   (5-minute window, every 10 s, 3 confirmations, alpha 1e-5). Reported: seconds of span time
   from the onset to the incident (the operator webhook's evaluation), and to the batch of the
   last customer whose first failure was before the incident opened; and the worst wait of any
   customer between their first failure in the subgroup and the evaluation that batched them.
2. **False incidents per simulated week** of clean traffic at 100 rps
   (``prodlens.live.simulate``: the engine's buckets made straight from the traffic model, then
   the real window, report, detector and incident manager, evaluation by evaluation).
3. **Ingest cost**: CPU seconds ``watch`` spends per second of 10,000 spans/s of traffic, next
   to the parse floor (decoding every line into the engine's Structs and nothing else), on the
   same file, interleaved rounds, medians.

Run::

    .venv/bin/python bench/bench_watch.py                 # ~5 min: delays, 1 simulated day, CPU
    .venv/bin/python bench/bench_watch.py --days 7        # the full simulated week (~+10 min)
    .venv/bin/python bench/bench_watch.py --only cpu      # one part
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind
from opentelemetry.trace.status import Status, StatusCode

from prodlens.exporter import OTLPJsonFileSpanExporter
from prodlens.incidents import IncidentManager, Ledger, NotifyOptions
from prodlens.live import Evaluation, Watcher, WatchOptions
from prodlens.live.simulate import simulate

PLANS = ("free", "pro", "enterprise")
REGIONS = ("eu-west", "us-east", "ap-south", "sa-east")
ROUTES = ("/api/cart", "/api/checkout", "/api/search", "/api/profile")
PLANTED = ("enterprise", "ap-south")
T0 = 1_767_225_600.0


@dataclass
class _Writer:
    """Spans through the real SDK into OTLP/JSON lines, at span times chosen here."""

    directory: Path
    seed: int

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        cells = [(p, r) for p in PLANS for r in REGIONS if (p, r) != PLANTED]
        self.others = [(f"c{n:05d}", *self.rng.choice(cells)) for n in range(5000)]
        self.planted = [(f"p{n:04d}", *PLANTED) for n in range(200)]
        self.directory.mkdir(parents=True, exist_ok=True)
        self.provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
        self.processor = BatchSpanProcessor(
            OTLPJsonFileSpanExporter(str(self.directory / "spans.jsonl"), max_bytes=0),
            max_queue_size=1_000_000, max_export_batch_size=512, schedule_delay_millis=600_000)
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("bench")
        self.first_failure: dict[str, float] = {}

    def write(self, start: float, stop: float, rps: float, planted_rate: float,
              outage: bool = False) -> None:
        """``rps`` requests a second of span time; ``outage``: failures in the subgroup are
        the ones to be messaged (their first failure time is kept)."""
        second = start
        while second < stop:
            for _ in range(round(rps)):
                at = T0 + second + self.rng.random()
                in_planted = self.rng.random() < 0.02
                customer, plan, region = self.rng.choice(self.planted if in_planted
                                                         else self.others)
                failed = self.rng.random() < (planted_rate if in_planted else 0.005)
                if failed and in_planted and outage:
                    self.first_failure.setdefault(customer, at)
                self._span(at, customer, plan, region, failed)
            self.processor.force_flush()
            second += 1

    def _span(self, at: float, customer: str, plan: str, region: str, failed: bool) -> None:
        start = int(at * 1e9)
        route = self.rng.choice(ROUTES)
        root = self.tracer.start_span(
            f"GET {route}", kind=SpanKind.SERVER, start_time=start,
            attributes={"http.route": route, "enduser.id": customer,
                        "prodlens.cohort.plan": plan, "prodlens.cohort.region": region,
                        "http.response.status_code": 500 if failed else 200})
        with trace.use_span(root, end_on_exit=False):
            child = self.tracer.start_span("SELECT", kind=SpanKind.CLIENT,
                                           start_time=start + 1_000_000)
            child.end(end_time=start + 5_000_000)
        if failed:
            root.set_status(Status(StatusCode.ERROR))
        root.end(end_time=start + 10_000_000)

    def close(self) -> None:
        self.provider.shutdown()


def detection(rps: float, seed: int, scratch: Path) -> dict[str, float | None]:
    """One run: clean for a window, then the planted failure for 5 minutes."""
    onset, outage = 360.0, 300.0
    writer = _Writer(scratch / f"spans-{rps}-{seed}", seed)
    batched_at: dict[str, float] = {}
    opened: list[float] = []
    with Ledger(scratch / f"ledger-{rps}-{seed}.sqlite3") as ledger:
        manager = IncidentManager(ledger, NotifyOptions())

        def seen(evaluation: Evaluation) -> None:
            if evaluation.opened and not opened:
                opened.append(evaluation.at)
            for incident in ledger.incidents():
                for customer in ledger.customers(incident.id):
                    batched_at.setdefault(customer, evaluation.at)

        watcher = Watcher([str(writer.directory)], WatchOptions(from_start=True), manager,
                          out=open("/dev/null", "w"), on_evaluation=seen)  # noqa: SIM115
        try:
            writer.write(0, onset, rps, 0.005)
            watcher.step()
            step = 10.0
            start = onset
            while start < onset + outage:
                writer.write(start, start + step, rps, 0.2, outage=True)
                watcher.step()
                start += step
            writer.write(onset + outage, onset + outage + 30, rps, 0.005)
            watcher.step()
        finally:
            writer.close()
    if not opened:
        return {"incident": None, "last_early_batch": None, "worst_wait": None}
    open_at = opened[0]
    early = [c for c, at in writer.first_failure.items() if at < open_at]
    last_early = max((batched_at.get(c, float("inf")) for c in early), default=open_at)
    waits = [batched_at[c] - at for c, at in writer.first_failure.items() if c in batched_at]
    return {"incident": open_at - T0 - onset, "last_early_batch": last_early - T0 - onset,
            "worst_wait": max(waits) if waits else None,
            "missed": float(sum(1 for c in writer.first_failure if c not in batched_at))}


def false_incidents(days: float, seed: int) -> tuple[int, int]:
    result = simulate(hours=24 * days, seed=seed)
    return result.false_incidents, result.evaluations


def cpu(scratch: Path, rounds: int) -> dict[str, float]:
    """CPU seconds per span: watch over a file vs decoding its lines (the floor)."""
    from prodlens.analysis._reader import READ_BUFFER, load_decoder

    # 10,000 spans/s of span time (5,000 requests/s, two spans each) for 30 s: evaluations
    # (every 10 s) weigh on the ingest as they would at that rate.
    writer = _Writer(scratch / "cpu", 99)
    try:
        writer.write(0, 30, 5000, 0.005)
    finally:
        writer.close()
    path = writer.directory / "spans.jsonl"
    spans = 300_000
    decode = load_decoder()

    import orjson

    from prodlens.analysis import slice_failures

    def floor() -> float:
        started = time.process_time()
        with open(path, "rb", buffering=READ_BUFFER) as stream:
            for line in stream:
                decode(line)
        return time.process_time() - started

    def orjson_floor() -> float:
        started = time.process_time()
        with open(path, "rb", buffering=READ_BUFFER) as stream:
            for line in stream:
                orjson.loads(line)
        return time.process_time() - started

    def slice_once() -> float:
        started = time.process_time()
        slice_failures([path])
        return time.process_time() - started

    def watch(number: int) -> float:
        with Ledger(scratch / f"cpu-ledger-{number}.sqlite3") as ledger:
            watcher = Watcher([str(path)], WatchOptions(from_start=True),
                              IncidentManager(ledger, NotifyOptions()),
                              out=open("/dev/null", "w"))  # noqa: SIM115
            started = time.process_time()
            watcher.step()
            return time.process_time() - started

    floors, orjsons, slices, watches = [], [], [], []
    for number in range(rounds):
        floors.append(floor())
        orjsons.append(orjson_floor())
        slices.append(slice_once())
        watches.append(watch(number))

    def per_10k(times: list[float]) -> float:
        return statistics.median(times) / spans * 10_000

    return {"floor": per_10k(floors), "orjson": per_10k(orjsons), "slice": per_10k(slices),
            "watch": per_10k(watches)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="20,100,1000")
    parser.add_argument("--seeds", type=int, default=2, help="runs per rate (default: 2)")
    parser.add_argument("--days", type=float, default=1.0,
                        help="simulated days of clean traffic (default: 1)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("delay", "false", "cpu"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        if args.only in (None, "delay"):
            print("| rps | onset -> incident (s) | onset -> last early customer batch (s) | "
                  "worst customer wait (s) | customers missed |")
            print("|---:|---:|---:|---:|---:|")
            for rate in (float(r) for r in args.rates.split(",")):
                runs = [detection(rate, seed, scratch) for seed in range(args.seeds)]
                def show(key: str, runs: list[dict[str, float | None]] = runs) -> str:
                    values = [run[key] for run in runs]
                    return " / ".join("none" if v is None else f"{v:.0f}" for v in values)
                print(f"| {rate:g} | {show('incident')} | {show('last_early_batch')} | "
                      f"{show('worst_wait')} | {show('missed')} |", flush=True)
        if args.only in (None, "false"):
            started = time.monotonic()
            false, evaluations = false_incidents(args.days, seed=1)
            print(f"\nfalse incidents: {false} in {args.days:g} simulated day(s) of clean "
                  f"traffic at 100 rps ({evaluations:,} evaluations, "
                  f"{time.monotonic() - started:.0f} s)", flush=True)
        if args.only in (None, "cpu"):
            figures = cpu(scratch, args.rounds)
            print(f"\ningest, CPU seconds per second of 10,000 spans/s (medians of "
                  f"{args.rounds} interleaved rounds; 10,000 spans/s of span time, half of them local roots):")
            print("| contender | CPU s per 10k spans | x msgspec floor | x orjson floor |")
            print("|---|---:|---:|---:|")
            for name, key in (("parse floor: msgspec decode", "floor"),
                              ("parse floor: orjson.loads", "orjson"),
                              ("prodlens slice (one pass)", "slice"),
                              ("prodlens watch (every 10 s)", "watch")):
                print(f"| {name} | {figures[key]:.3f} | {figures[key] / figures['floor']:.2f} "
                      f"| {figures[key] / figures['orjson']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
