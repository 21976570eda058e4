"""docs/alerting.md's configuration works as written.

The Alertmanager block passes ``amtool check-config`` (Debian's prometheus-alertmanager ships
amtool), its inhibit rules are what ``prodlens rules --inhibit-rules`` generates, and the
Prometheus scrape block with the generated rules passes ``promtool check config``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from prodlens.alerting.rules import RuleOptions, inhibit_rules, render_rules

DOC = Path(__file__).resolve().parents[2] / "docs" / "alerting.md"
YAML = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)


def _block(first_line: str) -> str:
    for block in YAML.findall(DOC.read_text()):
        if block.startswith(first_line):
            return str(block)
    raise AssertionError(f"docs/alerting.md has no yaml block starting {first_line!r}")


@pytest.mark.skipif(shutil.which("amtool") is None, reason="amtool is not installed "
                    "(apt-get install prometheus-alertmanager; .ci/run does)")
def test_the_alertmanager_config_passes_amtool(tmp_path: Path) -> None:
    config = tmp_path / "alertmanager.yml"
    config.write_text(_block("# alertmanager.yml"))
    (tmp_path / "token").write_text("s3cret\n")
    config.write_text(config.read_text().replace("/etc/alertmanager/prodlens-notify-token",
                                                 str(tmp_path / "token")))
    result = subprocess.run(["amtool", "check-config", str(config)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_documented_inhibit_rules_are_the_generated_ones() -> None:
    block = _block("# alertmanager.yml")
    documented = block[block.index("inhibit_rules:"):]
    options = RuleOptions(cohorts=("plan", "region"), pairs=(("plan", "region"),))
    expected = "inhibit_rules:\n" + "".join(
        f"  - source_matchers: [{', '.join(repr(m) for m in rule['source_matchers'])}]\n"
        f"    target_matchers: [{', '.join(repr(m) for m in rule['target_matchers'])}]\n"
        f"    equal: [{', '.join(rule['equal'])}]\n"
        for rule in inhibit_rules(options))
    assert documented == expected


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_the_scrape_config_with_the_rules_passes_promtool(tmp_path: Path) -> None:
    rules = tmp_path / "prodlens-rules.yml"
    rules.write_text(render_rules(RuleOptions(cohorts=("plan", "region"),
                                              pairs=(("plan", "region"),))))
    config = tmp_path / "prometheus.yml"
    config.write_text(f"rule_files: [{rules}]\n" + _block("scrape_configs:"))
    result = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
