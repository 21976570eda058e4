"""The series and labels the rules select are what opentelemetry-exporter-prometheus writes.

A real SDK MeterProvider with the exporter's reader, prodlens's cohort metrics, and the
exporter's HTTP server on 127.0.0.1, scraped like Prometheus does.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import start_http_server
from prometheus_client.parser import text_string_to_metric_families

import prodlens
from prodlens.alerting.rules import ERROR_LABEL, FAILED_VALUE, REQUESTS_METRIC, cohort_label
from prodlens.signals import CohortMetricsProcessor


@pytest.fixture
def scraped() -> Iterator[str]:
    reader = PrometheusMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader],
                                   resource=Resource.create({"service.name": "shop"}))
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    prodlens.configure(provider, environ={}, metrics=False)
    provider.add_span_processor(CohortMetricsProcessor(meter_provider=meter_provider))
    tracer = provider.get_tracer("tests")
    for plan, failed in (("free", False), ("enterprise", True), ("enterprise", False)):
        with prodlens.tag("acme", plan=plan, **{"app.version": "2.1"}):
            with tracer.start_as_current_span(
                    "GET /cart", kind=SpanKind.SERVER,
                    attributes={"http.route": "/cart",
                                "http.response.status_code": 500 if failed else 200}) as span:
                if failed:
                    span.set_status(Status(StatusCode.ERROR))
    server, thread = start_http_server(0, addr="127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics",
                                    timeout=10) as response:
            yield response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        meter_provider.shutdown()
        provider.shutdown()


def test_the_request_counter_and_its_labels(scraped: str) -> None:
    samples = {
        (sample.labels[cohort_label("plan")], sample.labels[ERROR_LABEL]): sample
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples if sample.name == REQUESTS_METRIC
    }
    assert {key: sample.value for key, sample in samples.items()} == {
        ("free", "false"): 1.0, ("enterprise", FAILED_VALUE): 1.0, ("enterprise", "false"): 1.0}
    labels = samples[("enterprise", FAILED_VALUE)].labels
    # The cohort "app.version" is the label the rules compute for it.
    assert labels == {
        "prodlens_cohort_plan": "enterprise", cohort_label("app.version"): "2.1",
        "error": "true", "http_route": "/cart", "http_status_class": "5xx",
        "service_name": "shop", "otel_scope_name": "prodlens",
        "otel_scope_version": prodlens.__version__, "otel_scope_schema_url": "",
    }
    assert "prodlens_request_duration_seconds_bucket" in scraped
