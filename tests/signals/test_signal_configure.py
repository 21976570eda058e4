"""The zero-config path: ``prodlens.configure()`` attaches the metrics processor, which records
through the global meter provider (run in a subprocess: the global provider is set once)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind
    import prodlens
    from prodlens.signals import ProdlensSampler

    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    provider = TracerProvider(sampler=ProdlensSampler())
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    prodlens.configure(provider, environ=ENV)
    tracer = provider.get_tracer("t")
    for i in range(40):
        with prodlens.tag(f"c{i % 4}", plan="pro" if i % 2 else "free"):
            with tracer.start_as_current_span("GET /a", kind=SpanKind.SERVER,
                                              attributes={"http.route": "/a"}):
                with tracer.start_as_current_span("child"):
                    pass
    totals = {}
    data = reader.get_metrics_data()
    for rm in (data.resource_metrics if data is not None else []):
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for p in m.data.data_points:
                    key = m.name + "|" + str(p.attributes.get("prodlens.cohort.plan"))
                    totals[key] = totals.get(key, 0) + getattr(p, "value", getattr(p, "count", 0))
    print(json.dumps({"exported": len(exporter.get_finished_spans()), "totals": totals}))
""")


def run(env: dict[str, str]) -> dict[str, object]:
    script = SCRIPT.replace("ENV", repr(env))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_configure_attaches_metrics_and_sampler_records_unsampled_roots() -> None:
    result = run({"PRODLENS_SAMPLE_RATIO": "0"})
    assert result == {"exported": 0, "totals": {
        "prodlens.requests|free": 20, "prodlens.requests|pro": 20,
        "prodlens.request.duration|free": 20, "prodlens.request.duration|pro": 20,
        "prodlens.requests.repeated|free": 16, "prodlens.requests.repeated|pro": 16,
    }}


def test_metrics_off_attaches_nothing_and_drops_unsampled_roots() -> None:
    result = run({"PRODLENS_SAMPLE_RATIO": "0", "PRODLENS_METRICS": "false"})
    assert result == {"exported": 0, "totals": {}}


def test_storms_off_keeps_the_metrics() -> None:
    result = run({"PRODLENS_SAMPLE_RATIO": "0", "PRODLENS_STORMS": "false"})
    assert result == {"exported": 0, "totals": {
        "prodlens.requests|free": 20, "prodlens.requests|pro": 20,
        "prodlens.request.duration|free": 20, "prodlens.request.duration|pro": 20,
    }}
