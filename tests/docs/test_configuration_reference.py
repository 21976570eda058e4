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


def _documented_defaults() -> dict[str, str]:
    """Variable -> the Default cell of docs/configuration.md's table, as a user reads it."""
    text = DOC.read_text()
    defaults: dict[str, str] = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"`PRODLENS_[A-Z_]+`", cells[0]):
            default = cells[2]
            defaults[cells[0].strip("`")] = "" if default == "(empty)" else default.strip("`")
    return defaults


def test_every_documented_default_is_the_applied_default():
    """The Default column of the docs, parsed as the variable would be, is what prodlens applies
    when the variable is unset (change a default in Settings and this fails until the docs are
    regenerated)."""
    documented = _documented_defaults()
    applied = Settings()
    assert set(documented) == {p.env for p in PARAMETERS}
    for param in PARAMETERS:
        assert param.parse(documented[param.env]) == getattr(applied, param.field), param.env
    from prodlens.config import load_settings

    assert load_settings({}) == applied


def test_readme_table_is_generated_from_the_same_table():
    from prodlens.config import short_reference_markdown

    readme = (DOC.parents[1] / "README.md").read_text()
    match = re.search(r"<!-- BEGIN GENERATED: prodlens.config.short_reference_markdown\(\) -->\n"
                      r"(.*?)<!-- END GENERATED -->", readme, re.S)
    assert match, "generated block missing from README.md's Configuration section"
    assert match.group(1) == short_reference_markdown()
