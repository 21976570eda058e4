"""Cost of one patched ASGI ``__call__``: a wrapt wrapper against prodlens's plain-function twin.

``prodlens.integrations._patching.replace`` patches the per-request ASGI entry points with a
plain ``async def`` (``asgi.asgi_call``) instead of a wrapt wrapper. This measures what that
buys, per call, in one process, interleaved (order shuffled each round with a private Random),
medians over rounds, against the same class unpatched:

* nested: a layer that passes through (prodlens's scope is already open for this connection;
  FastAPI has two such layers per request),
* outermost: the layer that opens the request's scope (resolving a header source).

Run::

    python bench/bench_entry_points.py --rounds 25
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

import prodlens
from prodlens.integrations import _patching
from prodlens.integrations.asgi import SCOPE_KEY, asgi_call, wrap_app_call

HEADERS = [(b"host", b"shop"), (b"x-customer-id", b"acme")] + [
    (b"x-h%d" % i, b"v") for i in range(8)]


def _app_class() -> Any:
    class App:
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            return None

    return App


def _run(app: Any, calls: int, nested: bool) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        scope: dict[str, Any] = {"type": "http", "headers": HEADERS, "query_string": b""}
        if nested:
            scope[SCOPE_KEY] = True
        coroutine = app(scope, None, None)
        try:
            coroutine.send(None)
        except StopIteration:
            pass
    return (time.perf_counter_ns() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    prodlens.configure(TracerProvider(), environ={}, metrics=False,
                       customer_from="header:x-customer-id")
    wrapped, twin, bare = _app_class(), _app_class(), _app_class()
    _patching.wrap(wrapped, "__call__", wrap_app_call)
    _patching.replace(twin, "__call__", asgi_call, wrap_app_call)
    apps = {"wrapt wrapper": wrapped(), "plain twin": twin(), "unpatched": bare()}
    rng = random.Random(1)
    for nested in (True, False):
        times: dict[str, list[float]] = {name: [] for name in apps}
        for _ in range(args.rounds):
            order = list(apps)
            rng.shuffle(order)
            for name in order:
                times[name].append(_run(apps[name], args.calls, nested))
        base = statistics.median(times["unpatched"])
        print("nested layer (passes through)" if nested else "outermost layer (opens the scope)")
        for name in ("wrapt wrapper", "plain twin"):
            print(f"  {name:<14} +{statistics.median(times[name]) - base:8.0f} ns per call")
    _patching.unpatch_all()


if __name__ == "__main__":
    main()
