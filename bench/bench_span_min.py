"""Per-span cost of prodlens's processor, robust to a loaded machine: the best of many blocks.

A bare SDK provider and one configured by prodlens (customer + 4 cohorts, inside a ``tag``),
no span processor besides prodlens's (so no export cost): each block starts and ends
``--spans`` spans; the minimum per-span time over ``--blocks`` interleaved blocks is kept for
each (the minimum is what a quiet machine gives; medians move with other load). Compare two
checkouts by running it with each on ``PYTHONPATH``::

    python bench/bench_span_min.py --blocks 60
"""

from __future__ import annotations

import argparse
import time

from opentelemetry.sdk.trace import TracerProvider

import prodlens


def _block(provider: TracerProvider, spans: int) -> float:
    tracer = provider.get_tracer("bench")
    start = time.perf_counter_ns()
    for _ in range(spans):
        tracer.start_span("s").end()
    return (time.perf_counter_ns() - start) / spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=60)
    parser.add_argument("--spans", type=int, default=2000)
    args = parser.parse_args()
    bare, tagged = TracerProvider(), TracerProvider()
    prodlens.configure(tagged, environ={}, metrics=False)
    scope = prodlens.tag("acme", plan="pro", region="eu-west", app_version="2.3.0",
                         **{"flag.new_checkout": "on"})
    best_bare = best_tagged = float("inf")
    for _ in range(args.blocks):
        best_bare = min(best_bare, _block(bare, args.spans))
        with scope:
            best_tagged = min(best_tagged, _block(tagged, args.spans))
    print(f"bare SDK {best_bare:.0f} ns/span; with prodlens {best_tagged:.0f} ns/span; "
          f"added {best_tagged - best_bare:.0f} ns ({best_tagged / best_bare - 1:+.1%})")


if __name__ == "__main__":
    main()
