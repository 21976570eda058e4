"""prodlens in code: every span started for a request carries the customer and cohorts.

Run:  python examples/quickstart/quickstart.py
"""

from __future__ import annotations

import json

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import prodlens

provider = TracerProvider()
exporter = InMemorySpanExporter()
provider.add_span_processor(SimpleSpanProcessor(exporter))
prodlens.configure(provider)
tracer = provider.get_tracer("quickstart")


@prodlens.tag(customer=prodlens.arg("order.customer"), plan=prodlens.arg("order.plan"))
def checkout(order: dict[str, str]) -> None:
    with tracer.start_as_current_span("charge-card"):
        pass


# A request whose user is known only after authentication: the server span opened before.
with prodlens.tag(), tracer.start_as_current_span("GET /cart", kind=SpanKind.SERVER):
    with tracer.start_as_current_span("load-session"):
        prodlens.identify("acme", region="eu-west", app_version="2.3.0")
        checkout({"customer": "acme", "plan": "pro"})

for span in exporter.get_finished_spans():
    print(f"{span.name:<14} {json.dumps(dict(span.attributes or {}), sort_keys=True)}")
