"""A process that appends batches of 50 spans to an OTLP/JSON file with prodlens's exporter,
printing ``WROTE`` after each batch written whole. Run: ``spans_writer.py PATH MODE N``.

MODE ``loop``: write until killed. ``tear``: the file may grow only N bytes more (a full disk:
``RLIMIT_FSIZE``), so a line is torn; then print ``TORN`` and wait to be killed. ``full``: as
``tear``, then the space comes back and 3 more batches are written; exit 0.
"""

from __future__ import annotations

import os
import resource
import signal
import sys

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from prodlens.exporter import OTLPJsonFileSpanExporter

BATCH = 50


def main() -> None:
    path, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("writer")
    for index in range(BATCH):
        with tracer.start_as_current_span(f"work {index}", attributes={"pad": "é" * 500}):
            pass
    batch = memory.get_finished_spans()
    exporter = OTLPJsonFileSpanExporter(path, max_bytes=0)
    if mode == "loop":
        while True:
            if exporter.export(batch).name == "SUCCESS":
                print("WROTE", flush=True)
    # A full disk: writes past the limit fail with EFBIG (the signal would kill us instead).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    size = os.path.getsize(path) if os.path.exists(path) else 0
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + count, hard))
    while exporter.export(batch).name == "SUCCESS":
        print("WROTE", flush=True)
    print("TORN", flush=True)
    if mode == "tear":
        sys.stdin.read()  # killed here
        return
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # space again
    for _ in range(3):
        if exporter.export(batch).name == "SUCCESS":
            print("WROTE", flush=True)
    exporter.shutdown()


if __name__ == "__main__":
    main()
