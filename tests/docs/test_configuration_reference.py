"""docs/configuration.md lists exactly the settings prodlens defines."""

from __future__ import annotations

import re
from pathlib import Path

from prodlens.config import PARAMETERS, Settings, reference_markdown, settings_fields

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_generated_table_matches_the_settings_definition():
    text = DOC.read_text()
    match = re.search(r"<!-- BEGIN GENERATED[^\n]*-->\n(.*?)<!-- END GENERATED -->", text, re.S)
    assert match, "generated block missing from docs/configuration.md"
    assert match.group(1) == reference_markdown(), (
        "docs/configuration.md is stale: regenerate the table with "
        "`python -m prodlens config --markdown`"
    )


def test_every_settings_field_has_a_variable():
    documented = {p.field for p in PARAMETERS}
    assert set(settings_fields()) - documented == {"cohort_sources"}
    assert all(p.env.startswith("PRODLENS_") for p in PARAMETERS)
    assert Settings().max_cohort_values == int(
        next(p.default for p in PARAMETERS if p.field == "max_cohort_values")
    )


def test_every_default_matches_the_settings_dataclass():
    from prodlens.config import load_settings

    assert load_settings({}) == Settings()
