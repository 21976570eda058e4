"""The ``prodlens watch`` and ``prodlens incidents`` commands, through ``prodlens.cli.main``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from span_writer import SpanWriter, planted

from prodlens.cli import main


def _planted_spans(directory: Path) -> None:
    writer = SpanWriter(directory, seed=21)
    try:
        writer.write(0, 60, 60, planted("enterprise", "ap-south", 0.0))
        writer.write(60, 150, 60, planted("enterprise", "ap-south", 0.4))
    finally:
        writer.close()


def test_once_dry_run_prints_the_incident_and_what_would_be_sent(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _planted_spans(tmp_path / "spans")
    ledger = tmp_path / "ledger.sqlite3"
    status = main(["watch", str(tmp_path / "spans"), "--once", "--from-start", "--dry-run",
                   "--window", "60s", "--every", "5s", "--ledger", str(ledger),
                   "--notify", "http://127.0.0.1:9/hook",
                   "--notify-customers", "http://127.0.0.1:9/customers"])
    out = capsys.readouterr().out
    assert status == 0
    assert "OPEN [FIRING] prodlens.cohort.plan=enterprise ∧ prodlens.cohort.region=ap-south" in out
    would = [line for line in out.splitlines() if line.startswith("dry run: would POST to")]
    assert would[0].startswith("dry run: would POST to http://127.0.0.1:9/hook: ")
    assert json.loads(would[0].split(": ", 2)[2])["status"] == "firing"
    assert any("http://127.0.0.1:9/customers" in line for line in would)
    assert main(["incidents", "--ledger", str(ledger)]) == 0
    listing = capsys.readouterr().out
    assert listing.startswith("incidents: 1 (1 firing)\n  [FIRING] prodlens.cohort.plan=")
    assert "pending deliveries: 0" in listing
    assert main(["watch", "--status", "--ledger", str(ledger)]) == 0
    assert capsys.readouterr().out == listing


def test_bad_arguments_are_clear_errors(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["watch", "--ledger", str(tmp_path / "l.sqlite3")]) == 2
    assert "give files/directories to follow, or --clickhouse URL" in capsys.readouterr().err
    assert main(["watch", str(tmp_path), "--notify", "ftp://x",
                 "--ledger", str(tmp_path / "l.sqlite3")]) == 2
    assert "--notify='ftp://x' (command line) is not valid" in capsys.readouterr().err
    assert main(["watch", "--clickhouse", "http://127.0.0.1:9/", "--slower-than", "2s",
                 "--ledger", str(tmp_path / "l.sqlite3")]) == 2
    assert "--slower-than works on files only" in capsys.readouterr().err
    assert main(["incidents", "--ledger", str(tmp_path / "missing.sqlite3")]) == 2
    assert "no such ledger" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["watch", str(tmp_path), "--window", "soon"])
    assert "expected a positive duration" in capsys.readouterr().err
