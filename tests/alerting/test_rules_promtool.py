"""``promtool check rules`` and ``promtool test rules`` on the generated rules.

Input series are ``prodlens_requests_total`` counters as the OpenTelemetry Prometheus exporter
writes them (see test_exporter_names.py), two replicas (``instance``) per subgroup, one sample a
minute. Every scenario runs 120 minutes: clean for 60, the planted failure from 60 to 95, clean
again after. The alert must be silent before, fire exactly for the expected subgroups with the
expected labels and annotations at 90 (both windows over their thresholds), and be gone at 120.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from prodlens.alerting.rules import RuleOptions, render_rules

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus; .ci/run does)")

MINUTES = 120
ONSET, FIX = 60, 95
PLANS = ("free", "enterprise", "trial")
REGIONS = ("eu", "us")

# Per minute and per (plan, region): (requests, failures) before/after and during the failure.
Traffic = Callable[[str, str, bool], tuple[float, float]]


def _series(traffic: Traffic) -> list[dict[str, str]]:
    series = []
    for plan in PLANS:
        for region in REGIONS:
            for error in ("true", "false"):
                totals, value = [], 0.0
                for minute in range(MINUTES + 1):
                    if minute:
                        requests, failures = traffic(plan, region, ONSET < minute <= FIX)
                        value += failures if error == "true" else requests - failures
                    totals.append(value)
                for instance in ("a:9464", "b:9464"):  # two replicas, half the traffic each
                    labels = (f'job="shop", instance="{instance}", error="{error}", '
                              f'prodlens_cohort_plan="{plan}", prodlens_cohort_region="{region}", '
                              'http_route="/checkout", service_name="shop", '
                              'otel_scope_name="prodlens"')
                    series.append({"series": f"prodlens_requests_total{{{labels}}}",
                                   "values": " ".join(f"{v / 2:g}" for v in totals)})
    return series


def _run_promtool(tmp_path: Path, options: RuleOptions, traffic: Traffic,
                  firing: list[dict[str, object]],
                  quiet_at: tuple[int, ...] = ()) -> subprocess.CompletedProcess[str]:
    rules = tmp_path / "rules.yml"
    rules.write_text(render_rules(options))
    check = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True,
                           text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": _series(traffic),
            "alert_rule_test": [
                *({"eval_time": f"{minute}m", "alertname": "ProdlensSubgroupFailing",
                   "exp_alerts": []} for minute in (ONSET - 1, *quiet_at)),
                {"eval_time": "90m", "alertname": "ProdlensSubgroupFailing",
                 "exp_alerts": firing},
                {"eval_time": f"{MINUTES}m", "alertname": "ProdlensSubgroupFailing",
                 "exp_alerts": []},
            ],
        }],
    }
    path = tmp_path / "test.yml"
    path.write_text(json.dumps(test))  # JSON is YAML
    return subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True,
                          text=True, timeout=120, check=False)


def _expect(cohorts: dict[str, str], ratio: str, rest: str, raw: tuple[str, str]
            ) -> dict[str, object]:
    labels = {"job": "shop", "severity": "page", "prodlens_cohorts": ",".join(cohorts)}
    labels.update({f"prodlens_cohort_{name}": value for name, value in cohorts.items()})
    subgroup = " ∧ ".join(f"prodlens.cohort.{name}={value}" for name, value in cohorts.items())
    return {"exp_labels": labels, "exp_annotations": {
        "subgroup": subgroup, "window": "1h", "ratio": raw[0], "rest_ratio": raw[1],
        "summary": f"{subgroup} fails {ratio} of its requests to shop over 5m, the rest of "
                   f"the service {rest}"}}


OPTIONS = RuleOptions(cohorts=("plan", "region"), pairs=(("plan", "region"),))


def _passes(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_failing_pair_fires_for_the_pair_and_the_cohorts_it_drags_up(tmp_path: Path) -> None:
    # enterprise in eu fails half its requests; free in eu has a 1.6% background failure rate
    # (below --min-ratio: no alert before the onset).
    def traffic(plan: str, region: str, failing: bool) -> tuple[float, float]:
        if plan == "trial":
            return 6.0, 0.0
        if (plan, region) == ("enterprise", "eu") and failing:
            return 60.0, 30.0
        return 60.0, 0.96 if (plan, region) == ("free", "eu") else 0.0

    # At 90m: the pair 30/60 = 50% vs 0.96/(60*3 + 12) = 0.5%; enterprise 30/120 = 25% vs
    # 0.96/132 = 0.7273%; eu 30.96/126 = 24.57% vs 0/126 = 0%. trial is quiet and clean.
    firing = [
        _expect({"plan": "enterprise", "region": "eu"}, "50%", "0.5%", ("0.5", "0.005")),
        _expect({"plan": "enterprise"}, "25%", "0.7273%", ("0.25", "0.00727273")),
        _expect({"region": "eu"}, "24.57%", "0%", ("0.245714", "0")),
    ]
    # At 62m the short window is over every threshold (20%) but the long one is not yet (the pair:
    # 60/3600 = 1.7% < 2%): multiwindow, nothing fires.
    _passes(_run_promtool(tmp_path, OPTIONS, traffic, firing, quiet_at=(62,)))


def test_failing_single_cohort_fires_for_it_alone(tmp_path: Path) -> None:
    # enterprise fails 30% in both regions: neither region nor any pair stands out.
    def traffic(plan: str, region: str, failing: bool) -> tuple[float, float]:
        if plan == "trial":
            return 6.0, 0.0
        if plan == "enterprise" and failing:
            return 60.0, 18.0
        return 60.0, 0.6 if plan == "free" else 0.0

    # enterprise 36/120 = 30% vs 1.2/132 = 0.9091%.
    firing = [_expect({"plan": "enterprise"}, "30%", "0.9091%", ("0.3", "0.00909091"))]
    _passes(_run_promtool(tmp_path, OPTIONS, traffic, firing))


def _quiet_trial(plan: str, region: str, failing: bool) -> tuple[float, float]:
    # trial: 1.2 requests a minute in each region (0.04 req/s as a cohort, 0.02 per pair),
    # every one failing while the failure lasts; the rest is clean.
    if plan == "trial":
        return 1.2, 1.2 if failing else 0.0
    return 60.0, 0.0


def test_quiet_subgroup_below_min_rate_does_not_fire(tmp_path: Path) -> None:
    _passes(_run_promtool(tmp_path, OPTIONS, _quiet_trial, []))


def test_the_same_quiet_subgroup_fires_once_min_rate_allows_it(tmp_path: Path) -> None:
    # The control for the test above: only --min-rate kept trial quiet.
    options = RuleOptions(cohorts=("plan", "region"), pairs=(("plan", "region"),),
                          min_rate=0.01)
    # A trial pair's rest holds the other trial pair: 1.2 / (4 * 60 + 1.2) = 0.4975%.
    firing = [
        _expect({"plan": "trial", "region": "eu"}, "100%", "0.4975%", ("1", "0.00497512")),
        _expect({"plan": "trial", "region": "us"}, "100%", "0.4975%", ("1", "0.00497512")),
        _expect({"plan": "trial"}, "100%", "0%", ("1", "0")),
    ]
    _passes(_run_promtool(tmp_path, options, _quiet_trial, firing))


def test_clean_traffic_never_fires(tmp_path: Path) -> None:
    # The same low failure ratio everywhere, before, during and after "the failure".
    def traffic(plan: str, region: str, failing: bool) -> tuple[float, float]:
        return (6.0, 0.06) if plan == "trial" else (60.0, 0.6)

    _passes(_run_promtool(tmp_path, OPTIONS, traffic, []))


def test_a_wrong_expectation_fails_promtool(tmp_path: Path) -> None:
    # Guards the harness itself: promtool really compares what fires with what is expected.
    def traffic(plan: str, region: str, failing: bool) -> tuple[float, float]:
        return (6.0, 0.06) if plan == "trial" else (60.0, 0.6)

    result = _run_promtool(tmp_path, OPTIONS, traffic, [_expect({"plan": "free"}, "1%", "1%", ("0.01", "0.01"))])
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr
