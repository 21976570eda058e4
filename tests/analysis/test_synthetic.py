"""The generator writes real SDK spans into real OTLP/JSON files and never seeds `random`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from prodlens.analysis.synthetic import generate


def test_files_hold_sdk_spans_with_resources_and_cohorts(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object) -> None:
        raise AssertionError("random.seed() on the global module")

    monkeypatch.setattr(random, "seed", forbidden)
    truth = generate(tmp_path, traces=200, seed=3)
    assert {p.name for p in truth.paths} >= {"frontend-eu-west.jsonl", "api-eu-west-4.jsonl"}
    services, span_ids, spans = set(), set(), 0
    for path in truth.paths:
        for line in path.read_text().splitlines():
            for resource_spans in json.loads(line)["resourceSpans"]:
                resource = {a["key"]: a["value"]["stringValue"]
                            for a in resource_spans["resource"]["attributes"]}
                assert resource["telemetry.sdk.name"] == "opentelemetry"  # written by the SDK
                assert {"service.version", "cloud.region", "host.name"} <= set(resource)
                services.add(resource["service.name"])
                for scope_spans in resource_spans["scopeSpans"]:
                    for span in scope_spans["spans"]:
                        spans += 1
                        span_ids.add(span["spanId"])
                        assert len(span["traceId"]) == 32 and len(span["spanId"]) == 16
    assert services == {"frontend", "api", "billing"}
    assert spans == truth.spans == len(span_ids)


def test_same_seed_same_requests(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", traces=300, seed=5)
    second = generate(tmp_path / "b", traces=300, seed=5)
    assert (first.spans, first.failed_traces, first.failed_customers) == \
        (second.spans, second.failed_traces, second.failed_customers)
