"""``prodlens rules --dashboard``: a Grafana dashboard model that imports.

The JSON schema below holds what Grafana's importer and panel plugins need of a dashboard
model (Grafana's own schema is CUE, not JSON Schema): a title and uid, a numeric schemaVersion,
templating and annotation lists, and panels with unique ids, a known type, a grid position inside
the 24-column grid, and, for data panels, a data source and PromQL targets with unique refIds.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from prodlens.alerting.dashboard import build_dashboard
from prodlens.alerting.rules import RuleOptions
from prodlens.cli import main

_DATASOURCE = {"type": "object", "required": ["type", "uid"],
               "properties": {"type": {"const": "prometheus"}, "uid": {"type": "string"}}}
_GRID = {"type": "object", "required": ["h", "w", "x", "y"], "properties": {
    "h": {"type": "integer", "minimum": 1}, "w": {"type": "integer", "minimum": 1, "maximum": 24},
    "x": {"type": "integer", "minimum": 0, "maximum": 23}, "y": {"type": "integer", "minimum": 0}}}
_TARGET = {"type": "object", "required": ["refId", "expr"], "properties": {
    "refId": {"type": "string", "minLength": 1}, "expr": {"type": "string", "minLength": 1},
    "datasource": _DATASOURCE, "legendFormat": {"type": "string"}}}
SCHEMA = {
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels", "templating", "annotations", "time"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "schemaVersion": {"type": "integer", "minimum": 30},
        "time": {"type": "object", "required": ["from", "to"]},
        "templating": {"type": "object", "required": ["list"], "properties": {"list": {
            "type": "array", "items": {"type": "object", "required": ["name", "type"],
                                       "properties": {"type": {"enum": [
                                           "query", "datasource", "custom", "constant"]}}}}}},
        "annotations": {"type": "object", "required": ["list"], "properties": {"list": {
            "type": "array", "items": {"type": "object",
                                       "required": ["name", "datasource", "enable", "expr"]}}}},
        "panels": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["id", "type", "title", "gridPos"],
            "properties": {"id": {"type": "integer", "minimum": 1},
                           "type": {"enum": ["row", "timeseries", "table", "stat"]},
                           "gridPos": _GRID},
            "if": {"properties": {"type": {"const": "row"}}},
            "then": {"required": ["panels", "collapsed"]},
            "else": {"required": ["datasource", "targets", "fieldConfig"],
                     "properties": {"datasource": _DATASOURCE,
                                    "targets": {"type": "array", "minItems": 1,
                                                "items": _TARGET}}},
        }},
    },
}


def _check(dashboard: dict[str, object]) -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.validate(dashboard, SCHEMA, cls=jsonschema.Draft202012Validator)
    panels = dashboard["panels"]
    assert isinstance(panels, list)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), ids
    for panel in panels:
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        refs = [target["refId"] for target in panel.get("targets", [])]
        assert len(refs) == len(set(refs))


def test_dashboard_matches_the_schema_grafana_needs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "--cohort", "plan", "--cohort", "region", "--pair", "plan,region",
                 "--dashboard"]) == 0
    dashboard = json.loads(capsys.readouterr().out)
    _check(dashboard)
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert titles == [
        "Failing subgroups (firing ProdlensSubgroupFailing alerts)",
        "plan", "Failure ratio by plan (5m)", "Requests per second by plan (5m)",
        "region", "Failure ratio by region (5m)", "Requests per second by region (5m)",
        "plan and region", "Failure ratio by plan and region (5m)",
        "Requests per second by plan and region (5m)",
    ]


def test_alerting_subgroups_are_highlighted() -> None:
    dashboard = build_dashboard(RuleOptions(cohorts=("plan",), short_window="30s",
                                            long_window="2m"))
    ratio = next(p for p in dashboard["panels"] if p["title"] == "Failure ratio by plan (30s)")
    highlighted = {t["refId"]: t["expr"] for t in ratio["targets"]}
    assert highlighted["B"] == (
        'job_prodlens_cohort_plan:prodlens_failure_ratio:rate30s{job=~"$job"} and on (job, '
        'prodlens_cohort_plan) ALERTS{alertname="ProdlensSubgroupFailing", alertstate="firing", '
        'prodlens_cohorts="plan", job=~"$job"}')
    override = ratio["fieldConfig"]["overrides"][0]
    assert override["matcher"] == {"id": "byFrameRefID", "options": "B"}
    assert {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}} in (
        override["properties"])


def test_a_broken_dashboard_fails_the_schema() -> None:
    dashboard = build_dashboard(RuleOptions(cohorts=("plan",)))
    del dashboard["panels"][2]["gridPos"]["w"]  # type: ignore[index]
    with pytest.raises(jsonschema.ValidationError):
        _check(dashboard)
