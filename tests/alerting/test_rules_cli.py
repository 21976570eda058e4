"""``prodlens rules``: options, defaults from the configuration, formats, errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from prodlens.alerting.rules import RuleOptions, RulesError, render_rules, subgroup_of
from prodlens.cli import main

PROMTOOL = shutil.which("promtool")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PRODLENS_"))}


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (.ci/run installs it)")
def test_the_documented_command_passes_promtool_check(tmp_path: Path) -> None:
    # `prodlens rules > rules.yml && promtool check rules rules.yml`, cohorts from the config.
    env = {**_env(), "PRODLENS_COHORT_PLAN_FROM": "header:x-plan",
           "PRODLENS_COHORT_REGION_FROM": "header:x-region"}
    rules = tmp_path / "rules.yml"
    with rules.open("w") as out:
        subprocess.run([sys.executable, "-m", "prodlens", "rules", "--pair", "plan,region"], stdout=out, env=env,
                       check=True, timeout=60)
    check = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True,
                           text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 27 rules found" in check.stdout  # (3 + 3 * 3) * 2 windows + 3 alerts


def test_cohorts_default_to_the_configured_ones(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PRODLENS_COHORT_REGION_FROM", "header:x-region")
    monkeypatch.setenv("PRODLENS_COHORT_PLAN_FROM", "header:x-plan")
    assert main(["rules"]) == 0
    out = capsys.readouterr().out
    assert out == render_rules(RuleOptions(cohorts=("plan", "region")))
    assert out.count('- alert: "ProdlensSubgroupFailing"') == 2


def test_windows_thresholds_and_severity_are_written(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "--cohort", "plan", "--short-window", "30s", "--long-window", "2m",
                 "--factor", "3", "--min-ratio", "5%", "--min-rate", "0.5",
                 "--severity", "ticket", "--interval", "10s"]) == 0
    out = capsys.readouterr().out
    assert textwrap.dedent("""\
        expr: |-
          job_prodlens_cohort_plan:prodlens_failure_ratio:rate30s >= 0.05
          and job_prodlens_cohort_plan:prodlens_failure_ratio:rate30s >= 3 * job_prodlens_cohort_plan:prodlens_rest_failure_ratio:rate30s
          and job_prodlens_cohort_plan:prodlens_requests:rate30s >= 0.5
          and job_prodlens_cohort_plan:prodlens_failure_ratio:rate2m >= 0.05
          and job_prodlens_cohort_plan:prodlens_failure_ratio:rate2m >= 3 * job_prodlens_cohort_plan:prodlens_rest_failure_ratio:rate2m
          and job_prodlens_cohort_plan:prodlens_requests:rate2m >= 0.5
        labels:
          severity: "ticket"
          prodlens_cohorts: "plan"
        """) in textwrap.dedent(out[out.index("        expr: |-\n          job_prodlens_cohort_plan:prodlens_failure_ratio:rate30s >="):])
    assert '    interval: "10s"\n' in out


def test_prometheus_operator_wraps_the_same_group(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "--cohort", "plan", "--pair", "plan,region"]) == 0
    plain = capsys.readouterr().out
    assert main(["rules", "--cohort", "plan", "--pair", "plan,region",
                 "--format", "prometheus-operator", "--namespace", "shop"]) == 0
    wrapped = capsys.readouterr().out
    head, _, spec = wrapped.partition("spec:\n")
    assert head == textwrap.dedent("""\
        apiVersion: "monitoring.coreos.com/v1"
        kind: "PrometheusRule"
        metadata:
          name: "prodlens-subgroups"
          namespace: "shop"
          labels:
            app.kubernetes.io/name: "prodlens"
        """)
    assert textwrap.dedent(spec) == plain


@pytest.mark.parametrize(("argv", "message"), [
    (["rules"], "no cohorts to alert on: give --cohort NAME"),
    (["rules", "--cohort", "Plan"], "cohort 'Plan' is not a cohort name"),
    (["rules", "--pair", "plan"], "--pair 'plan': expected two cohort names"),
    (["rules", "--pair", "plan,plan"], "pair 'plan,plan': expected two different cohorts"),
    (["rules", "--cohort", "plan", "--short-window", "5 minutes"],
     "--short-window '5 minutes' is not a Prometheus duration"),
    (["rules", "--cohort", "plan", "--short-window", "1h", "--long-window", "5m"],
     "--short-window 1h must be shorter than --long-window 5m"),
    (["rules", "--cohort", "plan", "--min-ratio", "0"], "--min-ratio 0.0: expected a ratio"),
    (["rules", "--cohort", "plan", "--factor", "0.5"], "--factor 0.5: expected a number >= 1"),
])
def test_bad_options_exit_2_naming_the_option(argv: list[str], message: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("prodlens rules: ")
    assert message in captured.err


def test_labels_map_back_to_the_subgroup() -> None:
    labels = {"job": "shop", "prodlens_cohort_app_version": "2.1",
              "prodlens_cohort_plan": "enterprise", "severity": "page"}
    assert subgroup_of(labels, ["app.version", "plan"]) == {
        "prodlens.cohort.app.version": "2.1", "prodlens.cohort.plan": "enterprise"}
    # Without the cohort list, an underscore stays an underscore.
    assert subgroup_of(labels, []) == {
        "prodlens.cohort.app_version": "2.1", "prodlens.cohort.plan": "enterprise"}
    with pytest.raises(RulesError):
        RuleOptions(cohorts=("plan",), short_window="0s")
