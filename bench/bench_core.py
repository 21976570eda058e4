"""Cost per span of tagging, against the bare SDK and the alternatives, in one process.

Contenders (each its own TracerProvider with a BatchSpanProcessor and a no-op exporter):
  reference  bare SDK
  baggage    + opentelemetry-processor-baggage's BaggageSpanProcessor copying 5 baggage entries
  floor      + a hand-written processor: read a contextvar, one set_attributes of a prebuilt
             5-entry dict (the floor through the public SDK API)
  prodlens   + prodlens (customer + 4 cohorts), open-span bookkeeping included

Rounds are interleaved (contender order shuffled each round with a private Random) and the
report gives medians of ns/span and of paired differences against the reference of the same
round. Run:

    python bench/bench_core.py            # ~30 s
    python bench/bench_core.py --rounds 60 --spans 5000
"""

from __future__ import annotations

import argparse
import contextvars
import random
import statistics
import time
from collections.abc import Callable, Sequence

from opentelemetry import baggage, context
from opentelemetry.processor.baggage import ALLOW_ALL_BAGGAGE_KEYS, BaggageSpanProcessor
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import prodlens

ATTRS = {
    "enduser.id": "acme",
    "prodlens.cohort.plan": "pro",
    "prodlens.cohort.region": "eu-west",
    "prodlens.cohort.app_version": "2.3.0",
    "prodlens.cohort.flag.new_checkout": "on",
}


class NoopExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


_floor_var: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "floor", default=None
)


class FloorProcessor(SpanProcessor):
    def on_start(self, span, parent_context=None):  # type: ignore[no-untyped-def]
        attrs = _floor_var.get()
        if attrs is not None:
            span.set_attributes(attrs)


def make_provider(extra: SpanProcessor | None, spans: int) -> TracerProvider:
    provider = TracerProvider()
    if extra is not None:
        provider.add_span_processor(extra)
    provider.add_span_processor(
        BatchSpanProcessor(NoopExporter(), max_queue_size=spans * 4, max_export_batch_size=512,
                           schedule_delay_millis=100)
    )
    return provider


def block(provider: TracerProvider, spans: int, setup: Callable[[], Callable[[], None]]) -> float:
    tracer = provider.get_tracer("bench")
    teardown = setup()
    try:
        start = time.perf_counter_ns()
        for _ in range(spans):
            with tracer.start_as_current_span("op"):
                pass
        elapsed = time.perf_counter_ns() - start
    finally:
        teardown()
    provider.force_flush()
    return elapsed / spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--spans", type=int, default=3000)
    args = parser.parse_args()

    reference = make_provider(None, args.spans)
    with_baggage = make_provider(BaggageSpanProcessor(ALLOW_ALL_BAGGAGE_KEYS), args.spans)
    floor = make_provider(FloorProcessor(), args.spans)
    tagged = make_provider(None, args.spans)
    prodlens.configure(tagged, environ={}, metrics=False)

    def no_setup() -> Callable[[], None]:
        return lambda: None

    def baggage_setup() -> Callable[[], None]:
        ctx = context.get_current()
        for key, value in ATTRS.items():
            ctx = baggage.set_baggage(key, value, ctx)
        token = context.attach(ctx)
        return lambda: context.detach(token)

    def floor_setup() -> Callable[[], None]:
        token = _floor_var.set(dict(ATTRS))
        return lambda: _floor_var.reset(token)

    def prodlens_setup() -> Callable[[], None]:
        scope = prodlens.tag("acme", plan="pro", region="eu-west", app_version="2.3.0",
                             **{"flag.new_checkout": "on"})
        scope.__enter__()
        return lambda: scope.__exit__(None, None, None)

    contenders = {
        "reference": (reference, no_setup),
        "baggage": (with_baggage, baggage_setup),
        "floor": (floor, floor_setup),
        "prodlens": (tagged, prodlens_setup),
    }
    # Check that the contenders really tag, once, before timing.
    results: dict[str, list[float]] = {name: [] for name in contenders}
    order = list(contenders)
    shuffler = random.Random(7)
    for provider, setup in contenders.values():  # warm-up
        block(provider, args.spans, setup)
    for _ in range(args.rounds):
        shuffler.shuffle(order)
        for name in order:
            provider, setup = contenders[name]
            results[name].append(block(provider, args.spans, setup))

    ref = results["reference"]
    print(f"{args.rounds} interleaved rounds x {args.spans} spans; ns per span (median)\n")
    print(f"{'contender':<11} {'ns/span':>9} {'added ns':>9} {'vs floor':>9} {'vs baggage':>11}")
    added = {
        name: statistics.median(v - r for v, r in zip(values, ref, strict=True))
        for name, values in results.items()
    }
    for name, values in results.items():
        vs_floor = added[name] / added["floor"] if added["floor"] else float("nan")
        vs_bag = added[name] / added["baggage"] if added["baggage"] else float("nan")
        print(
            f"{name:<11} {statistics.median(values):>9.0f} {added[name]:>9.0f} "
            f"{vs_floor:>8.2f}x {vs_bag:>10.2f}x"
        )
    for provider, _ in contenders.values():
        provider.shutdown()


if __name__ == "__main__":
    main()
