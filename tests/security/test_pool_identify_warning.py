"""identify() outside any scope on a thread-pool worker sticks to that worker thread (issue #16,
finding 6): prodlens warns once, naming ``prodlens.tag`` as the scoped alternative. Each case
runs in a fresh interpreter, so "once" does not depend on what other tests logged."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SETUP = """
import asyncio, logging, sys, threading
from concurrent.futures import ThreadPoolExecutor
from opentelemetry.sdk.trace import TracerProvider
import prodlens
logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="%(levelname)s %(message)s")
prodlens.configure(TracerProvider(), environ={}, metrics=False)
"""


def run(body: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", SETUP + textwrap.dedent(body)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line.startswith("WARNING")]


def test_pool_worker_identify_outside_a_scope_warns_once_naming_tag() -> None:
    warnings = run("""
        def job(n):
            before = prodlens.current()
            prodlens.identify(f"c{n}")
            return before.customer if before else None
        with ThreadPoolExecutor(max_workers=1) as pool:
            seen = list(pool.map(job, range(5)))
        assert seen == [None, "c0", "c1", "c2", "c3"], seen  # the trap the warning names
    """)
    assert len(warnings) == 1
    assert "on thread-pool worker ThreadPoolExecutor-" in warnings[0]
    assert "prodlens.tag" in warnings[0]


def test_custom_named_pools_and_asyncio_executors_warn_too() -> None:
    assert len(run("""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobs") as pool:
            pool.submit(prodlens.identify, "acme").result()
    """)) == 1
    assert len(run("""
        async def main():
            await asyncio.get_running_loop().run_in_executor(None, prodlens.identify, "acme")
        asyncio.run(main())
    """)) == 1


def test_no_warning_inside_a_scope_or_off_pool_threads() -> None:
    assert run("""
        def job(n):
            with prodlens.tag():
                prodlens.identify(f"c{n}")
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(job, range(4)))
        prodlens.identify("main thread")
        thread = threading.Thread(target=prodlens.identify, args=("own thread",))
        thread.start(); thread.join()
    """) == []
