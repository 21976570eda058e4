"""Synthetic exports shared by the analysis tests (generated once per session, real SDK)."""

from __future__ import annotations

from pathlib import Path

import pytest

from prodlens.analysis.synthetic import SyntheticTraces, generate


@pytest.fixture(scope="session")
def planted(tmp_path_factory: pytest.TempPathFactory) -> SyntheticTraces:
    """3,000 requests with eu-west customers on api 2.3.0 failing 20% (0.5% elsewhere)."""
    return generate(tmp_path_factory.mktemp("planted"), traces=3000, seed=7)


@pytest.fixture(scope="session")
def planted_dir(planted: SyntheticTraces) -> Path:
    return planted.paths[0].parent
