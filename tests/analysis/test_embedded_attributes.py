"""How the embedded engine reads a unit's attributes: overrides, non-string values, long values.

The engine reads only candidate and customer attributes, string values directly and anything
else through the full conversion, and interns each (attribute, value) once; these spans mix
string and int values, span attributes that override a resource's, and a value too long to be
a subgroup value, so the exact report checks them together.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prodlens.analysis import SliceOptions, affected_customers, slice_failures
from prodlens.analysis._model import ABSENT


def attribute(key: str, value: Any) -> dict[str, Any]:
    kind = "intValue" if isinstance(value, int) else "stringValue"
    return {"key": key, "value": {kind: str(value) if kind == "intValue" else value}}


def root(number: int, attributes: list[dict[str, Any]], *, error: bool) -> dict[str, Any]:
    return {"traceId": f"{number:032x}", "spanId": f"{number:016x}", "name": "GET /x",
            "kind": 2, "startTimeUnixNano": str(1790000000000000000 + number),
            "endTimeUnixNano": str(1790000000100000000 + number),
            "attributes": attributes, "status": {"code": 2} if error else {}}


def write_export(path: Path) -> None:
    spans = []
    for number in range(40):
        # span attribute overrides the resource's cloud.region; an intValue cohort
        spans.append(root(number, [attribute("cloud.region", "us-east"),
                                   attribute("prodlens.cohort.tier", 3),
                                   attribute("enduser.id", f"cust-a{number % 4}")], error=True))
        spans.append(root(100 + number, [attribute("prodlens.cohort.tier", 1),
                                         attribute("enduser.id", "cust-b")], error=False))
        if number < 10:
            # a 300-character value is no subgroup value, and it still hides the resource's
            spans.append(root(200 + number, [attribute("enduser.id", "cust-c"),
                                             attribute("cloud.region", "x" * 300),
                                             attribute("prodlens.cohort.tier", 3)], error=True))
    resource = {"attributes": [attribute("service.name", "svc"),
                               attribute("cloud.region", "eu-west")]}
    line = {"resourceSpans": [{"resource": resource,
                               "scopeSpans": [{"scope": {"name": "t"}, "spans": spans}]}]}
    path.write_text(json.dumps(line) + "\n")


def test_overrides_int_values_and_long_values(tmp_path: Path) -> None:
    write_export(tmp_path / "spans.jsonl")
    report = slice_failures([tmp_path], SliceOptions(min_units=10))
    assert (report.units, report.failures) == (90, 50)
    assert [(dict(f.subgroup), f.units, f.failures, f.customers) for f in report.findings] == [
        ({"prodlens.cohort.tier": "3"}, 50, 50, 5),
        ({"cloud.region": "us-east"}, 40, 40, 4),
        # a value too long to be a subgroup value counts as no value: absence is a value
        ({"cloud.region": ABSENT}, 10, 10, 1),
    ]
    affected = {c.customer: dict(c.cohorts) for c in affected_customers([tmp_path]).customers}
    assert affected == {**{f"cust-a{n}": {"prodlens.cohort.tier": ("3",)} for n in range(4)},
                        "cust-c": {"prodlens.cohort.tier": ("3",)}}


def test_an_id_like_attribute_dropped_midway_counts_every_unit_once(tmp_path: Path) -> None:
    # url.path shows its 51st value part-way through: it is projected out of the rows counted
    # so far and of every unit after, and units whose items come in the same order keep
    # landing in the row they share (the engine remembers that row until a drop merges rows).
    spans = []
    for number in range(400):
        tier = "a" if number % 2 else "b"
        path = f"/p/{number}" if number >= 200 else "/p"
        spans.append(root(number, [attribute("prodlens.cohort.tier", tier),
                                   attribute("url.path", path),
                                   attribute("enduser.id", f"cust-{number % 7}")],
                          error=tier == "a" and number % 3 == 0))
    resource = {"attributes": [attribute("service.name", "svc")]}
    line = {"resourceSpans": [{"resource": resource,
                               "scopeSpans": [{"scope": {"name": "t"}, "spans": spans}]}]}
    (tmp_path / "spans.jsonl").write_text(json.dumps(line) + "\n")
    report = slice_failures([tmp_path], SliceOptions(min_units=10, max_open_groups=100))
    assert (report.units, report.failures) == (400, 67)
    assert report.skipped_attributes == ("url.path",)
    assert [(dict(f.subgroup), f.units, f.failures, f.customers) for f in report.findings] == [
        ({"prodlens.cohort.tier": "a"}, 200, 67, 7),
    ]
