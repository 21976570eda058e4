"""`prodlens slice` / `prodlens affected` as a user runs them: subprocesses."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prodlens.analysis.synthetic import SyntheticTraces


def prodlens(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "prodlens", *args], input=None if stdin is None
                          else stdin.decode(), capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_slice_table(planted_dir: Path) -> None:
    result = prodlens("slice", str(planted_dir), env={"COLUMNS": "100"})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress bar when stderr is not a terminal
    lines = result.stdout.splitlines()
    assert lines[0].startswith("failures concentrate in prodlens.cohort.region=eu-west ∧ "
                               "service.version=2.3.0: ")
    assert lines[0].endswith("customers affected")
    header = lines[2]
    assert header.split() == ["subgroup", "units", "failed", "rate", "rest", "lift",
                              "p", "(adj.)", "customers"]
    block = lines[4:lines.index("", 4)]
    # the interaction's parts on their own lines, whole (names are never cut), then its mark
    assert block[0].split()[0] == "prodlens.cohort.region=eu-west"
    assert block[1:3] == ["∧ service.version=2.3.0", "(interaction)"]
    assert "…" not in "\n".join(block)
    # numbers are right-aligned: every row ends its "customers" column where the header does
    end = header.index("customers") + len("customers")
    rows = [row for row in block if len(row) > end - 1 and row[end - 1].isdigit()]
    assert len(rows) >= 3
    assert all(len(row) == end for row in rows)
    assert max(len(line) for line in lines[1:]) <= 100  # the verdict stays one line


def test_slice_table_fits_80_columns_and_shows_tiny_p_values(tmp_path: Path,
                                                              planted_dir: Path) -> None:
    result = prodlens("slice", str(planted_dir), env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    assert max(len(line) for line in result.stdout.splitlines()[1:]) <= 80


def test_slice_json(planted_dir: Path) -> None:
    result = prodlens("slice", str(planted_dir), "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert isinstance(report["units"], int) and isinstance(report["failures"], int)
    top = report["findings"][0]
    assert top["subgroup"] == {"prodlens.cohort.region": "eu-west", "service.version": "2.3.0"}
    assert set(top) >= {"subgroup", "units", "failures", "rate", "rest_rate", "lift", "p_value"}
    assert report["test"].startswith("one-sided Fisher exact test on counts divided by each "
                                     "subgroup's own design effect")
    assert report["failure"] == "root"
    assert top["design_effect"] == 1.0 and top["aliases"] == []


def test_slice_csv_and_flags(planted_dir: Path) -> None:
    result = prodlens("slice", str(planted_dir), "--format", "csv", "--min-units", "100",
                      "--alpha", "0.001", "--top-pairs", "0", "--where", "service.name=api",
                      "--since", "2026-09-21T00:00:00Z", "--until", "2100-01-01")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows and all(" ∧ " not in row["subgroup"] for row in rows)  # no pairs
    assert all(int(row["units"]) >= 100 for row in rows)


def test_affected_csv_lists_exactly_the_failed_customers(planted: SyntheticTraces,
                                                         planted_dir: Path) -> None:
    result = prodlens("affected", str(planted_dir))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {row["customer"] for row in rows} == planted.failed_customers
    assert list(rows[0])[:5] == ["customer", "failures", "requests", "first_failure",
                                 "last_failure"]


def test_stdin_and_malformed_lines(planted: SyntheticTraces, tmp_path: Path) -> None:
    data = b"".join(path.read_bytes() for path in planted.paths) + b"{oops\n"
    result = prodlens("slice", "-", "--format", "json", stdin=data)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["input"]["malformed"] == 1
    assert "skipped 1 malformed line(s):" in result.stderr
    assert "<stdin>:" in result.stderr


def test_pseudonymised_customers_are_flagged(tmp_path: Path) -> None:
    lines = []
    for n in range(40):
        lines.append(json.dumps({"resourceSpans": [{"resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "svc"}}]}, "scopeSpans": [{
                "spans": [{"traceId": f"{n + 1:032x}", "spanId": f"{n + 1:016x}", "kind": 2,
                           "name": "GET /", "startTimeUnixNano": str(10**18 + n),
                           "endTimeUnixNano": str(10**18 + n + 5),
                           "attributes": [{"key": "enduser.pseudo.id",
                                           "value": {"stringValue": f"p-{n % 5}"}}],
                           "status": {"code": 2} if n % 10 == 0 else {}}]}]}]}))
    path = tmp_path / "pseudo.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = prodlens("affected", str(path), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert "prodlens.pseudonym(" in result.stderr
    report = json.loads(result.stdout)
    assert report["pseudonymised"] is True
    assert [c["customer"] for c in report["customers"]] == ["p-0"]
    assert report["customers"][0]["failures"] == 4
    assert report["customers"][0]["requests"] == 8
    assert report["counts"] == "requests (traces)"


def test_errors_exit_2_with_a_clear_message(tmp_path: Path) -> None:
    missing = prodlens("slice", str(tmp_path / "absent.jsonl"))
    assert missing.returncode == 2
    assert "absent.jsonl: no such file or directory" in missing.stderr
    nothing = prodlens("affected")
    assert nothing.returncode == 2 and "no input" in nothing.stderr
    bad_where = prodlens("slice", str(tmp_path), "--where", "novalue")
    assert bad_where.returncode == 2 and "ATTRIBUTE=VALUE" in bad_where.stderr
    bad_time = prodlens("slice", str(tmp_path), "--since", "yesterday")
    assert bad_time.returncode == 2 and "ISO 8601" in bad_time.stderr


@pytest.mark.parametrize("module", ["orjson", "msgspec"])
def test_missing_extra_is_explained(tmp_path: Path, module: str) -> None:
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            "from prodlens.cli import main\n"
            f"sys.exit(main(['slice', {str(tmp_path)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "pip install 'prodlens[analyze]'" in result.stderr


def test_commands_import_without_the_extra() -> None:
    code = ("import sys; sys.modules['orjson'] = None; sys.modules['chdb'] = None\n"
            "import prodlens.analysis.commands\n"
            "from prodlens.cli import build_parser\n"
            "assert 'slice' in build_parser().format_help()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_affected_table_fits_80_columns_and_counts_requests(planted_dir: Path) -> None:
    result = prodlens("affected", str(planted_dir), "--format", "table", env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert lines[0].split() == ["failed", "requests"]  # the header says what is counted
    assert lines[1].split()[:3] == ["customer", "requests", "(traces)"]
    assert "left out to fit 80 columns: first failure, last failure" in " ".join(lines)
    wide = prodlens("affected", str(planted_dir), "--format", "table", env={"COLUMNS": "200"})
    assert "left out" not in wide.stdout and "first failure" in wide.stdout
