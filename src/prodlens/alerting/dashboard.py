"""A Grafana dashboard over the recording rules of :mod:`prodlens.alerting.rules`.

One row per cohort (and per pair): the failure ratio of each subgroup over the short window,
with the subgroups whose ``ProdlensSubgroupFailing`` alert is firing drawn again, thick and red;
and the request rate of each subgroup. A table on top lists the firing alerts, and the alerts
are also annotations on every graph. Variables pick the Prometheus data source and the ``job``.

Example::

    prodlens rules --cohort plan --pair plan,region --dashboard > prodlens-dashboard.json
    # Grafana: Dashboards > New > Import > upload prodlens-dashboard.json
"""

from __future__ import annotations

import json
from typing import Final

from prodlens.alerting.rules import ALERT_NAME, COHORTS_LABEL, RuleOptions, Subgroup

__all__ = ["DASHBOARD_UID", "build_dashboard", "render_dashboard"]

DASHBOARD_UID: Final = "prodlens-subgroups"
#: The dashboard JSON model version written (Grafana 10/11 migrate older models on import).
SCHEMA_VERSION: Final = 39
_DATASOURCE: Final = {"type": "prometheus", "uid": "${datasource}"}
_WIDTH: Final = 24
_HEIGHT: Final = 8


def _firing(subgroup: Subgroup) -> str:
    return (f'ALERTS{{alertname="{ALERT_NAME}", alertstate="firing", '
            f'{COHORTS_LABEL}="{",".join(subgroup.cohorts)}", job=~"$job"}}')


def _legend(subgroup: Subgroup) -> str:
    return " ∧ ".join(f"{name}={{{{{label}}}}}"
                      for name, label in zip(subgroup.cohorts, subgroup.labels, strict=True))


def _timeseries(panel_id: int, title: str, unit: str, x: int, y: int,
                targets: list[dict[str, object]], highlight: str | None) -> dict[str, object]:
    overrides: list[dict[str, object]] = []
    if highlight is not None:
        overrides.append({
            "matcher": {"id": "byFrameRefID", "options": highlight},
            "properties": [
                {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
                {"id": "custom.lineWidth", "value": 4},
            ],
        })
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": title,
        "datasource": _DATASOURCE,
        "gridPos": {"h": _HEIGHT, "w": _WIDTH // 2, "x": x, "y": y},
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, "min": 0,
                                     "custom": {"drawStyle": "line", "lineWidth": 1}},
                        "overrides": overrides},
        "options": {"legend": {"displayMode": "table", "placement": "bottom",
                               "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
    }


def build_dashboard(options: RuleOptions) -> dict[str, object]:
    """The dashboard model (a JSON object Grafana imports)."""
    window = options.short_window
    panels: list[dict[str, object]] = [{
        "id": 1,
        "type": "table",
        "title": "Failing subgroups (firing ProdlensSubgroupFailing alerts)",
        "datasource": _DATASOURCE,
        "gridPos": {"h": 6, "w": _WIDTH, "x": 0, "y": 0},
        "targets": [{"refId": "A", "datasource": _DATASOURCE, "instant": True,
                     "format": "table",
                     "expr": f'ALERTS{{alertname="{ALERT_NAME}", alertstate="firing", '
                             'job=~"$job"}'}],
        "options": {"showHeader": True},
        "fieldConfig": {"defaults": {}, "overrides": []},
    }]
    y = 6
    next_id = 2
    for subgroup in options.subgroups:
        level = subgroup.level
        name = " and ".join(subgroup.cohorts)
        by = ", ".join(("job", *subgroup.labels))
        panels.append({"id": next_id, "type": "row", "title": name, "collapsed": False,
                       "gridPos": {"h": 1, "w": _WIDTH, "x": 0, "y": y}, "panels": []})
        y += 1
        ratio = f'{level}:prodlens_failure_ratio:rate{window}{{job=~"$job"}}'
        panels.append(_timeseries(next_id + 1, f"Failure ratio by {name} ({window})",
                                  "percentunit", 0, y, [
            {"refId": "A", "datasource": _DATASOURCE, "expr": ratio,
             "legendFormat": _legend(subgroup)},
            {"refId": "B", "datasource": _DATASOURCE,
             "expr": f"{ratio} and on ({by}) {_firing(subgroup)}",
             "legendFormat": f"ALERT {_legend(subgroup)}"},
        ], highlight="B"))
        panels.append(_timeseries(next_id + 2, f"Requests per second by {name} ({window})",
                                  "reqps", _WIDTH // 2, y, [
            {"refId": "A", "datasource": _DATASOURCE,
             "expr": f'{level}:prodlens_requests:rate{window}{{job=~"$job"}}',
             "legendFormat": _legend(subgroup)},
        ], highlight=None))
        y += _HEIGHT
        next_id += 3
    return {
        "uid": DASHBOARD_UID,
        "title": "prodlens: failing subgroups",
        "description": "Failure ratio and traffic by cohort from prodlens's recording rules "
                       "(prodlens rules); red: subgroups whose ProdlensSubgroupFailing alert "
                       "is firing.",
        "tags": ["prodlens"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0},
            {"name": "job", "label": "job", "type": "query", "datasource": _DATASOURCE,
             "query": {"query": "label_values(job:prodlens_requests:rate"
                                f"{window}, job)", "refId": "job"},
             "definition": f"label_values(job:prodlens_requests:rate{window}, job)",
             "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
             "current": {}, "hide": 0},
        ]},
        "annotations": {"list": [{
            "name": ALERT_NAME, "datasource": _DATASOURCE, "enable": True,
            "iconColor": "red", "step": "1m",
            "expr": f'ALERTS{{alertname="{ALERT_NAME}", alertstate="firing", job=~"$job"}}',
            "titleFormat": ALERT_NAME, "textFormat": "{{job}} {{prodlens_cohorts}}",
        }]},
        "panels": panels,
    }


def render_dashboard(options: RuleOptions) -> str:
    """The dashboard as indented JSON (ends with a newline)."""
    return json.dumps(build_dashboard(options), indent=2, ensure_ascii=False) + "\n"
